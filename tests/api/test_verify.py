"""Verification: windows, replay, drift, HOTP look-ahead and resync, backup codes."""

from datetime import timedelta

from fastapi.testclient import TestClient

from sparekey.domain.ports import FixedClock
from tests.api.test_problems import assert_problem
from tests.helpers import create_user, enroll, enroll_confirmed_totp, hotp_code, totp_code


def verify(client: TestClient, code: str, user: str = "alice") -> dict[str, object]:
    response = client.post(f"/v1/users/{user}/verify", json={"code": code})
    assert response.status_code == 200, response.text
    return dict(response.json())


def test_a_code_is_accepted_once(client: TestClient, clock: FixedClock) -> None:
    create_user(client)
    factor = enroll_confirmed_totp(client, clock.now())
    clock.advance(30)
    code = totp_code(str(factor["secret"]), clock.now())
    assert verify(client, code)["verified"] is True
    assert verify(client, code) == {"verified": False}
    clock.advance(29)
    assert verify(client, code) == {"verified": False}


def test_window_is_one_step_either_side(client: TestClient, clock: FixedClock) -> None:
    create_user(client, "alice")
    create_user(client, "bob")
    alice = str(enroll_confirmed_totp(client, clock.now(), "alice")["secret"])
    bob = str(enroll_confirmed_totp(client, clock.now(), "bob")["secret"])
    clock.advance(300)
    now, step = clock.now(), timedelta(seconds=30)
    assert verify(client, totp_code(alice, now - 2 * step)) == {"verified": False}
    assert verify(client, totp_code(alice, now + 2 * step)) == {"verified": False}
    assert verify(client, totp_code(alice, now - step))["verified"] is True
    assert verify(client, totp_code(bob, now + step), user="bob")["verified"] is True


def test_drift_is_recorded_and_followed(client: TestClient, clock: FixedClock) -> None:
    create_user(client)
    factor = enroll_confirmed_totp(client, clock.now())
    secret = str(factor["secret"])
    fast = timedelta(seconds=30)  # the phone's clock runs one step ahead
    clock.advance(60)
    assert verify(client, totp_code(secret, clock.now() + fast))["verified"] is True
    assert client.get(f"/v1/users/alice/factors/{factor['id']}").json()["drift"] == 1
    clock.advance(60)
    assert verify(client, totp_code(secret, clock.now() + 2 * fast))["verified"] is True
    assert client.get(f"/v1/users/alice/factors/{factor['id']}").json()["drift"] == 2


def test_a_wrong_code_is_not_verified(client: TestClient, clock: FixedClock) -> None:
    create_user(client)
    factor = enroll_confirmed_totp(client, clock.now())
    clock.advance(30)
    good = totp_code(str(factor["secret"]), clock.now())
    wrong = f"{(int(good) + 1) % 1_000_000:06d}"
    assert verify(client, wrong) == {"verified": False}
    assert verify(client, "not a code") == {"verified": False}
    assert verify(client, "9" * 200) == {"verified": False}


def test_user_without_factors_is_never_verified(client: TestClient) -> None:
    create_user(client)
    assert verify(client, "123456") == {"verified": False}
    assert verify(client, "AAAA-BBBB-CCCC-DDDD") == {"verified": False}


def test_hotp_look_ahead_and_no_going_back(client: TestClient) -> None:
    create_user(client)
    factor = enroll(client, type="hotp")
    secret = str(factor["secret"])
    client.post(
        f"/v1/users/alice/factors/{factor['id']}/confirm", json={"code": hotp_code(secret, 0)}
    )
    assert verify(client, hotp_code(secret, 5))["verified"] is True  # pressed the button 4 times
    assert verify(client, hotp_code(secret, 3)) == {"verified": False}, "older counters are spent"
    assert verify(client, hotp_code(secret, 6))["verified"] is True
    assert verify(client, hotp_code(secret, 6 + 11)) == {"verified": False}, "beyond the window"


def test_hotp_resync_from_two_consecutive_codes(client: TestClient) -> None:
    create_user(client)
    factor = enroll(client, type="hotp")
    secret = str(factor["secret"])
    url = f"/v1/users/alice/factors/{factor['id']}"
    client.post(f"{url}/confirm", json={"code": hotp_code(secret, 0)})
    assert verify(client, hotp_code(secret, 50)) == {"verified": False}
    assert_problem(
        client.post(
            f"{url}/resync", json={"codes": [hotp_code(secret, 50), hotp_code(secret, 52)]}
        ),
        422,
        "code-rejected",
    )
    response = client.post(
        f"{url}/resync", json={"codes": [hotp_code(secret, 50), hotp_code(secret, 51)]}
    )
    assert response.status_code == 200
    assert verify(client, hotp_code(secret, 51)) == {"verified": False}, "resync codes are spent"
    assert verify(client, hotp_code(secret, 52))["verified"] is True
    again = client.post(
        f"{url}/resync", json={"codes": [hotp_code(secret, 50), hotp_code(secret, 51)]}
    )
    assert_problem(again, 422, "code-rejected")


def test_totp_resync_after_a_long_clock_error(client: TestClient, clock: FixedClock) -> None:
    create_user(client)
    factor = enroll_confirmed_totp(client, clock.now())
    secret = str(factor["secret"])
    url = f"/v1/users/alice/factors/{factor['id']}"
    ahead = timedelta(minutes=10)  # the phone's clock has run ten minutes fast since enrollment
    clock.advance(60)
    phone = clock.now() + ahead
    assert verify(client, totp_code(secret, phone)) == {"verified": False}
    codes = [totp_code(secret, phone), totp_code(secret, phone + timedelta(seconds=30))]
    resynced = client.post(f"{url}/resync", json={"codes": codes})
    assert resynced.status_code == 200
    assert resynced.json()["drift"] == 21
    clock.advance(60)
    assert verify(client, totp_code(secret, clock.now() + ahead))["verified"] is True


def test_resync_cannot_go_back_to_steps_already_used(client: TestClient, clock: FixedClock) -> None:
    create_user(client)
    factor = enroll_confirmed_totp(client, clock.now())
    secret = str(factor["secret"])
    clock.advance(60)
    past = clock.now() - timedelta(minutes=10)
    codes = [totp_code(secret, past), totp_code(secret, past + timedelta(seconds=30))]
    response = client.post(f"/v1/users/alice/factors/{factor['id']}/resync", json={"codes": codes})
    assert_problem(response, 422, "code-rejected")


def test_resync_requires_an_active_factor(client: TestClient) -> None:
    create_user(client)
    factor = enroll(client, type="hotp")
    response = client.post(
        f"/v1/users/alice/factors/{factor['id']}/resync", json={"codes": ["123456", "654321"]}
    )
    assert_problem(response, 409, "factor-state")


def test_backup_codes_single_use_any_format_with_remaining_count(client: TestClient) -> None:
    create_user(client)
    response = client.post("/v1/users/alice/backup-codes")
    assert response.status_code == 201
    codes = response.json()["codes"]
    assert len(codes) == 10 == len(set(codes))
    first, second = codes[0], codes[1]
    answer = verify(client, first.lower().replace("-", " "))
    assert str(answer.pop("assurance_token")).startswith("sat1."), "a backup code steps up too"
    assert answer == {"verified": True, "factor_type": "backup_code", "backup_codes_remaining": 9}
    assert verify(client, first) == {"verified": False}
    assert verify(client, second.replace("-", ""))["backup_codes_remaining"] == 8


def test_regenerating_replaces_the_whole_set(client: TestClient) -> None:
    create_user(client)
    old = client.post("/v1/users/alice/backup-codes").json()["codes"]
    new = client.post("/v1/users/alice/backup-codes").json()["codes"]
    assert not set(old) & set(new)
    assert verify(client, old[0]) == {"verified": False}
    assert verify(client, new[0])["backup_codes_remaining"] == 9


def test_one_users_backup_code_does_not_work_for_another(client: TestClient) -> None:
    create_user(client, "alice")
    create_user(client, "bob")
    codes = client.post("/v1/users/alice/backup-codes").json()["codes"]
    assert verify(client, codes[0], user="bob") == {"verified": False}
    assert verify(client, codes[0], user="alice")["verified"] is True


def test_totp_success_reports_backup_codes_left(client: TestClient, clock: FixedClock) -> None:
    create_user(client)
    client.post("/v1/users/alice/backup-codes")
    factor = enroll_confirmed_totp(client, clock.now())
    clock.advance(30)
    answer = verify(client, totp_code(str(factor["secret"]), clock.now()))
    assert answer["backup_codes_remaining"] == 10


def test_metrics_count_verifications(client: TestClient, clock: FixedClock) -> None:
    create_user(client)
    client.post("/v1/users/alice/backup-codes")
    verify(client, "123456")
    text = client.get("/metrics").text
    assert 'sparekey_verifications_total{factor_type="none",result="failure"} 1.0' in text
    assert "sparekey_verify_duration_seconds_bucket" in text
