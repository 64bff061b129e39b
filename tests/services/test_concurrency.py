"""One code, many simultaneous attempts: exactly one succeeds, on SQLite and PostgreSQL."""

from collections.abc import Callable
from datetime import timedelta

from sparekey.domain.errors import ThrottledError
from sparekey.domain.models import FactorType, VerifyResult
from sparekey.domain.ports import FixedClock
from sparekey.protocols.otpauth import b32encode
from sparekey.runtime import Sparekey
from tests.helpers import race as parallel
from tests.helpers import totp_code

THREADS = 20


def race(attempt: Callable[[], VerifyResult]) -> list[VerifyResult]:
    def counted() -> VerifyResult:
        try:
            return attempt()
        except ThrottledError:  # replays count as wrong codes, and enough of them lock
            return VerifyResult(verified=False)

    return parallel(counted, threads=THREADS)


def test_one_totp_code_from_twenty_threads_verifies_once(
    sparekey: Sparekey, clock: FixedClock
) -> None:
    sparekey.users.create(user_id="alice", display_name=None, email=None)
    enrollment = sparekey.factors.enroll("alice", type=FactorType.TOTP)
    secret = b32encode(enrollment.secret)
    sparekey.factors.confirm("alice", enrollment.factor.id, code=totp_code(secret, clock.now()))
    clock.advance(30)
    code = totp_code(secret, clock.now())
    results = race(lambda: sparekey.verification.verify("alice", code))
    assert sum(r.verified for r in results) == 1
    assert len(results) == THREADS
    clock.advance(timedelta(seconds=1).total_seconds())
    assert not sparekey.verification.verify("alice", code).verified


def test_one_backup_code_from_twenty_threads_is_spent_once(sparekey: Sparekey) -> None:
    sparekey.users.create(user_id="alice", display_name=None, email=None)
    code = sparekey.backup_codes.regenerate("alice").codes[0]
    results = race(lambda: sparekey.verification.verify("alice", code))
    winners = [r for r in results if r.verified]
    assert len(winners) == 1
    assert winners[0].backup_codes_remaining == 9
