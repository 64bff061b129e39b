"""One code, many simultaneous attempts: exactly one succeeds, on SQLite and PostgreSQL."""

from collections.abc import Callable
from datetime import timedelta

import pytest

from sparekey.domain.errors import ThrottledError
from sparekey.domain.models import FactorType, VerifyResult
from sparekey.domain.ports import FixedClock
from sparekey.protocols.otpauth import b32encode
from sparekey.runtime import Sparekey
from sparekey.storage import factors as factors_repo
from sparekey.storage import throttle as throttle_repo
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


def test_a_good_code_is_refused_when_a_lock_lands_between_its_read_and_its_write(
    sparekey: Sparekey, clock: FixedClock
) -> None:
    """With nothing to reset, a good code writes nothing to the user's row, but it still checks
    the row at write time: a lock another node committed in between refuses it."""
    sparekey.users.create(user_id="alice", display_name=None, email=None)
    now = clock.now()
    with sparekey.db.unit() as unit:
        state = factors_repo.verify_state(unit, "alice", now=now)
        assert state is not None
        assert state.throttle.failures == 0
        with sparekey.db.write() as conn:  # another node's guesses engaged the throttle
            throttle_repo.lock(conn, "alice", until=now + timedelta(minutes=5), suspended_at=None)
        with pytest.raises(ThrottledError):
            sparekey.throttle.succeed(unit, "alice", now=now, seen=state.throttle)


def test_a_good_code_rewrites_the_users_row_only_to_reset_a_count(
    sparekey: Sparekey, clock: FixedClock
) -> None:
    if not sparekey.db.is_sqlite:
        pytest.skip("counts row updates with a SQLite trigger")
    sparekey.users.create(user_id="alice", display_name=None, email=None)
    enrollment = sparekey.factors.enroll("alice", type=FactorType.TOTP)
    secret = b32encode(enrollment.secret)
    sparekey.factors.confirm("alice", enrollment.factor.id, code=totp_code(secret, clock.now()))
    with sparekey.db.write() as conn:
        conn.exec_driver_sql("CREATE TABLE user_updates (id TEXT)")
        conn.exec_driver_sql(
            "CREATE TRIGGER count_user_updates AFTER UPDATE ON users "
            "BEGIN INSERT INTO user_updates VALUES (new.id); END"
        )

    def updates() -> int:
        with sparekey.db.read() as conn:
            return int(conn.exec_driver_sql("SELECT count(*) FROM user_updates").scalar_one())

    clock.advance(30)
    assert sparekey.verification.verify("alice", totp_code(secret, clock.now())).verified
    assert updates() == 0, "nothing to reset: the row is not rewritten"
    assert not sparekey.verification.verify("alice", "000000").verified  # counted: one update
    assert updates() == 1
    clock.advance(30)
    assert sparekey.verification.verify("alice", totp_code(secret, clock.now())).verified
    assert updates() == 2, "the count is reset"
    with sparekey.db.read() as conn:
        state = factors_repo.verify_state(conn, "alice", now=clock.now())
    assert state is not None
    assert state.throttle.failures == 0
