"""What docs/security.md claims of codes sent by SMS, of WebAuthn challenges and of operators'
tokens, each shown here (NIST SP 800-63B-4 sections 3.1.3.2 and 3.1.6.2; OWASP ASVS 5.0 6.5.5,
6.7.2 and 8.2.1)."""

from __future__ import annotations

import base64
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from sparekey.domain.models import OperatorRole
from sparekey.domain.ports import FixedClock
from sparekey.runtime import Sparekey
from sparekey.settings import Settings, load_settings
from tests.api.test_fallback import enroll_sms, sms_codes, verify
from tests.api.test_problems import assert_problem
from tests.helpers import create_user, enroll_confirmed_totp
from tests.helpers_delivery import Provider, twilio_api, twilio_settings


@pytest.fixture
def sms() -> Iterator[Provider]:
    with Provider(twilio_api()) as provider:
        yield provider


@pytest.fixture
def settings(tmp_path: Path, database_url: str, sms: Provider) -> Settings:
    """SMS through a loopback server speaking Twilio's API; the default policy (fallback only)."""
    return load_settings(
        tmp_path / "data",
        database_url=database_url,
        public_url="https://example.com",
        **twilio_settings(sms),
    )


def _wrong(right: str) -> str:
    return "000000" if right != "000000" else "111111"


def test_a_new_code_does_not_reset_the_failure_count(client: TestClient, sms: Provider) -> None:
    """Asking for another code is free for the attacker too: it must not buy more guesses."""
    create_user(client)
    factor_id = enroll_sms(client, sms)
    assert client.post(f"/v1/users/alice/factors/{factor_id}/send").status_code == 200
    for _ in range(5):  # the free failures
        assert verify(client, _wrong(sms_codes(sms)[-1])) == {"verified": False}
    assert client.post(f"/v1/users/alice/factors/{factor_id}/send").status_code == 200
    assert client.get("/v1/users/alice").json()["throttle"]["failures"] == 5
    assert verify(client, _wrong(sms_codes(sms)[-1])) == {"verified": False}
    locked = client.post("/v1/users/alice/verify", json={"code": sms_codes(sms)[-1]})
    assert_problem(locked, 429, "too-many-attempts")


def test_a_texted_code_lives_ten_minutes(
    client: TestClient, sms: Provider, clock: FixedClock
) -> None:
    create_user(client)
    factor_id = enroll_sms(client, sms)
    assert client.post(f"/v1/users/alice/factors/{factor_id}/send").status_code == 200
    clock.advance(599)
    assert verify(client, sms_codes(sms)[-1])["verified"] is True
    assert client.post(f"/v1/users/alice/factors/{factor_id}/send").status_code == 200
    clock.advance(600)
    assert verify(client, sms_codes(sms)[-1]) == {"verified": False}


def _challenge(answer: dict[str, object]) -> bytes:
    options = answer["options"]
    assert isinstance(options, dict)
    text = str(options["challenge"])
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def test_webauthn_challenges_are_fresh_256_bit_values(client: TestClient) -> None:
    """At least 64 bits and statistically unique, as both standards ask; here 256 random bits,
    a new one for every ceremony, registration or sign-in."""
    create_user(client)
    challenges = [
        _challenge(client.post("/v1/users/alice/webauthn/registrations").json()) for _ in range(5)
    ]
    challenges += [  # passkey sign-ins: no user named, so no credential needed here
        _challenge(client.post("/v1/webauthn/authentications", json={}).json()) for _ in range(5)
    ]
    assert all(len(c) == 32 for c in challenges)
    assert len(set(challenges)) == len(challenges)


def test_only_an_admin_operator_may_override_step_up(
    client: TestClient, sparekey: Sparekey, clock: FixedClock
) -> None:
    """Operators' personal tokens carry the admin scope. A helpdesk operator overriding step-up
    would add a factor to anyone's account with no recovery case, so only admins may."""
    create_user(client)
    factor = enroll_confirmed_totp(client, clock.now())
    override = {"Sparekey-Assurance": "override", "Sparekey-Override-Reason": "caller said so"}
    for role in (OperatorRole.HELPDESK, OperatorRole.AUDITOR):
        token = sparekey.operators.create(f"op-{role.value}", role=role).token
        headers = {"Authorization": f"Bearer {token}", **override}
        added = client.post("/v1/users/alice/factors", json={"type": "totp"}, headers=headers)
        assert_problem(added, 403, "forbidden")
        forced = client.delete(
            f"/v1/users/alice/factors/{factor['id']}?force=true",
            headers={"Authorization": f"Bearer {token}"},
        )
        assert_problem(forced, 403, "forbidden")
    assert [f["id"] for f in client.get("/v1/users/alice/factors").json()["factors"]] == [
        factor["id"]
    ]
    admin = sparekey.operators.create("ada", role=OperatorRole.ADMIN).token
    headers = {"Authorization": f"Bearer {admin}", **override}
    added = client.post("/v1/users/alice/factors", json={"type": "totp"}, headers=headers)
    assert added.status_code == 201, added.text
    [record] = [r for r in sparekey.audit.export() if r.event == "assurance.overridden"]
    assert record.actor_type == "operator"
