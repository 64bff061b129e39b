"""On SQLite, `sparekey serve` seals the audit log on its event loop, on the loop's own
connection (sparekey.api.sealing), without ever blocking the loop on another process's writer.

"Another process" holding the write lock is a second :class:`WriteLock` on the same file (``flock``
locks belong to an open file, so two opens of one file exclude each other even in one process).
"""

from __future__ import annotations

import asyncio
import time

import pytest
from fastapi.testclient import TestClient

from sparekey.api import create_app
from sparekey.api.sealing import LoopSealer
from sparekey.domain.models import Scope
from sparekey.runtime import Sparekey
from sparekey.storage.writelock import WriteLock

pytestmark = pytest.mark.parametrize("backend", ["sqlite"])


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def unsealed(sparekey: Sparekey) -> int:
    report = sparekey.audit.verify()
    assert report.ok, report
    return report.unsealed


def some_events(sparekey: Sparekey, count: int = 3) -> None:
    for n in range(count):
        sparekey.users.create(user_id=f"sealed-{n}", display_name=None, email=None)


@pytest.mark.anyio
async def test_a_round_seals_what_waits(sparekey: Sparekey) -> None:
    sparekey.db.serve_from_this_thread()
    some_events(sparekey)
    waiting = unsealed(sparekey)
    assert waiting >= 3
    sealer = LoopSealer(sparekey.audit, sparekey.db.write_lock, interval=60)
    assert await sealer.round() == waiting
    assert unsealed(sparekey) == 0
    assert await sealer.round() == 0


@pytest.mark.anyio
async def test_a_round_waits_for_another_writer_without_blocking_the_loop(
    sparekey: Sparekey, other_process: WriteLock
) -> None:
    some_events(sparekey)
    sealer = LoopSealer(sparekey.audit, sparekey.db.write_lock, interval=60)
    assert other_process.acquire()
    sealing = asyncio.create_task(sealer.round())
    turns = 0
    for _ in range(20):  # the loop keeps turning while the round waits for the lock
        await asyncio.sleep(0.005)
        turns += 1
    assert not sealing.done()
    assert unsealed(sparekey) >= 3
    other_process.release()
    assert await asyncio.wait_for(sealing, timeout=10) >= 3
    assert turns == 20
    assert unsealed(sparekey) == 0


@pytest.mark.anyio
async def test_a_round_gives_up_when_the_lock_stays_taken(
    sparekey: Sparekey, other_process: WriteLock
) -> None:
    some_events(sparekey)
    ticks = iter(range(10_000))
    assert sparekey.db.write_lock is not None
    timeout = sparekey.db.write_lock.timeout

    def fast_clock() -> float:  # each look at the clock: a tenth of the lock's timeout later
        return next(ticks) * timeout / 10

    sealer = LoopSealer(sparekey.audit, sparekey.db.write_lock, interval=60, monotonic=fast_clock)
    assert other_process.acquire()
    try:
        assert await asyncio.wait_for(sealer.round(), timeout=10) == 0
        assert unsealed(sparekey) >= 3, "nothing sealed: the next round tries again"
    finally:
        other_process.release()
    assert await sealer.round() >= 3


def test_the_served_application_seals_on_its_loop_and_once_more_at_shutdown(
    sparekey: Sparekey,
) -> None:
    token = sparekey.api_keys.create(name="sealing", scopes=[Scope.ADMIN]).token
    sparekey.audit.seal_all()
    with TestClient(create_app(sparekey, seal_interval=0.05)) as client:
        client.headers["Authorization"] = f"Bearer {token}"
        assert client.post("/v1/users", json={"id": "alice"}).status_code == 201
        deadline = time.monotonic() + 10
        while unsealed(sparekey) and time.monotonic() < deadline:
            time.sleep(0.02)
        assert unsealed(sparekey) == 0, "sealed by a round on the loop"
        for name in ("bob", "carol"):
            assert client.post("/v1/users", json={"id": name}).status_code == 201
    assert unsealed(sparekey) == 0, "and what came in last, at shutdown"


def test_without_an_interval_the_application_leaves_sealing_to_others(
    sparekey: Sparekey,
) -> None:
    token = sparekey.api_keys.create(name="sealing", scopes=[Scope.ADMIN]).token
    sparekey.audit.seal_all()
    with TestClient(create_app(sparekey)) as client:
        client.headers["Authorization"] = f"Bearer {token}"
        assert client.post("/v1/users", json={"id": "alice"}).status_code == 201
        time.sleep(0.2)
    assert unsealed(sparekey) >= 1
