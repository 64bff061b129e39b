"""How Sparekey opens SQLite: several processes or threads opening a new database at the same
moment (nodes starting together, migrators racing) all get WAL mode; connections keep a large page
cache and the warmest is handed out first; the write-ahead log is checkpointed in the
background."""

import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from sparekey.runtime import Sparekey, initialize
from sparekey.settings import Settings, load_settings
from sparekey.storage.database import (
    SQLITE_AUTOCHECKPOINT_PAGES,
    SQLITE_CACHE_MB,
    Checkpointer,
    Database,
    WalState,
)

OPENERS = 6
ROUNDS = 200  # without waiting, the switch into WAL failed in a few rounds of 200


def test_connections_opening_a_new_file_at_once_all_get_wal(tmp_path: Path) -> None:
    errors: list[BaseException] = []
    modes: list[str] = []
    for round_ in range(ROUNDS):
        url = f"sqlite:///{tmp_path / f'new-{round_}.db'}"
        databases = [Database(url) for _ in range(OPENERS)]
        barrier = threading.Barrier(OPENERS)

        def open_and_read(db: Database, barrier: threading.Barrier = barrier) -> None:
            barrier.wait()
            try:
                with db.read() as conn:
                    modes.append(str(conn.exec_driver_sql("PRAGMA journal_mode").scalar()))
            except BaseException as exc:
                errors.append(exc)

        threads = [threading.Thread(target=open_and_read, args=(db,)) for db in databases]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=30)
        for db in databases:
            db.dispose()
    assert [repr(e) for e in errors] == []
    assert modes == ["wal"] * (OPENERS * ROUNDS)


def test_connections_have_a_large_cache_and_leave_checkpoints_to_the_checkpointer(
    tmp_path: Path,
) -> None:
    db = Database(f"sqlite:///{tmp_path / 'settings.db'}")
    try:
        with db.read() as conn:
            assert conn.exec_driver_sql("PRAGMA cache_size").scalar() == -SQLITE_CACHE_MB * 1024
            limit = conn.exec_driver_sql("PRAGMA soft_heap_limit").scalar()
            assert limit == SQLITE_CACHE_MB * 1024 * 1024
            assert (
                conn.exec_driver_sql("PRAGMA wal_autocheckpoint").scalar()
                == SQLITE_AUTOCHECKPOINT_PAGES
            )
    finally:
        db.dispose()


def test_the_cache_budget_is_a_setting_that_bounds_the_whole_process(tmp_path: Path) -> None:
    """Each connection may use the whole budget; SQLite's soft heap limit holds them together.
    The setting's default is the one a Database opened without settings uses."""
    assert Settings.model_fields["sqlite_cache_mb"].default == SQLITE_CACHE_MB
    settings = load_settings(tmp_path, sqlite_cache_mb=48)
    initialize(settings)
    app = Sparekey.open(settings)
    try:
        with app.db.read() as conn, app.db.read() as other:
            for connection in (conn, other):
                assert connection.exec_driver_sql("PRAGMA cache_size").scalar() == -48 * 1024
            assert conn.exec_driver_sql("PRAGMA soft_heap_limit").scalar() == 48 * 1024 * 1024
    finally:
        app.close()


def test_the_checkpointer_copies_the_log_into_the_file_in_the_background(
    tmp_path: Path,
) -> None:
    path = tmp_path / "log.db"
    db = Database(f"sqlite:///{path}")
    checkpointer = Checkpointer(db, interval=0.05)
    try:
        with db.write() as conn:
            conn.exec_driver_sql("CREATE TABLE t (x BLOB)")
        for _ in range(50):
            with db.write() as conn:
                conn.exec_driver_sql("INSERT INTO t VALUES (randomblob(3000))")
        # 150 KB written, all of it still in the log: 50 commits are far under the backstop.
        assert path.stat().st_size < 50 * 3000
        checkpointer.start()
        deadline = time.monotonic() + 10
        while path.stat().st_size < 50 * 3000 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert path.stat().st_size >= 50 * 3000, "the checkpointer copied the log into the file"
        with db.read() as conn:
            assert conn.exec_driver_sql("SELECT count(*) FROM t").scalar() == 50
    finally:
        checkpointer.stop()
        db.dispose()


def test_a_round_brings_a_busy_log_to_its_end_so_that_it_starts_over(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """On a busy server commits land while the checkpointer copies, so its unlocked passes never
    reach the log's end; only the last pass, holding the write lock, lets the log start over.

    A pass copies no further than what the oldest open read sees, so a read begun just before a
    commit stands in for that commit landing during the pass."""
    path = tmp_path / "busy.db"
    db = Database(f"sqlite:///{path}")
    reader = sqlite3.connect(path, isolation_level=None)

    def commit_one() -> None:
        with db.write() as conn:
            conn.exec_driver_sql("INSERT INTO t VALUES (randomblob(6000))")

    def read_then_commit() -> None:
        reader.execute("BEGIN")
        reader.execute("SELECT count(*) FROM t").fetchone()
        commit_one()

    try:
        with db.write() as conn:
            conn.exec_driver_sql("CREATE TABLE t (x BLOB)")
        for _ in range(400):  # each commit spans a few pages: some 1,200 frames in the log
            commit_one()
        read_then_commit()
        synced = db.sync_file
        passes = []

        def after_a_pass() -> None:
            synced()
            reader.execute("COMMIT")
            passes.append(True)
            if len(passes) < 2:
                read_then_commit()

        monkeypatch.setattr(db, "sync_file", after_a_pass)
        Checkpointer(db).round()
        assert len(passes) == 2
        commit_one()
        state = db.checkpoint()
        assert state is not None
        assert state.log_frames < 10, f"the log started over ({state.log_frames} frames)"
        with db.read() as conn:
            assert conn.exec_driver_sql("SELECT count(*) FROM t").scalar() == 403
    finally:
        reader.close()
        db.dispose()


def test_syncing_the_file_keeps_sqlites_locks_so_no_other_process_deletes_the_log(
    tmp_path: Path,
) -> None:
    """Closing any descriptor of a file drops the process's POSIX locks on it, SQLite's too: then
    another process's last connection takes the file as unused and deletes the write-ahead log
    this process still writes to. The log must outlive the other process's connection."""
    path = tmp_path / "locks.db"
    db = Database(f"sqlite:///{path}")
    try:
        with db.write() as conn:
            conn.exec_driver_sql("CREATE TABLE t (x INTEGER)")
        with db.read() as conn:  # the pool keeps this connection open, and its lock held
            conn.exec_driver_sql("SELECT count(*) FROM t").scalar()
        for _ in range(2):
            db.sync_file()
        other = (
            "import sqlite3, sys; c = sqlite3.connect(sys.argv[1]); "
            "c.execute('SELECT count(*) FROM t').fetchall(); c.close()"
        )
        subprocess.run([sys.executable, "-c", other, str(path)], check=True, timeout=60)
        assert Path(f"{path}-wal").exists(), "another process took the file for unused"
        with db.write() as conn:
            conn.exec_driver_sql("INSERT INTO t VALUES (1)")
        with db.read() as conn:
            assert conn.exec_driver_sql("SELECT count(*) FROM t").scalar() == 1
    finally:
        db.dispose()


def test_a_round_leaves_a_short_log_to_the_writers(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An idle or lightly used server's rounds never take the write lock from its writers."""
    db = Database(f"sqlite:///{tmp_path / 'quiet.db'}")
    try:
        with db.write() as conn:
            conn.exec_driver_sql("CREATE TABLE t (x BLOB)")
        held = []
        checkpoint = db.checkpoint

        def noting(*, hold_writers: bool = False) -> WalState | None:
            held.append(hold_writers)
            return checkpoint(hold_writers=hold_writers)

        monkeypatch.setattr(db, "checkpoint", noting)
        Checkpointer(db).round()
        assert held == [False, False]
    finally:
        db.dispose()


def test_the_pool_hands_out_the_connection_used_last(tmp_path: Path) -> None:
    """One request after another reuses one connection (and its warm page cache)."""
    db = Database(f"sqlite:///{tmp_path / 'lifo.db'}")
    try:
        held = [db.engine.raw_connection() for _ in range(4)]  # four pooled connections
        ids = [id(c.dbapi_connection) for c in held]
        for connection in held:
            connection.close()
        seen = set()
        for _ in range(10):
            with db.unit() as unit:
                seen.add(id(unit._connection.dbapi_connection))
        assert seen == {ids[-1]}, "the last one returned is the one reused"
    finally:
        db.dispose()


def test_the_serving_thread_keeps_one_connection_whatever_other_threads_do(
    tmp_path: Path,
) -> None:
    """SQLite empties a connection's page cache when it sees another connection's commit; the
    serving loop's thread therefore gets a pool of its own (Database.serve_from_this_thread)."""
    db = Database(f"sqlite:///{tmp_path / 'own.db'}")
    with db.write() as conn:
        conn.exec_driver_sql("CREATE TABLE t (x INTEGER)")

    def used_here() -> set[int]:
        seen = set()
        with db.unit() as unit:
            seen.add(id(unit._connection.dbapi_connection))
        with db.write() as conn:
            conn.exec_driver_sql("INSERT INTO t VALUES (1)")
            seen.add(id(conn.connection.dbapi_connection))
        with db.read() as conn:
            seen.add(id(conn.connection.dbapi_connection))
        return seen

    def another_thread_meanwhile() -> set[int]:
        """Another thread (the checkpointer, a worker) holds a connection while this thread
        works, then commits: the shared pool's most recently returned connection."""
        holding, done = threading.Event(), threading.Event()
        theirs: set[int] = set()

        def other() -> None:
            with db.read() as conn:
                theirs.add(id(conn.connection.dbapi_connection))
                holding.set()
                done.wait(timeout=10)
            with db.write() as conn:
                theirs.add(id(conn.connection.dbapi_connection))
                conn.exec_driver_sql("INSERT INTO t VALUES (2)")

        thread = threading.Thread(target=other)
        thread.start()
        holding.wait(timeout=10)
        mine = used_here()
        done.set()
        thread.join(timeout=10)
        return mine | used_here() | {-id(c) for c in theirs}  # theirs negated, told apart

    try:
        shared = another_thread_meanwhile()
        assert len({c for c in shared if c > 0}) > 1, "from the shared pool it changes hands"
        db.serve_from_this_thread()
        own = another_thread_meanwhile() | another_thread_meanwhile()
        mine = {c for c in own if c > 0}
        assert len(mine) == 1, "the serving thread keeps to one connection"
        assert not mine & {-c for c in own if c < 0}, "which no other thread is given"
        with db.read() as conn:
            assert conn.exec_driver_sql("SELECT count(*) FROM t").scalar() == 3 * 3
    finally:
        db.dispose()
