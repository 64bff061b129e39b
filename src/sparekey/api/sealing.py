"""On SQLite, ``sparekey serve`` seals the audit log on its event loop, not in a thread of its own.

SQLite discards a connection's page cache whenever it finds that another connection has committed
(see :meth:`~sparekey.storage.database.Database.serve_from_this_thread`). A sealer thread commits
on a connection of its own every round, so each round would empty the cache of the connection the
loop verifies on; with a million users, whose verifications read pages scattered over a few
hundred megabytes, that cache never grew back between two rounds and nearly every lookup went to
the file. Sealed on the loop, the rounds commit on the loop's own connection, as verifications do.

A round takes the write lock only if it is free at that instant (as the verification batcher
does), so the loop never waits for another process's writer; otherwise it tries again shortly.
PostgreSQL keeps :class:`~sparekey.services.audit.Sealer`, in a thread.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

from sparekey.services.audit import Auditor
from sparekey.storage.writelock import LONGEST_WAIT_SECONDS, WriteLock

__all__ = ["LoopSealer"]

log = logging.getLogger(__name__)


class LoopSealer:
    """Seals every ``interval`` seconds on the running event loop (start with :meth:`run`)."""

    def __init__(
        self,
        auditor: Auditor,
        lock: WriteLock | None,
        *,
        interval: float,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._auditor = auditor
        self._lock = lock
        self._interval = interval
        self._monotonic = monotonic

    async def run(self) -> None:
        """Seal a round every interval until cancelled."""
        while True:
            await asyncio.sleep(self._interval)
            await self.round()

    async def round(self) -> int:
        """Seal what is waiting, once the write lock is free; the records sealed. Gives up for
        this round if the lock stays taken past its timeout (the next round tries again)."""
        lock = self._lock
        taken: bool | None = None
        if lock is not None:
            deadline = self._monotonic() + lock.timeout
            while (taken := lock.try_acquire()) is False:
                if self._monotonic() >= deadline:
                    return 0
                await asyncio.sleep(LONGEST_WAIT_SECONDS)
        try:
            return self._auditor.seal_all()
        except Exception:  # the next round retries; a server must not stop over it
            log.exception("sealing the audit log failed")
            return 0
        finally:
            if taken:
                assert lock is not None
                lock.release()
