from fastapi.testclient import TestClient

from sparekey.domain.ports import FixedClock
from tests.helpers import create_user, enroll_confirmed_totp, totp_code


def test_enroll_confirm_verify(client: TestClient, clock: FixedClock) -> None:
    create_user(client)
    factor = enroll_confirmed_totp(client, clock.now())
    clock.advance(30)
    code = totp_code(str(factor["secret"]), clock.now())
    r = client.post("/v1/users/alice/verify", json={"code": code})
    assert r.json() == {"verified": True, "factor_id": factor["id"], "factor_type": "totp", "backup_codes_remaining": 0}
