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

The batch waits for the lock the way :class:`~sparekey.storage.writelock.WriteLock` does: tried on
every turn of the loop at first (yielding the CPU between tries), for about one write's length,
then every millisecond; past the lock's timeout it is written anyway, on SQLite's own busy
timeout. PostgreSQL has no such lock and never comes here.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Callable, Sequence

from sparekey.domain.models import Caller, VerifyResult
from sparekey.services.verification import OtpAttempt, VerificationService
from sparekey.storage.writelock import LONGEST_WAIT_SECONDS, SPIN_SECONDS, WriteLock

__all__ = ["VerifyBatcher"]


class VerifyBatcher:
    """One per process, serving the event loop that first uses it; requests from any other loop
    (a test client's thread) verify the plain way."""

    def __init__(
        self,
        verification: VerificationService,
        lock: WriteLock | None,
        *,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._verification = verification
        self._lock = lock
        self._monotonic = monotonic
        self._loop: asyncio.AbstractEventLoop | None = None
        self._pending: list[tuple[OtpAttempt, asyncio.Future[VerifyResult]]] = []
        self._scheduled = False
        self._waiting_since = 0.0

    @property
    def pending(self) -> int:
        """Attempts waiting for the write lock."""
        return len(self._pending)

    async def verify(self, user_id: str, code: str, *, caller: Caller) -> VerifyResult:
        loop = asyncio.get_running_loop()
        if self._loop is None:
            self._loop = loop
        verification = self._verification
        if self._lock is None or loop is not self._loop:
            return verification.verify(user_id, code, caller=caller)
        # While a batch waits for the lock, a new attempt joins it: answers keep their order.
        outcome = verification.verify_or_defer(
            user_id, code, caller=caller, join=bool(self._pending)
        )
        if isinstance(outcome, VerifyResult):
            return outcome
        future: asyncio.Future[VerifyResult] = loop.create_future()
        if not self._pending:
            self._waiting_since = self._monotonic()
        self._pending.append((outcome, future))
        self._schedule(loop, 0.0)
        return await future

    def _schedule(self, loop: asyncio.AbstractEventLoop, delay: float) -> None:
        if self._scheduled:
            return
        self._scheduled = True
        if delay:
            loop.call_later(delay, self._flush)
        else:
            loop.call_soon(self._flush)

    def _flush(self) -> None:
        self._scheduled = False
        lock, loop = self._lock, self._loop
        if not self._pending or lock is None or loop is None:
            return
        waited = self._monotonic() - self._waiting_since
        taken = lock.try_acquire()
        if taken is False and waited < lock.timeout:
            if waited < SPIN_SECONDS:  # tried on every turn of the loop, as WriteLock spins
                os.sched_yield()  # let the holder (or the client) have this CPU first
                self._schedule(loop, 0.0)
            else:
                self._schedule(loop, LONGEST_WAIT_SECONDS)
            return
        batch, self._pending = self._pending, []
        try:
            results: Sequence[VerifyResult | BaseException] = self._verification.settle(
                [attempt for attempt, _ in batch]
            )
        except BaseException as exc:  # an interrupt: no request may be left waiting
            results = [exc] * len(batch)
            raise
        finally:
            if taken:
                lock.release()
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
