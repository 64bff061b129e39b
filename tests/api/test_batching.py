"""On SQLite, verifications that find the write lock taken wait for it together, without blocking
the event loop, and are written in one transaction (sparekey.api.batching).

"Another process" holding the lock is a second :class:`WriteLock` on the same file: ``flock``
locks belong to an open file, so two opens of one file exclude each other even in one process.
Codes come from oathtool, an independent HOTP implementation.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Sequence
from datetime import timedelta

import pytest

from sparekey.api.batching import VerifyBatcher
from sparekey.domain.errors import ThrottledError
from sparekey.domain.models import SYSTEM, FactorType, VerifyResult
from sparekey.domain.ports import FixedClock
from sparekey.protocols.otpauth import b32encode
from sparekey.runtime import Sparekey
from sparekey.services.verification import OtpAttempt
from sparekey.storage import throttle as throttle_repo
from sparekey.storage.writelock import WriteLock
from tests.helpers import hotp_code

pytestmark = [pytest.mark.anyio, pytest.mark.parametrize("backend", ["sqlite"])]


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def enroll_hotp(sparekey: Sparekey, user_id: str, *, new_user: bool = True) -> str:
    """A user with a confirmed HOTP factor (counter 0 spent); returns the base32 secret."""
    if new_user:
        sparekey.users.create(user_id=user_id, display_name=None, email=None)
    enrollment = sparekey.factors.enroll(user_id, type=FactorType.HOTP)
    secret = b32encode(enrollment.secret)
    sparekey.factors.confirm(user_id, enrollment.factor.id, code=hotp_code(secret, 0))
    return secret


class Batches:
    """The sizes of the batches the service was asked to write."""

    def __init__(self, sparekey: Sparekey) -> None:
        self.sizes: list[int] = []
        settle = sparekey.verification.settle

        def counted(attempts: Sequence[OtpAttempt]) -> list[VerifyResult | Exception]:
            self.sizes.append(len(attempts))
            return settle(attempts)

        sparekey.verification.settle = counted  # type: ignore[method-assign]


def events(sparekey: Sparekey, user_id: str) -> list[str]:
    records = sparekey.audit.query(user_id=user_id, oldest_first=True).records
    return [r.event for r in records if r.event.startswith("verify.")]


async def spin(turns: int = 50) -> int:
    """Turns of the event loop that other coroutines get; all of them if the loop is free."""
    done = 0
    for _ in range(turns):
        await asyncio.sleep(0)
        done += 1
    return done


async def test_attempts_wait_for_a_taken_lock_without_blocking_the_loop_and_commit_together(
    sparekey: Sparekey, other_process: WriteLock
) -> None:
    alice, bob, carol = (enroll_hotp(sparekey, name) for name in ("alice", "bob", "carol"))
    batcher = VerifyBatcher(sparekey.verification, sparekey.db.write_lock)
    batches = Batches(sparekey)
    assert other_process.acquire()
    asked = [
        ("alice", hotp_code(alice, 1)),
        ("bob", hotp_code(bob, 1)),
        ("alice", hotp_code(alice, 1)),  # the same code again, in the same batch
        ("carol", "000000" if hotp_code(carol, 1) != "000000" else "111111"),
    ]
    tasks = [asyncio.create_task(batcher.verify(user, code, caller=SYSTEM)) for user, code in asked]
    assert await spin() == 50, "the loop keeps turning while they wait"
    assert batcher.pending == 4
    assert not any(task.done() for task in tasks)
    assert events(sparekey, "alice") == [], "nothing is written while the lock is taken"
    other_process.release()
    results = await asyncio.gather(*tasks)
    assert [r.verified for r in results] == [True, True, False, False]
    assert results[0].assurance_token
    assert results[1].assurance_token
    assert batches.sizes == [4], "one transaction for all four"
    assert events(sparekey, "alice") == ["verify.succeeded", "verify.failed"]
    assert events(sparekey, "bob") == ["verify.succeeded"]
    assert events(sparekey, "carol") == ["verify.failed"]
    assert batcher.pending == 0


async def test_with_the_lock_free_a_code_is_written_at_once(sparekey: Sparekey) -> None:
    alice = enroll_hotp(sparekey, "alice")
    batcher = VerifyBatcher(sparekey.verification, sparekey.db.write_lock)
    batches = Batches(sparekey)
    result = await batcher.verify("alice", hotp_code(alice, 1), caller=SYSTEM)
    assert result.verified
    assert result.assurance_token
    assert batches.sizes == [], "no batch: the request wrote its own outcome"
    assert events(sparekey, "alice") == ["verify.succeeded"]


async def test_one_attempts_error_is_its_own_and_the_rest_of_its_batch_is_written_once(
    sparekey: Sparekey, other_process: WriteLock, clock: FixedClock
) -> None:
    """A lock engaged on bob after his code was checked refuses bob's code when it is written;
    the batch is written again attempt by attempt, so alice's code is still accepted, once."""
    alice, bob = enroll_hotp(sparekey, "alice"), enroll_hotp(sparekey, "bob")
    batcher = VerifyBatcher(sparekey.verification, sparekey.db.write_lock)
    counted: list[tuple[str, str]] = []
    sparekey.audit.listen(lambda event, outcome: counted.append((event, outcome)))
    assert other_process.acquire()
    first = asyncio.create_task(batcher.verify("alice", hotp_code(alice, 1), caller=SYSTEM))
    second = asyncio.create_task(batcher.verify("bob", hotp_code(bob, 1), caller=SYSTEM))
    await spin()
    assert batcher.pending == 2
    other_process.release()
    with sparekey.db.write() as conn:  # the other process's write: guesses at bob's codes
        until = clock.now() + timedelta(minutes=5)
        throttle_repo.lock(conn, "bob", until=until, suspended_at=None)
    assert (await first).verified
    with pytest.raises(ThrottledError):
        await second
    assert events(sparekey, "alice") == ["verify.succeeded"]
    assert events(sparekey, "bob") == []
    assert counted == [("verify.succeeded", "success")], "counted once, when it was committed"
    assert not (await batcher.verify("alice", hotp_code(alice, 1), caller=SYSTEM)).verified


async def test_a_lock_held_past_its_timeout_no_longer_holds_the_batch_back(
    sparekey: Sparekey,
) -> None:
    """Past the lock's timeout the batch goes on to SQLite's own lock, as a plain writer does
    (here SQLite's lock is free: only the lock file is held, by a writer that hung)."""
    alice = enroll_hotp(sparekey, "alice")
    assert sparekey.db.write_lock is not None
    short = WriteLock(sparekey.db.write_lock.path, timeout=0.05)
    hung = WriteLock(sparekey.db.write_lock.path, timeout=0.05)
    assert hung.acquire()
    try:
        batcher = VerifyBatcher(sparekey.verification, short)
        result = await asyncio.wait_for(
            batcher.verify("alice", hotp_code(alice, 1), caller=SYSTEM), timeout=5
        )
        assert result.verified
    finally:
        hung.release()
        hung.close()
        short.close()


async def test_a_request_waiting_in_a_batch_that_is_cancelled_still_has_its_code_written(
    sparekey: Sparekey, other_process: WriteLock
) -> None:
    """A client that leaves does not unspend its code: the attempt was checked and is written."""
    alice = enroll_hotp(sparekey, "alice")
    batcher = VerifyBatcher(sparekey.verification, sparekey.db.write_lock)
    assert other_process.acquire()
    task = asyncio.create_task(batcher.verify("alice", hotp_code(alice, 1), caller=SYSTEM))
    await spin()
    task.cancel()
    other_process.release()
    with pytest.raises(asyncio.CancelledError):
        await task
    for _ in range(500):
        if not batcher.pending:
            break
        await asyncio.sleep(0.001)
    assert batcher.pending == 0
    assert events(sparekey, "alice") == ["verify.succeeded"]


async def test_a_backup_code_while_a_batch_waits_is_verified_the_plain_way(
    sparekey: Sparekey, other_process: WriteLock
) -> None:
    sparekey.users.create(user_id="alice", display_name=None, email=None)
    backup = sparekey.backup_codes.regenerate("alice").codes[0]  # before a factor: no step-up
    alice = enroll_hotp(sparekey, "alice", new_user=False)
    batcher = VerifyBatcher(sparekey.verification, sparekey.db.write_lock)
    assert other_process.acquire()
    waiting = asyncio.create_task(batcher.verify("alice", hotp_code(alice, 1), caller=SYSTEM))
    await spin()
    release = threading.Timer(0.05, other_process.release)  # it waits for the lock, blocking
    release.start()
    try:
        spent = await batcher.verify("alice", backup, caller=SYSTEM)
    finally:
        release.join()
    assert spent.verified
    assert spent.factor_type == "backup_code"
    assert (await waiting).verified
