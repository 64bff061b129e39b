"""Every algorithm, digit count and period, enrolled over the API, verified with oathtool."""

from datetime import timedelta

import pytest
from fastapi.testclient import TestClient

from sparekey.domain.ports import FixedClock
from tests.helpers import create_user, enroll, hotp_code, totp_code

ALGORITHMS = ["SHA1", "SHA256", "SHA512"]
DIGITS = [6, 7, 8]


@pytest.mark.parametrize("period", [30, 60, 45])
@pytest.mark.parametrize("digits", DIGITS)
@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_totp(
    client: TestClient, clock: FixedClock, algorithm: str, digits: int, period: int
) -> None:
    create_user(client)
    factor = enroll(client, algorithm=algorithm, digits=digits, period=period)
    secret = str(factor["secret"])

    def code_at(offset: int) -> str:
        at = clock.now() + timedelta(seconds=offset)
        return totp_code(secret, at, algorithm=algorithm, digits=digits, period=period)

    confirm = client.post(
        f"/v1/users/alice/factors/{factor['id']}/confirm", json={"code": code_at(0)}
    )
    assert confirm.status_code == 200, confirm.text
    clock.advance(period)
    answer = client.post("/v1/users/alice/verify", json={"code": code_at(0)}).json()
    assert answer["verified"] is True
    assert answer["factor_id"] == factor["id"]
    replay = client.post("/v1/users/alice/verify", json={"code": code_at(0)}).json()
    assert replay == {"verified": False}


@pytest.mark.parametrize("digits", DIGITS)
@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_hotp(client: TestClient, algorithm: str, digits: int) -> None:
    create_user(client)
    factor = enroll(client, type="hotp", algorithm=algorithm, digits=digits)
    secret = str(factor["secret"])
    confirm = client.post(
        f"/v1/users/alice/factors/{factor['id']}/confirm",
        json={"code": hotp_code(secret, 0, algorithm=algorithm, digits=digits)},
    )
    assert confirm.status_code == 200, confirm.text
    for counter in (1, 2, 7):
        code = hotp_code(secret, counter, algorithm=algorithm, digits=digits)
        answer = client.post("/v1/users/alice/verify", json={"code": code}).json()
        assert answer["verified"] is True, counter
    stale = hotp_code(secret, 2, algorithm=algorithm, digits=digits)
    assert client.post("/v1/users/alice/verify", json={"code": stale}).json() == {"verified": False}
