"""Writers to one SQLite file queue on a lock that hands over at once.

SQLite lets one writer in at a time. A writer that finds the file locked calls the busy handler,
which sleeps 1 ms, then 2, 5, 10 ms ... and tries again; a verification's write transaction lasts
about a tenth of a millisecond, so with two ``sparekey serve`` processes on one file each spends
most of its time asleep behind the other, and the second process adds nothing.

:class:`WriteLock` is taken before ``BEGIN IMMEDIATE`` and given back after the commit or
rollback: a :class:`threading.Lock` queues this process's threads, and ``flock`` on a file beside
the database queues processes. A waiting writer is woken as soon as the lock is released instead
of after a sleep, so SQLite's own lock is then free and the busy handler never runs. The kernel
releases ``flock`` when a process dies, so a crash inside a transaction leaves nothing held.

An event loop must not block on the lock, so it does not wait for it on its own thread:
:class:`LockWaiter` waits on a thread of its own, blocked in ``flock`` itself (taking no CPU, woken
by the kernel the moment the holder lets go), takes the lock *for* the loop's thread and hands it
over with a callback on the loop.

It is an optimisation, never needed for correctness: SQLite's lock still serializes writers, and a
writer that does not take this lock (another tool, an older Sparekey) still waits on the busy
timeout as before. Waiting for the lock is bounded by the same timeout; past it the writer goes on
to ``BEGIN IMMEDIATE`` and SQLite's own busy timeout decides. A thread that already holds the lock
(a write opened inside another write, on a second connection) does not take it again.
"""

from __future__ import annotations

import asyncio
import fcntl
import os
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

__all__ = ["LONGEST_WAIT_SECONDS", "SPIN_SECONDS", "LockWaiter", "WriteLock"]

SPIN_SECONDS = 0.0005  # a waiter first spins this long: a verification's write lasts 0.1-0.3 ms
_FIRST_WAIT = 0.00005
LONGEST_WAIT_SECONDS = 0.001  # then sleeps, longer each time, up to this
_HANDOVER_CHECK_SECONDS = 0.001  # how often a thread waiting in-process sees a lock taken for it


class WriteLock:
    """An exclusive lock over every writer to one database file, across threads and processes."""

    def __init__(self, path: Path, *, timeout: float) -> None:
        self.path = path
        self._timeout = timeout
        self._owner: int | None = None
        self._pid = -1
        self._fd = -1
        self._threads = threading.Lock()
        self._opening = threading.Lock()

    def acquire(self) -> bool:
        """Take the lock: True once held. False if this thread holds it already, or if it could
        not be had within the timeout; the caller then goes on without it and must not
        :meth:`release` it."""
        me = threading.get_ident()
        if self._owner == me or not self._usable():
            return False
        deadline = time.monotonic() + self._timeout
        while not self._threads.acquire(timeout=_HANDOVER_CHECK_SECONDS):
            if self._owner == me:  # a LockWaiter took it for this thread: held already
                return False
            if time.monotonic() >= deadline:
                return False
        try:
            taken = self._take_file(deadline)
        except BaseException:
            self._threads.release()
            raise
        if not taken:
            self._threads.release()
            return False
        self._owner = me
        return True

    def acquire_for(self, owner: int) -> bool:
        """Take the lock for thread ``owner``, which then holds it (and releases it), waiting for
        as long as another holder keeps it: blocked in ``flock``, so that the waiting costs no
        CPU and ends the moment the holder lets go. True once taken; False if there is no lock
        file (writers go without it). Meanwhile :meth:`acquire` on ``owner``'s thread returns
        False (held already) as soon as the lock is taken for it, so the owner never waits for a
        lock taken on its own behalf."""
        if not self._usable():
            return False
        self._threads.acquire()
        try:
            fcntl.flock(self._fd, fcntl.LOCK_EX)
        except BaseException:
            self._threads.release()
            raise
        self._owner = owner
        return True

    @property
    def timeout(self) -> float:
        """Seconds a writer waits for the lock before going on without it."""
        return self._timeout

    def try_acquire(self) -> bool | None:
        """Take the lock only if it is free this instant: True once held; False if another
        thread or process holds it (nothing taken). None if there is nothing to take: this
        thread holds it already, or there is no lock file; the caller then goes on as if it
        held it (SQLite's own lock still decides) and must not :meth:`release` it."""
        if self._owner == threading.get_ident() or not self._usable():
            return None
        if not self._threads.acquire(blocking=False):
            return False
        try:
            fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self._threads.release()
            return False
        except BaseException:
            self._threads.release()
            raise
        self._owner = threading.get_ident()
        return True

    def release(self) -> None:
        self._owner = None
        try:
            if self._fd >= 0:  # closed meanwhile (shutdown): closing let go of the lock
                fcntl.flock(self._fd, fcntl.LOCK_UN)
        finally:
            self._threads.release()

    @contextmanager
    def held(self) -> Iterator[None]:
        """The lock for the block, if it can be had (see :meth:`acquire`)."""
        taken = self.acquire()
        try:
            yield
        finally:
            if taken:
                self.release()

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def _usable(self) -> bool:
        """Open the lock file in this process if not yet; False if it cannot be opened (a
        read-only directory): writers then go without it."""
        if os.getpid() != self._pid:  # first use, or forked: the parent's lock is the parent's
            with self._opening:
                if os.getpid() != self._pid:
                    self._open()
        return self._fd >= 0

    def _open(self) -> None:
        """Open the lock file, at the first write (as SQLite makes its files), not before."""
        if self._fd >= 0:
            os.close(self._fd)  # inherited from the parent, whose lock it is
        try:
            self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        except OSError:
            self._fd = -1  # writers go without it, on SQLite's busy timeout
        self._pid = os.getpid()
        self._threads = threading.Lock()
        self._owner = None

    def _take_file(self, deadline: float) -> bool:
        # flock has no timeout, so it is polled without blocking: first in a tight loop that
        # yields the CPU between tries, for about as long as a verification's write lasts (the
        # usual wait, taken over the moment it is released: a sleep, even of 20 µs, lasts 60 µs
        # or more with the kernel's timer slack), then asleep, a little longer each time, up to
        # 1 ms (where SQLite's busy handler starts).
        spin_until = time.monotonic() + SPIN_SECONDS
        wait = _FIRST_WAIT
        while True:
            try:
                fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return True
            except BlockingIOError:
                now = time.monotonic()
                if now >= deadline:
                    return False
            if now < spin_until:
                os.sched_yield()
                continue
            time.sleep(wait)
            wait = min(wait * 2, LONGEST_WAIT_SECONDS)


class LockWaiter:
    """Waits for a :class:`WriteLock` on a thread of its own, for an event loop.

    :meth:`request` asks for the lock for the calling thread (the loop's) and returns at once;
    the waiting thread takes it with :meth:`WriteLock.acquire_for` and calls ``callback(taken)``
    on the loop. The callback then holds the lock if ``taken`` and must release it. One request
    at a time: ask again only after the callback has run.
    """

    def __init__(self, lock: WriteLock) -> None:
        self._lock = lock
        self._wanted = threading.Event()
        self._request: tuple[asyncio.AbstractEventLoop, int, Callable[[bool], None]] | None = None
        self._thread: threading.Thread | None = None
        self._closed = False

    def request(self, loop: asyncio.AbstractEventLoop, callback: Callable[[bool], None]) -> None:
        if self._closed:
            raise RuntimeError("the lock waiter is closed")
        self._request = (loop, threading.get_ident(), callback)
        if self._thread is None:
            self._thread = threading.Thread(
                target=self._run, name="sparekey-write-lock-waiter", daemon=True
            )
            self._thread.start()
        self._wanted.set()

    def close(self) -> None:
        """Stop the waiting thread once it is idle (a request in progress still completes)."""
        self._closed = True
        self._wanted.set()

    def _run(self) -> None:
        while True:
            self._wanted.wait()
            self._wanted.clear()
            request, self._request = self._request, None
            if request is None:
                if self._closed:
                    return
                continue
            loop, owner, callback = request
            taken = self._lock.acquire_for(owner)
            try:
                loop.call_soon_threadsafe(callback, taken)
            except RuntimeError:  # the loop has closed: nobody to hand the lock to
                if taken:
                    self._lock.release()
