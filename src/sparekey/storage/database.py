"""The database handle: one engine, read and write transactions, and migrations.

SQLite runs in WAL mode so readers never wait for the writer. Write transactions on SQLite begin
with ``BEGIN IMMEDIATE`` so that two writers queue on the busy timeout instead of failing when one
upgrades a read lock; reads run statement by statement and take no lock. PostgreSQL uses its default
READ COMMITTED, where a conditional UPDATE re-checks its WHERE clause after waiting for a row lock.

Three ways in: :meth:`Database.read` (nothing committed), :meth:`Database.write` (one transaction),
and :meth:`Database.unit` for the hot path: read first, then :meth:`Unit.write` only if there is
something to write, on the same connection.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, Engine, create_engine, event, inspect
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DisconnectionError
from sqlalchemy.pool import ConnectionPoolEntry

from sparekey.storage.prepared import Unit

__all__ = ["Database", "Unit"]

_MIGRATIONS = Path(__file__).parent / "migrations"


class Database:
    def __init__(self, url: str, *, pool_size: int = 20) -> None:
        self.url = make_url(url)
        self.is_sqlite = self.url.get_backend_name() == "sqlite"
        if self.is_sqlite:
            if self.url.database and self.url.database != ":memory:":
                Path(self.url.database).parent.mkdir(parents=True, exist_ok=True)
            self.engine: Engine = create_engine(
                self.url, pool_size=pool_size, max_overflow=20, pool_pre_ping=False
            )
            event.listen(self.engine, "connect", _sqlite_on_connect)
            event.listen(self.engine, "begin", _sqlite_on_begin)
        else:
            self.engine = create_engine(self.url, pool_size=pool_size, max_overflow=20)
            event.listen(self.engine, "checkin", _mark_checkin)
            event.listen(self.engine, "checkout", _check_liveness)

    @contextmanager
    def read(self) -> Iterator[Connection]:
        """A read-only unit of work; nothing it does is committed."""
        with self.engine.connect() as conn:
            yield conn
            conn.rollback()

    @contextmanager
    def write(self) -> Iterator[Connection]:
        """A transaction that commits when the block ends and rolls back if it raises."""
        with self.engine.connect() as conn:
            conn = conn.execution_options(sparekey_write=True)
            with conn.begin():
                yield conn

    @contextmanager
    def unit(self) -> Iterator[Unit]:
        """Read, then perhaps write, on one pooled connection with prepared statements (see
        :mod:`sparekey.storage.prepared`); commits only if :meth:`Unit.write` ran."""
        connection = self.engine.raw_connection()
        unit = Unit(connection, self.engine.dialect)
        try:
            yield unit
        except BaseException:
            unit.finish(commit=False)
            raise
        else:
            unit.finish(commit=True)
        finally:
            connection.close()

    def migrate(self, revision: str = "head") -> None:
        command.upgrade(self._alembic_config(), revision)

    def downgrade(self, revision: str) -> None:
        command.downgrade(self._alembic_config(), revision)

    def current_revision(self) -> str | None:
        with self.engine.connect() as conn:
            if not inspect(conn).has_table("alembic_version"):
                return None
            row = conn.exec_driver_sql("SELECT version_num FROM alembic_version").first()
            return None if row is None else str(row[0])

    def head_revision(self) -> str:
        """The revision this code's migrations end at: where :meth:`migrate` brings a database."""
        head = ScriptDirectory.from_config(self._alembic_config()).get_current_head()
        assert head is not None
        return head

    def _alembic_config(self) -> Config:
        config = Config()
        config.set_main_option("script_location", str(_MIGRATIONS))
        config.attributes["engine"] = self.engine
        return config

    def dispose(self) -> None:
        self.engine.dispose()


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


def _sqlite_on_connect(dbapi_connection: Any, record: ConnectionPoolEntry) -> None:
    # Take transaction control from the driver so BEGIN is ours (see _sqlite_on_begin).
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA busy_timeout=10000")
    cursor.close()


def _sqlite_on_begin(conn: Connection) -> None:
    # Writes take the write lock up front; reads run in autocommit, a snapshot per statement.
    if conn.get_execution_options().get("sparekey_write", False):
        conn.exec_driver_sql("BEGIN IMMEDIATE")
