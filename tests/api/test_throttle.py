"""Throttling guessable codes: backoff, suspension, and no lockout from backup codes."""

from datetime import timedelta

from fastapi.testclient import TestClient

from sparekey.domain.errors import ThrottledError
from sparekey.domain.models import VerifyResult
from sparekey.domain.ports import FixedClock
from sparekey.runtime import Sparekey
from sparekey.services.throttle import ThrottlePolicy
from tests.api.test_problems import assert_problem
from tests.helpers import assured, create_user, enroll_confirmed_totp, race, totp_code


def wrong_code(secret: str, clock: FixedClock) -> str:
    """A code that none of the window's steps produce."""
    window = {totp_code(secret, clock.now() + timedelta(seconds=30 * k)) for k in (-1, 0, 1)}
    return next(f"{n:06d}" for n in range(1_000_000) if f"{n:06d}" not in window)


def verify(client: TestClient, code: str):  # type: ignore[no-untyped-def]
    return client.post("/v1/users/alice/verify", json={"code": code})


def test_backoff_after_the_free_failures_doubles(client: TestClient, clock: FixedClock) -> None:
    create_user(client)
    secret = str(enroll_confirmed_totp(client, clock.now())["secret"])
    clock.advance(60)
    for _ in range(5):
        assert verify(client, wrong_code(secret, clock)).json() == {"verified": False}
    retry_afters = []
    for _ in range(4):
        assert verify(client, wrong_code(secret, clock)).json() == {"verified": False}
        locked = verify(client, wrong_code(secret, clock))
        assert_problem(locked, 429, "too-many-attempts")
        retry_afters.append(int(locked.headers["retry-after"]))
        clock.advance(retry_afters[-1])
    assert retry_afters == [1, 2, 4, 8]
    assert client.get("/v1/users/alice").json()["throttle"]["failures"] == 9


def test_a_locked_user_gets_no_answer_even_for_a_good_code(
    client: TestClient, clock: FixedClock
) -> None:
    create_user(client)
    secret = str(enroll_confirmed_totp(client, clock.now())["secret"])
    clock.advance(60)
    for _ in range(6):
        verify(client, wrong_code(secret, clock))
    assert_problem(verify(client, totp_code(secret, clock.now())), 429, "too-many-attempts")
    clock.advance(1)
    answer = verify(client, totp_code(secret, clock.now())).json()
    assert answer["verified"] is True, "the code was not spent while locked"
    assert client.get("/v1/users/alice").json()["throttle"]["failures"] == 0, "success resets"


def test_suspension_after_100_and_the_backup_code_still_works(
    client: TestClient, clock: FixedClock
) -> None:
    create_user(client)
    factor = enroll_confirmed_totp(client, clock.now())
    secret = str(factor["secret"])
    confirmed = assured(factor["assurance_token"])  # the confirming code was a fresh proof
    codes = client.post("/v1/users/alice/backup-codes", headers=confirmed).json()["codes"]
    for _ in range(100):
        clock.advance(900)
        assert verify(client, wrong_code(secret, clock)).status_code == 200
    clock.advance(86_400)
    suspended = verify(client, totp_code(secret, clock.now()))
    assert_problem(suspended, 429, "factors-suspended")
    assert "retry-after" not in suspended.headers
    assert client.get("/v1/users/alice").json()["throttle"]["suspended_at"] is not None

    assert verify(client, codes[0]).json()["verified"] is True, "never locked out of backup codes"
    assert client.get("/v1/users/alice").json()["throttle"]["suspended_at"] is None
    assert verify(client, totp_code(secret, clock.now())).json()["verified"] is True


def test_a_flood_of_wrong_codes_never_blocks_backup_codes(
    client: TestClient, clock: FixedClock
) -> None:
    create_user(client)
    factor = enroll_confirmed_totp(client, clock.now())
    secret = str(factor["secret"])
    confirmed = assured(factor["assurance_token"])  # the confirming code was a fresh proof
    codes = client.post("/v1/users/alice/backup-codes", headers=confirmed).json()["codes"]
    for _ in range(30):
        verify(client, wrong_code(secret, clock))
    assert verify(client, codes[1]).json()["backup_codes_remaining"] == 9


def test_an_administrator_lifts_a_suspension(
    client: TestClient, clock: FixedClock, sparekey: Sparekey
) -> None:
    create_user(client)
    secret = str(enroll_confirmed_totp(client, clock.now())["secret"])
    for _ in range(100):
        clock.advance(900)
        verify(client, wrong_code(secret, clock))
    assert client.get("/v1/users/alice").json()["throttle"]["suspended_at"] is not None
    lifted = client.post("/v1/users/alice/throttle/reset")
    assert lifted.status_code == 200
    assert lifted.json()["throttle"] == {"failures": 0, "locked_until": None, "suspended_at": None}
    clock.advance(30)
    assert verify(client, totp_code(secret, clock.now())).json()["verified"] is True


def test_parallel_guesses_get_no_more_answers_than_the_free_failures(
    client: TestClient, clock: FixedClock, sparekey: Sparekey
) -> None:
    """40 simultaneous wrong guesses: at most free + 1 get an answer, the rest are refused."""
    create_user(client)
    secret = str(enroll_confirmed_totp(client, clock.now())["secret"])
    clock.advance(60)
    guess = wrong_code(secret, clock)

    def attempt() -> VerifyResult | None:
        try:
            return sparekey.verification.verify("alice", guess)
        except ThrottledError:
            return None

    answers = race(attempt, threads=40)
    answered = [a for a in answers if a is not None]
    assert len(answers) == 40
    assert len(answered) <= ThrottlePolicy().free_failures + 1
    assert not any(a.verified for a in answered)
