"""SQLite's writers queue on one lock across threads and processes (sparekey.storage.writelock).

"Another process" is either a real one or a second :class:`WriteLock` on the same file: ``flock``
locks belong to an open file, so two opens of one file exclude each other even in one process.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from sqlalchemy import bindparam, func, select

from sparekey.storage.database import Database
from sparekey.storage.prepared import Prepared, run
from sparekey.storage.tables import users
from sparekey.storage.users import user_exists
from sparekey.storage.writelock import LockWaiter, WriteLock

SHORT = 0.05  # seconds: how long a test lets a writer try before it gives up
STILL_WAITING = 0.3  # seconds: a writer that was not held back would be done long before


@pytest.fixture
def lock_path(tmp_path: Path) -> Path:
    return tmp_path / "sparekey.db-writer"


def test_a_second_opener_waits_until_the_first_releases(lock_path: Path) -> None:
    first, second = WriteLock(lock_path, timeout=SHORT), WriteLock(lock_path, timeout=SHORT)
    assert first.acquire()
    assert not second.acquire(), "held by the first: the second gives up after its timeout"
    first.release()
    assert second.acquire()
    second.release()


def test_a_thread_that_holds_it_does_not_take_it_again_and_others_wait(lock_path: Path) -> None:
    lock = WriteLock(lock_path, timeout=SHORT)
    assert lock.acquire()
    assert not lock.acquire(), "the holder's nested write goes on without taking it twice"
    other: list[bool] = []
    thread = threading.Thread(target=lambda: other.append(lock.acquire()))
    thread.start()
    thread.join()
    assert other == [False], "another thread of this process waits, then gives up"
    lock.release()
    thread = threading.Thread(target=lambda: (other.append(lock.acquire()), lock.release()))
    thread.start()
    thread.join()
    assert other == [False, True]


_HOLDER = """
import fcntl, os, sys, time
fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT)
fcntl.flock(fd, fcntl.LOCK_EX)
print("held", flush=True)
time.sleep(60)
"""


def test_a_process_that_dies_holding_it_leaves_it_free(lock_path: Path) -> None:
    with subprocess.Popen(
        [sys.executable, "-c", _HOLDER, str(lock_path)], stdout=subprocess.PIPE, text=True
    ) as holder:
        try:
            assert holder.stdout is not None
            assert holder.stdout.readline() == "held\n"
            assert not WriteLock(lock_path, timeout=SHORT).acquire(), "another process holds it"
            os.kill(holder.pid, signal.SIGKILL)
            holder.wait(timeout=10)
            lock = WriteLock(lock_path, timeout=5.0)
            assert lock.acquire(), "the kernel released the dead process's lock"
            lock.release()
        finally:
            holder.kill()


def test_trying_takes_a_free_lock_and_never_waits_for_a_taken_one(lock_path: Path) -> None:
    first = WriteLock(lock_path, timeout=STILL_WAITING)
    second = WriteLock(lock_path, timeout=STILL_WAITING)
    assert first.try_acquire() is True
    assert second.try_acquire() is False, "another process holds it: not taken, not waited for"
    assert first.try_acquire() is None, "the holder has nothing to take (and nothing to release)"
    in_thread: list[bool | None] = []
    thread = threading.Thread(target=lambda: in_thread.append(first.try_acquire()))
    thread.start()
    thread.join()
    assert in_thread == [False], "another thread of the holder's process does not get it either"
    first.release()
    assert second.try_acquire() is True
    assert first.try_acquire() is False
    second.release()


@pytest.fixture
def waiting(lock_path: Path) -> Iterator[tuple[WriteLock, WriteLock, LockWaiter]]:
    """This process's lock (with the server's 10 s timeout), another process's lock on the same
    file, held, and a waiter for the first."""
    lock, other = WriteLock(lock_path, timeout=10.0), WriteLock(lock_path, timeout=SHORT)
    waiter = LockWaiter(lock)
    assert other.acquire()
    try:
        yield lock, other, waiter
    finally:
        waiter.close()
        lock.close()
        other.close()


def released_for_the_other(lock: WriteLock, other: WriteLock) -> None:
    """``lock`` held for this thread until it lets go; the other process's then."""
    assert other.try_acquire() is False, "held for the loop until it lets go"
    lock.release()
    assert other.try_acquire() is True
    other.release()


def test_a_waiter_takes_the_lock_for_the_loop_once_it_is_free_while_the_loop_turns(
    waiting: tuple[WriteLock, WriteLock, LockWaiter],
) -> None:
    """The loop asks and goes on; the waiter, blocked in the kernel meanwhile, takes the lock the
    moment the other process lets go and hands it to the loop's thread, which then holds it."""
    lock, other, waiter = waiting

    async def scenario() -> tuple[int, bool, bool | None]:
        loop = asyncio.get_running_loop()
        handed: asyncio.Future[bool] = loop.create_future()
        waiter.request(loop, handed.set_result)
        turns = 0
        while turns < 20:  # the loop is free while the waiter waits
            await asyncio.sleep(0.005)
            turns += 1
        assert not handed.done(), "not while the other process holds it"
        other.release()
        taken = await asyncio.wait_for(handed, timeout=10)
        return turns, taken, lock.try_acquire()

    turns, taken, again = asyncio.run(scenario())
    assert turns == 20
    assert taken, "handed over taken"
    assert again is None, "the loop's thread holds it: nothing more to take"
    released_for_the_other(lock, other)


def test_a_write_on_the_loops_thread_does_not_wait_for_a_lock_taken_on_its_behalf(
    waiting: tuple[WriteLock, WriteLock, LockWaiter],
) -> None:
    """Between the waiter taking the lock for the loop and the loop running its callback, the
    loop's thread may write (a backup code, say) and wait for the lock itself: it sees the lock
    is already held for it and goes on, instead of waiting out the timeout for itself."""
    lock, other, waiter = waiting

    async def scenario() -> tuple[bool, float, list[bool]]:
        loop = asyncio.get_running_loop()
        handed: list[bool] = []
        waiter.request(loop, handed.append)
        while not lock._threads.locked():  # the waiter is in line (in flock), ahead of the loop
            await asyncio.sleep(0.001)
        release = threading.Timer(0.05, other.release)
        release.start()
        began = time.monotonic()
        took = lock.acquire()  # blocks the loop, as a plain write on its thread does
        waited = time.monotonic() - began
        release.join()
        assert handed == [], "the callback has not run: the loop was blocked"
        await asyncio.sleep(0.01)
        return took, waited, handed

    took, waited, handed = asyncio.run(scenario())
    assert took is False, "held already (for this thread): not taken twice, not released"
    assert waited < 5.0, f"waited {waited:.1f} s for a lock held on its behalf"
    assert handed == [True]
    released_for_the_other(lock, other)


def test_a_closed_waiter_stops_its_thread(lock_path: Path) -> None:
    lock = WriteLock(lock_path, timeout=SHORT)
    waiter = LockWaiter(lock)

    async def once() -> bool:
        loop = asyncio.get_running_loop()
        handed: asyncio.Future[bool] = loop.create_future()
        waiter.request(loop, handed.set_result)
        return await asyncio.wait_for(handed, timeout=10)

    before = set(threading.enumerate())
    assert asyncio.run(once()), "a free lock is handed over at once"
    lock.release()
    (thread,) = set(threading.enumerate()) - before
    assert thread.name == "sparekey-write-lock-waiter"
    waiter.close()
    thread.join(timeout=10)
    assert not thread.is_alive()
    loop = asyncio.new_event_loop()
    try:
        with pytest.raises(RuntimeError):
            waiter.request(loop, lambda taken: None)
    finally:
        loop.close()
    lock.close()


def test_a_lock_file_that_cannot_be_opened_leaves_writers_to_sqlite(tmp_path: Path) -> None:
    (tmp_path / "sparekey.db-writer").mkdir()  # not a file: opening it fails
    db = Database(f"sqlite:///{tmp_path / 'sparekey.db'}")
    try:
        db.upgrade()
        assert db.write_lock is not None
        assert not db.write_lock.acquire()
        assert db.write_lock.try_acquire() is None, "nothing to take: go on without it"
        with db.unit() as unit:
            assert unit.try_write()
        _create_user(db, "alice")
        with db.unit() as unit:
            assert user_exists(unit, "alice")
    finally:
        db.dispose()


@pytest.fixture
def db(tmp_path: Path) -> Iterator[Database]:
    database = Database(f"sqlite:///{tmp_path / 'sparekey.db'}")
    database.upgrade()
    yield database
    database.dispose()


def _create_user(db: Database, user_id: str) -> None:
    with db.write() as conn:
        conn.execute(
            users.insert().values(id=user_id, created_at=func.now(), updated_at=func.now())
        )


def _unit_write(db: Database, user_id: str) -> None:
    insert = users.insert().values(
        id=bindparam("user_id"), created_at=func.now(), updated_at=func.now()
    )
    with db.unit() as unit:
        run(unit.write(), Prepared(insert), {"user_id": user_id})


@pytest.mark.parametrize("write", [_create_user, _unit_write], ids=["write", "unit"])
def test_every_writer_of_the_database_waits_for_the_lock(
    db: Database, write: Callable[[Database, str], None]
) -> None:
    assert db.write_lock is not None
    elsewhere = WriteLock(db.write_lock.path, timeout=SHORT)  # as another process would hold it
    assert elsewhere.acquire()
    done = threading.Event()

    def writer() -> None:
        write(db, "alice")
        done.set()

    thread = threading.Thread(target=writer)
    thread.start()
    try:
        assert not done.wait(STILL_WAITING), "the write did not wait for the lock"
    finally:
        elsewhere.release()
    thread.join(timeout=10)
    assert done.is_set()
    with db.read() as conn:
        assert conn.execute(select(func.count()).select_from(users)).scalar_one() == 1


def test_the_lock_file_is_made_by_the_first_write_not_before(tmp_path: Path) -> None:
    db = Database(f"sqlite:///{tmp_path / 'sparekey.db'}")
    try:
        assert not (tmp_path / "sparekey.db-writer").exists(), "opening writes nothing"
        db.upgrade()
        assert (tmp_path / "sparekey.db-writer").exists()
    finally:
        db.dispose()


def test_a_unit_tries_to_write_only_while_no_other_writer_holds_the_lock(db: Database) -> None:
    assert db.write_lock is not None
    other = WriteLock(db.write_lock.path, timeout=SHORT)
    insert = Prepared(
        users.insert().values(id=bindparam("user_id"), created_at=func.now(), updated_at=func.now())
    )
    try:
        assert other.acquire()
        with db.unit() as unit:
            assert not unit.try_write(), "held by another process: nothing begun"
            assert not unit.writing
        other.release()
        with db.unit() as unit:
            assert unit.try_write()
            assert not other.try_acquire(), "the unit holds the lock until it commits"
            run(unit, insert, {"user_id": "alice"})
        assert other.try_acquire(), "and gives it back after"
        other.release()
        with db.unit() as unit:
            assert user_exists(unit, "alice")
    finally:
        other.close()


def test_after_commit_callbacks_run_once_committed_and_never_after_a_rollback(
    db: Database,
) -> None:
    insert = Prepared(
        users.insert().values(id=bindparam("user_id"), created_at=func.now(), updated_at=func.now())
    )
    called: list[str] = []
    with db.unit() as unit:
        run(unit.write(), insert, {"user_id": "alice"})
        unit.after_commit(lambda: called.append("alice"))
        assert called == [], "not before the commit"
    assert called == ["alice"]

    def rolled_back() -> None:
        with db.unit() as unit:
            run(unit.write(), insert, {"user_id": "bob"})
            unit.after_commit(lambda: called.append("bob"))
            raise RuntimeError("rolled back")

    with pytest.raises(RuntimeError):
        rolled_back()
    assert called == ["alice"]
