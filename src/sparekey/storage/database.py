"""The database handle: one engine, read and write transactions, and migrations.

SQLite runs in WAL mode so readers never wait for the writer. Write transactions on SQLite begin
with ``BEGIN IMMEDIATE`` so that two writers queue on the busy timeout instead of failing when one
upgrades a read lock; reads run statement by statement and take no lock. PostgreSQL uses its default
READ COMMITTED, where a conditional UPDATE re-checks its WHERE clause after waiting for a row lock.

Three ways in: :meth:`Database.read` (nothing committed), :meth:`Database.write` (one transaction),
and :meth:`Database.unit` for the hot path: read first, then :meth:`Unit.write` only if there is
something to write, on the same connection.

Schema changes go through :meth:`Database.upgrade` (rolling upgrades, docs/decisions/0017): every
migration from 0014 on is an *expand* migration (additive; code of the release before keeps
working) or a *contract* migration (drops, renames, tightens), and the database records the oldest
code that may run against it (``schema_compat``). :meth:`Database.schema_status` compares the
database with this code's migrations, so a node can tell whether it may start, must migrate first,
or must be upgraded. One migrator runs at a time, on every node: PostgreSQL takes an advisory
lock, SQLite its one write lock.
"""

from __future__ import annotations

import functools
import logging
import os
import sqlite3
import threading
import time
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, cast

from alembic import command
from alembic.config import Config
from alembic.script import ScriptDirectory
from alembic.util import CommandError
from sqlalchemy import Connection, Engine, create_engine, event, inspect, select
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError, DisconnectionError
from sqlalchemy.pool import ConnectionPoolEntry

from sparekey import __version__
from sparekey.storage.prepared import Unit
from sparekey.storage.tables import schema_compat
from sparekey.storage.writelock import WriteLock

log = logging.getLogger(__name__)

__all__ = [
    "COMPAT_SINCE",
    "Database",
    "Migration",
    "MigrationKind",
    "SchemaError",
    "SchemaStatus",
    "SchemaUpgrade",
    "Unit",
]

MIGRATIONS = Path(__file__).parent / "migrations"
SQLITE_CACHE_MB = 1024  # SQLite's page caches of one process together, at most (soft)
COMPAT_SINCE = "0014"
"""The first revision whose database records the oldest code it supports (and the first whose
migrations declare their kind). Earlier migrations were all applied on start, as expand ones are."""

# The key of PostgreSQL's advisory lock that migrators take (any 64-bit number of our own).
_MIGRATION_LOCK = 0x5350_4B4D_4947  # "SPKMIG"

MigrationKind = Literal["expand", "contract"]


class SchemaError(Exception):
    """This code and the database's schema cannot work together as things stand; the message is
    one line saying what to do (migrate, run the contract migrations, or upgrade this node)."""


@dataclass(frozen=True, kw_only=True)
class Migration:
    revision: str
    kind: MigrationKind
    title: str


@dataclass(frozen=True, kw_only=True)
class SchemaStatus:
    """Where the database's schema stands against the migrations this code carries."""

    revision: str | None  # the database's; None: no schema yet
    chain: tuple[Migration, ...]  # this code's migrations, oldest first
    oldest_code_revision: str | None  # the database's record (None before 0014)
    oldest_code_release: str | None

    @property
    def head(self) -> str:
        return self.chain[-1].revision

    @property
    def revisions(self) -> tuple[str, ...]:
        return tuple(m.revision for m in self.chain)

    @property
    def ahead(self) -> bool:
        """The database was migrated by newer code: its revision is not one of ours."""
        return self.revision is not None and self.revision not in self.revisions

    @property
    def required(self) -> str:
        """The oldest revision this code runs against: its head, less the contract migrations
        that end its chain (a release runs both before and after its own contract migrations)."""
        for migration in reversed(self.chain):
            if migration.kind == "expand":
                return migration.revision
        return self.chain[0].revision

    @property
    def behind(self) -> bool:
        """The database lacks migrations this code needs (or has no schema at all)."""
        if self.revision is None:
            return True
        if self.ahead:
            return False
        return self.revisions.index(self.revision) < self.revisions.index(self.required)

    @property
    def pending(self) -> tuple[Migration, ...]:
        """This code's migrations the database has not had, in order (none if it is ahead)."""
        if self.revision is None:
            return self.chain
        if self.ahead:
            return ()
        return self.chain[self.revisions.index(self.revision) + 1 :]

    @property
    def pending_contracts(self) -> tuple[Migration, ...]:
        return tuple(m for m in self.pending if m.kind == "contract")

    @property
    def supports_this_code(self) -> bool:
        """Whether this code may run against the database as it is (perhaps after migrating)."""
        if not self.ahead:
            return True
        return self.oldest_code_revision is not None and self.oldest_code_revision in self.revisions

    def upgrade_target(self, *, contract: bool) -> str | None:
        """The revision an upgrade brings the database to: the head with ``contract`` (and for a
        database without a schema, where no older node can be running), otherwise the last
        revision before the first pending contract migration. None: nothing to do."""
        if not self.pending:
            return None
        if contract or self.revision is None:
            return self.head
        target = self.revision
        for migration in self.pending:
            if migration.kind == "contract":
                break
            target = migration.revision
        return None if target == self.revision else target

    def refusal(self) -> str | None:
        """Why this code must not run against the database (after migrating if it is behind),
        in one line; None if it may."""
        if self.supports_this_code:
            return None
        if self.oldest_code_revision is None:
            return (
                f"the database schema is at revision {self.revision}, which Sparekey "
                f"{__version__} (migrations up to {self.head}) does not know, and it records no "
                "oldest supported release; run the Sparekey release that migrated it"
            )
        return (
            f"the database schema (revision {self.revision}) needs Sparekey "
            f"{self.oldest_code_release} or later (code with migration "
            f"{self.oldest_code_revision}); this node runs Sparekey {__version__} (migrations up "
            f"to {self.head}): upgrade it to {self.oldest_code_release} or later"
        )

    def blocked_by(self) -> Migration | None:
        """The pending contract migration that stands before a migration this code needs."""
        for migration in self.pending:
            if migration.kind == "contract":
                return migration
            if migration.revision == self.required:
                return None
        return None

    def describe(self) -> str:
        """One line: where the database stands for this code."""
        if self.revision is None:
            return f"the database has no Sparekey schema yet (this release needs {self.required})"
        if self.ahead:
            return (
                f"the database schema (revision {self.revision}) is newer than Sparekey "
                f"{__version__} knows (migrations up to {self.head}) and still supports it "
                f"(it supports code from migration {self.oldest_code_revision}, Sparekey "
                f"{self.oldest_code_release}, on)"
            )
        if self.behind:
            return (
                f"the database schema is at revision {self.revision}; Sparekey {__version__} "
                f"needs {self.required}"
            )
        return f"the database schema is at revision {self.revision} (this release: {self.head})"

    def contracts_note(self) -> str | None:
        """A reminder that contract migrations wait for the operator, or None."""
        contracts = self.pending_contracts
        if not contracts or self.behind:
            return None
        names = ", ".join(m.revision for m in contracts)
        which = "migration" if len(contracts) == 1 else "migrations"
        return (
            f"contract {which} {names} pending: once every node runs Sparekey {__version__} or "
            "later, run `sparekey migrate --contract`"
        )


@dataclass(frozen=True, kw_only=True)
class SchemaUpgrade:
    before: SchemaStatus
    after: SchemaStatus
    applied: tuple[Migration, ...]


class Database:
    def __init__(
        self,
        url: str,
        *,
        pool_size: int = 20,
        migrations: Path = MIGRATIONS,
        sqlite_cache_mb: int = SQLITE_CACHE_MB,
    ) -> None:
        self.url = make_url(url)
        self.migrations = migrations
        self.is_sqlite = self.url.get_backend_name() == "sqlite"
        self.write_lock: WriteLock | None = None
        if self.is_sqlite:
            if self.url.database and self.url.database != ":memory:":
                Path(self.url.database).parent.mkdir(parents=True, exist_ok=True)
                self.write_lock = WriteLock(
                    Path(self.url.database + "-writer"), timeout=SQLITE_BUSY_MS / 1000
                )
            # Last in, first out: the connection used last has the warmest page cache;
            # verification on SQLite runs one request at a time in the event loop, so it keeps
            # to one connection instead of cycling through twenty cold ones. The cache may grow
            # to the whole budget on one connection; SQLite's soft heap limit (process-wide)
            # holds all of them together to about that much.
            self.engine: Engine = self._sqlite_engine(pool_size, sqlite_cache_mb)
            self._sqlite_cache_mb = sqlite_cache_mb
        else:
            self.engine = create_engine(self.url, pool_size=pool_size, max_overflow=20)
            event.listen(self.engine, "checkin", _mark_checkin)
            event.listen(self.engine, "checkout", _check_liveness)
        self._loop_thread: int | None = None
        self._loop_engine: Engine = self.engine

    def _sqlite_engine(self, pool_size: int, cache_mb: int) -> Engine:
        engine = create_engine(
            self.url,
            pool_size=pool_size,
            max_overflow=20,
            pool_pre_ping=False,
            pool_use_lifo=True,
        )
        event.listen(engine, "connect", functools.partial(_sqlite_on_connect, cache_mb))
        event.listen(engine, "begin", _sqlite_on_begin)
        return engine

    def serve_from_this_thread(self) -> None:
        """Give the calling thread (the event loop of ``sparekey serve``) a pool of its own.

        SQLite discards a connection's whole page cache whenever it starts a transaction and
        finds that another connection has committed since its last one. From the shared pool
        the loop would take whichever connection another thread (the checkpointer, a request
        served in a worker thread) handed back last, whose cache is stale; with a pool of its
        own it keeps to one connection, and with everything it writes itself (verifications,
        the audit log's sealing) committed on that connection, its cache stays warm. The other
        threads share :attr:`engine` as before. No effect on PostgreSQL, which has no page cache
        per connection, nor on an in-memory SQLite database, which a second pool would not share.
        """
        if self.write_lock is None or self._loop_thread is not None:  # PostgreSQL, :memory:
            return
        self._loop_engine = self._sqlite_engine(2, self._sqlite_cache_mb)
        self._loop_thread = threading.get_ident()

    def _engine(self) -> Engine:
        """The calling thread's engine: the loop's own (see :meth:`serve_from_this_thread`)."""
        if self._loop_thread is not None and threading.get_ident() == self._loop_thread:
            return self._loop_engine
        return self.engine

    @contextmanager
    def read(self) -> Iterator[Connection]:
        """A read-only unit of work; nothing it does is committed."""
        with self._engine().connect() as conn:
            yield conn
            conn.rollback()

    @contextmanager
    def snapshot(self) -> Iterator[Connection]:
        """A read-only unit whose statements all see the database as of its first one, whatever
        commits meanwhile: a deferred transaction on SQLite (whose reads otherwise take a
        snapshot per statement), REPEATABLE READ on PostgreSQL (READ COMMITTED, its default,
        does the same). For reads that must agree with each other, such as checking the audit
        chain against its recorded end while the sealer goes on."""
        with self._engine().connect() as conn:
            if self.is_sqlite:
                conn = conn.execution_options(sparekey_snapshot=True)
            else:
                conn = conn.execution_options(isolation_level="REPEATABLE READ")
            with conn.begin() as transaction:
                yield conn
                transaction.rollback()

    @contextmanager
    def write(self) -> Iterator[Connection]:
        """A transaction that commits when the block ends and rolls back if it raises."""
        with self._engine().connect() as conn, self._writer():
            conn = conn.execution_options(sparekey_write=True)
            with conn.begin():
                yield conn

    def _writer(self) -> AbstractContextManager[None]:
        """SQLite's writers queue on :attr:`write_lock` (see :mod:`sparekey.storage.writelock`)."""
        return self.write_lock.held() if self.write_lock is not None else nullcontext()

    @contextmanager
    def unit(self) -> Iterator[Unit]:
        """Read, then perhaps write, on one pooled connection with prepared statements (see
        :mod:`sparekey.storage.prepared`); commits only if :meth:`Unit.write` ran."""
        engine = self._engine()
        connection = engine.raw_connection()
        unit = Unit(connection, engine.dialect, write_lock=self.write_lock)
        dbapi_error: type[Exception] = engine.dialect.loaded_dbapi.Error
        try:
            try:
                yield unit
            except BaseException:
                unit.finish(commit=False)
                raise
            else:
                unit.finish(commit=True)
        except dbapi_error as exc:
            # The driver's own error, as SQLAlchemy would have raised it (OperationalError for a
            # lost server or a busy file), so that callers handle both paths alike.
            if engine.dialect.is_disconnect(cast(Any, exc), connection.dbapi_connection, None):
                connection.invalidate(exc)
            raise DBAPIError.instance(None, None, exc, dbapi_error) from exc
        finally:
            connection.close()

    # -- the schema -------------------------------------------------------------------------------

    def schema_status(self) -> SchemaStatus:
        """The database's revision and compatibility record against this code's migrations."""
        with self.read() as conn:
            return self._status(conn)

    def upgrade(self, *, contract: bool = False) -> SchemaUpgrade:
        """Apply this code's pending expand migrations (all pending migrations with ``contract``,
        or on a database without a schema), one migrator at a time across every node.

        A database migrated by newer code is left alone. Raises :class:`SchemaError` if a pending
        contract migration stands before a migration this code needs.
        """
        with self._migrating() as conn:
            before = self._status(conn)
            target = before.upgrade_target(contract=contract)
            if not contract and before.behind and before.revision is not None:
                blocker = before.blocked_by()
                if blocker is not None:
                    raise SchemaError(
                        f"the database schema is at revision {before.revision} and Sparekey "
                        f"{__version__} needs {before.required}, after contract migration "
                        f"{blocker.revision} ({blocker.title}); once no node runs a release "
                        "older than the one that brought it, run `sparekey migrate --contract`"
                    )
            if target is not None:
                self._alembic(conn, "upgrade", target)
            after = self._status(conn)
        applied = before.pending[: len(before.pending) - len(after.pending)]
        return SchemaUpgrade(before=before, after=after, applied=applied)

    def migrate(self, revision: str = "head") -> None:
        """Upgrade to ``revision`` whatever the kinds of migration (a new database, tests)."""
        with self._migrating() as conn:
            self._alembic(conn, "upgrade", revision)

    def downgrade(self, revision: str) -> None:
        with self._migrating() as conn:
            self._alembic(conn, "downgrade", revision)

    def current_revision(self) -> str | None:
        with self.read() as conn:
            return _revision(conn)

    def chain(self) -> tuple[Migration, ...]:
        """This code's migrations, oldest first, each with its kind."""
        return _chain(str(self.migrations))

    def head_revision(self) -> str:
        """The revision this code's migrations end at: where :meth:`migrate` brings a database."""
        return self.chain()[-1].revision

    def _status(self, conn: Connection) -> SchemaStatus:
        revision = _revision(conn)
        oldest_revision = oldest_release = None
        if revision is not None and inspect(conn).has_table(schema_compat.name):
            row = conn.execute(
                select(schema_compat.c.oldest_code_revision, schema_compat.c.oldest_code_release)
            ).first()
            if row is not None:
                oldest_revision, oldest_release = str(row[0]), str(row[1])
        return SchemaStatus(
            revision=revision,
            chain=self.chain(),
            oldest_code_revision=oldest_revision,
            oldest_code_release=oldest_release,
        )

    @contextmanager
    def _migrating(self) -> Iterator[Connection]:
        """A connection holding the migration lock; Alembic runs on it.

        PostgreSQL: a session advisory lock, so Alembic still runs its own transactions (and a
        migration may step out of them, as ``CREATE INDEX CONCURRENTLY`` must); the status read
        under the lock sees what another migrator committed before it. SQLite: one ``BEGIN
        IMMEDIATE`` transaction around everything, the file's one write lock; SQLite's DDL is
        transactional, so a failed upgrade leaves nothing half done.
        """
        with self.engine.connect() as conn:
            if self.is_sqlite:
                conn = conn.execution_options(sparekey_write=True)
                with self._writer(), conn.begin():
                    yield conn
                return
            conn.exec_driver_sql(f"SELECT pg_advisory_lock({_MIGRATION_LOCK})")
            conn.commit()
            try:
                yield conn
            finally:
                conn.rollback()
                conn.exec_driver_sql(f"SELECT pg_advisory_unlock({_MIGRATION_LOCK})")
                conn.commit()

    def _alembic(self, conn: Connection, action: Literal["upgrade", "downgrade"], to: str) -> None:
        if not self.is_sqlite and conn.in_transaction():
            conn.commit()  # end the status read: Alembic runs its own transaction
        config = Config()
        config.set_main_option("script_location", str(self.migrations))
        config.attributes["connection"] = conn
        try:
            if action == "upgrade":
                command.upgrade(config, to)
            else:
                command.downgrade(config, to)
        except CommandError as exc:
            raise SchemaError(f"cannot migrate the database to {to}: {exc}") from None

    def checkpoint(self, *, hold_writers: bool = False) -> WalState | None:
        """Copy what the SQLite write-ahead log holds back into the database file, without
        waiting for readers or writers (``PASSIVE``); None on PostgreSQL, which has no such log.

        With ``hold_writers`` the copy runs while this process holds :attr:`write_lock`: no
        commit can land meanwhile, so the log is copied to its end and the next writer starts it
        over (None if the lock could not be had). A copy that commits keep overtaking never gets
        there, and the log grows until a committing connection copies it itself, inside its
        commit, syncing every page copied since the file was last synced.
        """
        if not self.is_sqlite:
            return None
        with self.engine.connect() as conn:
            lock = self.write_lock if hold_writers else None
            if lock is not None and not lock.acquire():
                return None
            try:
                row = conn.exec_driver_sql("PRAGMA wal_checkpoint(PASSIVE)").one()
            finally:
                if lock is not None:
                    lock.release()
        return WalState(log_frames=int(row[1]), checkpointed_frames=int(row[2]))

    def sync_file(self) -> None:
        """Flush the database file's written pages to the disk (``fdatasync``).

        A ``PASSIVE`` checkpoint that commits overtook leaves the pages it copied unsynced: they
        are still in the log, so nothing is at risk, but the checkpoint that finally reaches the
        log's end must sync them all, and that one may run while writers wait. Syncing after
        each copy keeps that last sync down to the pages copied since.
        """
        name = self.url.database
        if self.is_sqlite and name and name != ":memory:":
            os.fdatasync(_descriptor_kept_open(name))

    def dispose(self) -> None:
        self.engine.dispose()
        if self._loop_engine is not self.engine:
            self._loop_engine.dispose()
        if self.write_lock is not None:
            self.write_lock.close()


@dataclass(frozen=True)
class WalState:
    """What a checkpoint found: the frames in SQLite's write-ahead log, and how many of them are
    now copied into the database file."""

    log_frames: int
    checkpointed_frames: int


class Checkpointer:
    """Checkpoints a SQLite database every ``interval`` seconds in a background thread
    (``sparekey serve``), so that no request pays for it.

    Without it, the commit that fills the write-ahead log past SQLite's threshold copies the log
    into the database file and syncs it, inside that request; with a large database the pages
    are scattered and the sync is slow. Connections still checkpoint by themselves past
    :data:`SQLITE_AUTOCHECKPOINT_PAGES`, in processes that run no checkpointer or if it falls
    behind.

    Under steady writes a copy made beside them never reaches the log's end, so the log never
    starts over and grows to that threshold. A :meth:`round` therefore copies and syncs twice
    while writers go on (each pass shorter than the one before, as it only has what the last one
    left), then, if the log has grown past ``hold_writers_past`` frames, copies the short rest
    while holding the write lock. A serving loop does not wait for it: its verifications read
    and check meanwhile, and their writes commit together once it is free (see
    :mod:`sparekey.api.batching`).
    """

    def __init__(
        self, db: Database, *, interval: float = 1.0, hold_writers_past: int = 1_000
    ) -> None:
        self._db = db
        self._interval = interval
        self._hold_writers_past = hold_writers_past
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="wal-checkpointer", daemon=True)

    def start(self) -> None:
        if self._db.is_sqlite:
            self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=10)

    def round(self) -> None:
        """Copy the log into the file; if it is long, bring it to its end (see the class)."""
        state = None
        for _ in range(_UNLOCKED_PASSES):
            state = self._db.checkpoint()
            if state is None or state.log_frames <= 0:
                return  # PostgreSQL, or nothing written since the log last started over
            if state.checkpointed_frames > 0:
                self._db.sync_file()
        if state is not None and state.log_frames >= self._hold_writers_past:
            self._db.checkpoint(hold_writers=True)

    def _run(self) -> None:
        while not self._stop.wait(self._interval):
            try:
                self.round()
            except Exception:  # the next round retries; connections checkpoint past the backstop
                log.exception("checkpointing the database failed")


_UNLOCKED_PASSES = 2


_kept_open: dict[tuple[int, int], int] = {}
_kept_open_lock = threading.Lock()


def _descriptor_kept_open(path: str) -> int:
    """A read-only descriptor of the file at ``path``, opened once and never closed.

    Never closed on purpose: closing any descriptor of a file drops every POSIX lock the process
    holds on that file, SQLite's included. Another process's last connection could then take
    the file as unused, checkpoint the log and delete it while this process still writes to it:
    lost commits (SQLite's "How To Corrupt An SQLite Database File", section 2.2). One descriptor
    per database file a process checkpoints, until it exits.
    """
    status = os.stat(path)
    key = (status.st_dev, status.st_ino)
    with _kept_open_lock:
        fd = _kept_open.get(key)
        if fd is None:
            fd = os.open(path, os.O_RDONLY)
            opened = os.fstat(fd)
            _kept_open[(opened.st_dev, opened.st_ino)] = fd
        return fd


def _revision(conn: Connection) -> str | None:
    if not inspect(conn).has_table("alembic_version"):
        return None
    row = conn.exec_driver_sql("SELECT version_num FROM alembic_version").first()
    return None if row is None else str(row[0])


@functools.cache
def _chain(location: str) -> tuple[Migration, ...]:
    """The migrations in ``location``, oldest first, each with its kind (read once a process)."""
    config = Config()
    config.set_main_option("script_location", location)
    scripts = ScriptDirectory.from_config(config)
    if len(scripts.get_heads()) != 1:
        raise SchemaError(f"the migrations in {location} do not form one line of revisions")
    chain: list[Migration] = []
    declared = False
    for script in reversed(list(scripts.walk_revisions())):
        declared = declared or script.revision == COMPAT_SINCE
        kind = getattr(script.module, "kind", None) if declared else "expand"
        if kind not in ("expand", "contract"):
            raise SchemaError(f"migration {script.revision} must declare kind expand or contract")
        title = (script.doc or "").strip().partition("\n")[0]
        chain.append(
            Migration(revision=script.revision, kind=cast(MigrationKind, kind), title=title)
        )
    return tuple(chain)


IDLE_PING_SECONDS = 10.0


def _mark_checkin(dbapi_connection: Any, record: ConnectionPoolEntry) -> None:
    record.info["checked_in_at"] = time.monotonic()


def _check_liveness(dbapi_connection: Any, record: ConnectionPoolEntry, proxy: Any) -> None:
    """Hand out only live connections, without a round trip on the hot path.

    A connection the driver knows is closed or broken is replaced at once; one that sat idle
    for :data:`IDLE_PING_SECONDS` (long enough for a server restart to have cut it) is pinged
    first. Pinging on every checkout (``pool_pre_ping``) would cost a round trip per request.
    """
    if getattr(dbapi_connection, "closed", False) or getattr(dbapi_connection, "broken", False):
        raise DisconnectionError("connection lost")
    idle_since = record.info.get("checked_in_at")
    if idle_since is None or time.monotonic() - idle_since < IDLE_PING_SECONDS:
        return
    try:
        cursor = dbapi_connection.cursor()
        cursor.execute("SELECT 1")
        cursor.close()
        dbapi_connection.rollback()
    except Exception as exc:
        raise DisconnectionError("connection failed a liveness check") from exc


def _sqlite_on_connect(cache_mb: int, dbapi_connection: Any, record: ConnectionPoolEntry) -> None:
    # Take transaction control from the driver so BEGIN is ours (see _sqlite_on_begin).
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_MS}")
    _enter_wal(cursor)
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    # SQLite's default page cache, 2 MB a connection, holds a 1,000-user database but a sliver of
    # a 1,000,000-user one, whose verifications read about 420 MB of it (decision 0023). The
    # cache grows only as pages are read, and the pool hands out the warmest connection first
    # (pool_use_lifo), so verification keeps to one large cache. Past the soft heap limit, set
    # for the whole process, connections reuse their own pages instead of taking more memory.
    cursor.execute(f"PRAGMA cache_size=-{cache_mb * 1024}")
    cursor.execute(f"PRAGMA soft_heap_limit={cache_mb * 1024 * 1024}")
    cursor.execute(f"PRAGMA wal_autocheckpoint={SQLITE_AUTOCHECKPOINT_PAGES}")
    cursor.close()


SQLITE_BUSY_MS = 10_000
# A backstop (SQLite's default is 1,000 pages): serve's Checkpointer keeps the log far shorter.
SQLITE_AUTOCHECKPOINT_PAGES = 10_000


def _enter_wal(cursor: Any) -> None:
    """Put the file in WAL mode (a no-op once it is).

    Switching a file into WAL takes an exclusive lock without calling the busy handler, so
    processes opening a new database at the same moment can get "database is locked" here;
    retry for as long as any other statement would wait on the busy timeout.
    """
    deadline = time.monotonic() + SQLITE_BUSY_MS / 1000
    delay = 0.001
    while True:
        try:
            cursor.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() > deadline:
                raise
        time.sleep(delay)
        delay = min(delay * 2, 0.05)


def _sqlite_on_begin(conn: Connection) -> None:
    # Writes take the write lock up front; reads run in autocommit, a snapshot per statement,
    # unless they asked for one snapshot throughout (Database.snapshot).
    options = conn.get_execution_options()
    if options.get("sparekey_write", False):
        conn.exec_driver_sql("BEGIN IMMEDIATE")
    elif options.get("sparekey_snapshot", False):
        conn.exec_driver_sql("BEGIN")
