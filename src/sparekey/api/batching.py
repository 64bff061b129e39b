"""Verifications on SQLite that find the write lock taken commit together, without blocking.

On SQLite every node's writers take turns on one write lock (:mod:`sparekey.storage.writelock`).
A verification checks its code first and needs the lock only to write the outcome (the spent step,
the audit record). If another process holds the lock just then, waiting for it would stall this
process's event loop and with it every other request the process is serving. Instead the checked
attempt joins a batch and the request awaits it; the loop goes on reading, checking and answering
other requests, whose attempts join the same batch if the lock is still taken; and once the lock is
free the whole batch is written in one transaction (one commit, one turn of the lock: group commit)
by :meth:`~sparekey.services.verification.VerificationService.settle`, which keeps each attempt's
outcome its own. Whoever asks while a batch is forming joins it, so answers keep their order.

The batch waits for the lock on a thread of its own
(:class:`~sparekey.storage.writelock.LockWaiter`), blocked in the kernel until the holder lets go,
which takes the lock for the loop and hands it over; the loop meanwhile serves everyone else. Past
the lock's timeout the batch is written anyway, on SQLite's own busy timeout. PostgreSQL has no
such lock and never comes here.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from sparekey.domain.models import Caller, VerifyResult
from sparekey.services.verification import OtpAttempt, VerificationService
from sparekey.storage.writelock import LockWaiter, WriteLock

__all__ = ["VerifyBatcher"]


class VerifyBatcher:
    """One per process, serving the event loop that first uses it; requests from any other loop
    (a test client's thread) verify the plain way."""

    def __init__(
        self,
        verification: VerificationService,
        lock: WriteLock | None,
    ) -> None:
        self._verification = verification
        self._lock = lock
        self._waiter = LockWaiter(lock) if lock is not None else None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._pending: list[tuple[OtpAttempt, asyncio.Future[VerifyResult]]] = []
        self._asked = False  # the waiter is taking the lock for the loop
        self._deadline: asyncio.TimerHandle | None = None

    @property
    def pending(self) -> int:
        """Attempts waiting for the write lock."""
        return len(self._pending)

    async def verify(self, user_id: str, code: str, *, caller: Caller) -> VerifyResult:
        loop = asyncio.get_running_loop()
        if self._loop is None:
            self._loop = loop
        verification = self._verification
        if self._lock is None or self._waiter is None or loop is not self._loop:
            return verification.verify(user_id, code, caller=caller)
        # While a batch waits for the lock, a new attempt joins it: answers keep their order.
        outcome = verification.verify_or_defer(
            user_id, code, caller=caller, join=bool(self._pending)
        )
        if isinstance(outcome, VerifyResult):
            return outcome
        future: asyncio.Future[VerifyResult] = loop.create_future()
        if not self._pending:
            self._deadline = loop.call_later(self._lock.timeout, self._write, False)
        self._pending.append((outcome, future))
        if not self._asked:
            self._asked = True
            self._waiter.request(loop, self._handed_over)
        return await future

    def close(self) -> None:
        """Stop the thread that waits for the lock (at shutdown)."""
        if self._waiter is not None:
            self._waiter.close()

    def _handed_over(self, taken: bool) -> None:
        """The waiter took the lock for the loop (if ``taken``): write the batch, let go."""
        self._asked = False
        self._write(taken)

    def _write(self, taken: bool) -> None:
        """Write the batch: holding the lock, or (past its timeout) on SQLite's own."""
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None
        batch, self._pending = self._pending, []
        try:
            if batch:
                results: Sequence[VerifyResult | BaseException] = self._verification.settle(
                    [attempt for attempt, _ in batch]
                )
        except BaseException as exc:  # an interrupt: no request may be left waiting
            results = [exc] * len(batch)
            raise
        finally:
            if taken and self._lock is not None:
                self._lock.release()
            if batch:
                _answer(batch, results)


def _answer(
    batch: list[tuple[OtpAttempt, asyncio.Future[VerifyResult]]],
    results: Sequence[VerifyResult | BaseException],
) -> None:
    for (_, future), result in zip(batch, results, strict=True):
        if future.done():  # the request was cancelled (its client left); it is written
            continue
        if isinstance(result, BaseException):
            future.set_exception(result)
        else:
            future.set_result(result)
