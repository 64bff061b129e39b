"""Step-up over the API: sensitive changes need a fresh verification's assurance token while the
user has an active factor; administrators may override (audited); the last factor is kept."""

from __future__ import annotations

from typing import Any

import pytest
from fastapi.testclient import TestClient

from sparekey.domain.models import Scope
from sparekey.domain.ports import FixedClock
from sparekey.runtime import Sparekey
from tests.api.test_problems import assert_problem
from tests.api.test_webauthn import ORIGIN, register, sign_in
from tests.helpers import (
    ASSURANCE,
    OVERRIDE,
    assured,
    create_user,
    enroll,
    enroll_confirmed_totp,
    step_up,
    totp_code,
)
from tests.softauthn import SoftAuthenticator


def alice_with_totp(client: TestClient, clock: FixedClock) -> dict[str, object]:
    """Alice with one active TOTP factor; the clock moved on so that a fresh code works."""
    create_user(client)
    factor = enroll_confirmed_totp(client, clock.now())
    clock.advance(30)
    return factor


def fresh_code(factor: dict[str, object], clock: FixedClock) -> str:
    return totp_code(str(factor["secret"]), clock.now())


def sensitive_calls(
    client: TestClient, factor_id: object, headers: dict[str, str] | None
) -> dict[str, Any]:
    """Every sensitive change once (the removal is of ``factor_id``)."""
    return {
        "enroll": client.post("/v1/users/alice/factors", json={"type": "totp"}, headers=headers),
        "webauthn": client.post("/v1/users/alice/webauthn/registrations", headers=headers),
        "backup codes": client.post("/v1/users/alice/backup-codes", headers=headers),
        "remove": client.delete(f"/v1/users/alice/factors/{factor_id}", headers=headers),
    }


def test_a_user_with_no_factor_enrolls_freely(client: TestClient, clock: FixedClock) -> None:
    create_user(client)
    assert client.post("/v1/users/alice/backup-codes").status_code == 201
    factor = enroll_confirmed_totp(client, clock.now())  # no header at all
    assert client.get(f"/v1/users/alice/factors/{factor['id']}").json()["status"] == "active"
    key = SoftAuthenticator()
    create_user(client, "bob")
    assert register(client, key, "bob").status_code == 201


def test_with_an_active_factor_every_sensitive_change_needs_a_token(
    client: TestClient, clock: FixedClock, sparekey: Sparekey
) -> None:
    factor = alice_with_totp(client, clock)
    for what, answer in sensitive_calls(client, factor["id"], None).items():
        body = assert_problem(answer, 403, "assurance-required")
        assert "Sparekey-Assurance" in str(body["detail"]), what
    assert [f["id"] for f in client.get("/v1/users/alice/factors").json()["factors"]] == [
        factor["id"]
    ], "nothing was added or removed"
    assert not [r for r in sparekey.audit.export() if r.event == "backup_codes.generated"]


def test_a_pending_factor_is_confirmed_with_a_token_too(
    client: TestClient, clock: FixedClock
) -> None:
    first = alice_with_totp(client, clock)
    headers = step_up(client, fresh_code(first, clock))
    spare = enroll(client, headers=headers)
    code = totp_code(str(spare["secret"]), clock.now())
    path = f"/v1/users/alice/factors/{spare['id']}/confirm"
    assert_problem(client.post(path, json={"code": code}), 403, "assurance-required")
    assert_problem(client.post(path, json={"code": "000000"}), 403, "assurance-required")
    confirmed = client.post(path, json={"code": code}, headers=headers)
    assert confirmed.status_code == 200, confirmed.text
    assert confirmed.json()["status"] == "active"


def test_a_token_from_verify_allows_every_sensitive_change(
    client: TestClient, clock: FixedClock
) -> None:
    first = alice_with_totp(client, clock)
    answer = client.post("/v1/users/alice/verify", json={"code": fresh_code(first, clock)}).json()
    assert answer["verified"] is True
    headers = assured(answer["assurance_token"])
    spare = enroll_confirmed_totp(client, clock.now(), headers=headers)
    made = sensitive_calls(client, spare["id"], headers)
    assert {what: r.status_code for what, r in made.items()} == {
        "enroll": 201,
        "webauthn": 200,
        "backup codes": 201,
        "remove": 204,
    }
    again = client.post("/v1/users/alice/backup-codes", headers=headers)
    assert again.status_code == 201, "a token is good for its whole lifetime, not once"


def test_confirming_a_first_factor_steps_the_user_up(client: TestClient, clock: FixedClock) -> None:
    """The confirming code is a fresh verification: backup codes right after a first enrollment
    need no second code (whose TOTP step would be 30 s away)."""
    create_user(client)
    factor = enroll_confirmed_totp(client, clock.now())
    made = client.post("/v1/users/alice/backup-codes", headers=assured(factor["assurance_token"]))
    assert made.status_code == 201, made.text


def test_an_expired_token_is_refused(client: TestClient, clock: FixedClock) -> None:
    first = alice_with_totp(client, clock)
    headers = step_up(client, fresh_code(first, clock))
    clock.advance(299)
    assert client.post("/v1/users/alice/backup-codes", headers=headers).status_code == 201
    clock.advance(1)
    body = assert_problem(
        client.post("/v1/users/alice/backup-codes", headers=headers), 403, "assurance-required"
    )
    assert "expired" in str(body["detail"])


def test_a_token_for_another_user_is_refused(client: TestClient, clock: FixedClock) -> None:
    first = alice_with_totp(client, clock)
    create_user(client, "bob")
    bobs = enroll_confirmed_totp(client, clock.now(), "bob")
    clock.advance(30)
    bob_stepped_up = step_up(client, fresh_code(bobs, clock), "bob")
    answer = client.delete(f"/v1/users/alice/factors/{first['id']}", headers=bob_stepped_up)
    body = assert_problem(answer, 403, "assurance-required")
    assert "another user" in str(body["detail"])
    made = client.post("/v1/users/alice/backup-codes", headers=bob_stepped_up)
    assert_problem(made, 403, "assurance-required")


@pytest.mark.parametrize(
    "tamper",
    [
        lambda t: t[:-1] + ("A" if t[-1] != "A" else "B"),
        lambda t: t.replace("sat1.", "sat1.9", 1),
        lambda t: t.split(".")[0] + "." + t.split(".")[1] + ".e30." + t.split(".")[3],
        lambda t: t[: len(t) // 2],
        lambda t: "override-please",
    ],
    ids=["mac", "key id", "payload", "truncated", "nonsense"],
)
def test_a_tampered_token_is_refused(client: TestClient, clock: FixedClock, tamper: Any) -> None:
    first = alice_with_totp(client, clock)
    token = step_up(client, fresh_code(first, clock))[ASSURANCE]
    made = client.post("/v1/users/alice/backup-codes", headers=assured(tamper(token)))
    body = assert_problem(made, 403, "assurance-required")
    assert "not valid" in str(body["detail"])


def test_an_enroll_token_only_adds_a_factor(
    client: TestClient, clock: FixedClock, sparekey: Sparekey
) -> None:
    """What a redeemed temporary access pass gives: enough to add a factor, nothing more."""
    first = alice_with_totp(client, clock)
    enrolling = assured(sparekey.assurance.issue("alice", purpose="enroll", case_id="rc_1"))
    new = enroll_confirmed_totp(client, clock.now(), headers=enrolling)
    assert register(client, SoftAuthenticator(), headers=enrolling).status_code == 201
    for answer in (
        client.delete(f"/v1/users/alice/factors/{first['id']}", headers=enrolling),
        client.delete(f"/v1/users/alice/factors/{new['id']}", headers=enrolling),
        client.post("/v1/users/alice/backup-codes", headers=enrolling),
    ):
        body = assert_problem(answer, 403, "assurance-required")
        assert "only allows adding a factor" in str(body["detail"])
    token = enrolling[ASSURANCE]
    never_a_login = client.post("/v1/users/alice/verify", json={"code": token})
    assert never_a_login.json() == {"verified": False}


def test_a_security_key_sign_in_steps_up(client: TestClient, clock: FixedClock) -> None:
    create_user(client)
    key = SoftAuthenticator()
    assert register(client, key).status_code == 201
    _, answer = sign_in(client, key)
    assert answer["verified"] is True
    made = client.post("/v1/users/alice/backup-codes", headers=assured(answer["assurance_token"]))
    assert made.status_code == 201, made.text
    options = client.post("/v1/webauthn/authentications", json={"user_id": "alice"}).json()
    refused = client.post(
        "/v1/webauthn/authentications/verify",
        json={"credential": key.get(options["options"], origin="http://localhost:1")},
    )
    assert "assurance_token" not in refused.json(), "no token without a sign-in"


def test_a_backup_code_steps_up(client: TestClient, clock: FixedClock) -> None:
    create_user(client)
    codes = client.post("/v1/users/alice/backup-codes").json()["codes"]
    enroll_confirmed_totp(client, clock.now())
    headers = step_up(client, codes[0])
    assert client.post("/v1/users/alice/backup-codes", headers=headers).status_code == 201
    assert client.post("/v1/users/alice/verify", json={"code": "000000"}).json() == {
        "verified": False
    }, "a wrong code gives no token"


def test_an_administrator_overrides_with_an_audited_reason(
    client: TestClient, clock: FixedClock, sparekey: Sparekey, admin_token: str
) -> None:
    alice_with_totp(client, clock)
    headers = {ASSURANCE: "override", "Sparekey-Override-Reason": "ticket 4711: phone replaced"}
    made = client.post("/v1/users/alice/backup-codes", headers=headers)
    assert made.status_code == 201, made.text
    [record] = [r for r in sparekey.audit.export() if r.event == "assurance.overridden"]
    assert record.user_id == "alice"
    assert record.details == {
        "operation": "backup_codes.regenerate",
        "reason": "ticket 4711: phone replaced",
    }
    admin_key = sparekey.api_keys.authenticate(admin_token)
    assert (record.actor_type, record.actor_id) == ("api_key", admin_key.id)
    generated = [r for r in sparekey.audit.export() if r.event == "backup_codes.generated"]
    assert generated[-1].id == record.id + 1, "recorded in the transaction of the change"


def test_an_override_is_recorded_only_with_its_change(
    client: TestClient, clock: FixedClock, sparekey: Sparekey
) -> None:
    factor = alice_with_totp(client, clock)
    refused = client.delete(f"/v1/users/alice/factors/{factor['id']}", headers=OVERRIDE)
    assert_problem(refused, 409, "last-factor")
    assert not [r for r in sparekey.audit.export() if r.event == "assurance.overridden"]


@pytest.mark.parametrize("scope", [Scope.MANAGE, Scope.VERIFY])
def test_only_an_admin_key_may_override(
    client: TestClient, clock: FixedClock, sparekey: Sparekey, scope: Scope
) -> None:
    factor = alice_with_totp(client, clock)
    token = sparekey.api_keys.create(name=f"{scope}-key", scopes=[scope]).token
    headers = {**OVERRIDE, "Authorization": f"Bearer {token}"}
    for answer in sensitive_calls(client, factor["id"], headers).values():
        assert_problem(answer, 403, "forbidden")
    forced = client.delete(
        f"/v1/users/alice/factors/{factor['id']}?force=true",
        headers={"Authorization": f"Bearer {token}"},
    )
    assert_problem(forced, 403, "forbidden")
    assert not [r for r in sparekey.audit.export() if r.event == "assurance.overridden"]


def test_removing_the_only_factor_is_refused_unless_forced(
    client: TestClient, clock: FixedClock, sparekey: Sparekey
) -> None:
    factor = alice_with_totp(client, clock)
    headers = step_up(client, fresh_code(factor, clock))
    path = f"/v1/users/alice/factors/{factor['id']}"
    body = assert_problem(client.delete(path, headers=headers), 409, "last-factor")
    assert "last active factor" in str(body["detail"])
    forced = client.delete(
        f"{path}?force=true",
        headers={**headers, "Sparekey-Override-Reason": "user left the company"},
    )
    assert forced.status_code == 204, forced.text
    [record] = [r for r in sparekey.audit.export() if r.event == "factor.removal_forced"]
    assert record.details == {
        "factor_id": factor["id"],
        "factor_type": "totp",
        "protection": "last_factor",
        "reason": "user left the company",
    }
    assert client.get("/v1/users/alice/factors").json()["factors"] == []


def test_the_only_security_key_is_kept_while_a_totp_factor_remains(
    client: TestClient, clock: FixedClock, sparekey: Sparekey
) -> None:
    totp = alice_with_totp(client, clock)
    headers = step_up(client, fresh_code(totp, clock))
    laptop = register(client, SoftAuthenticator(), headers=headers).json()
    path = f"/v1/users/alice/factors/{laptop['id']}"
    body = assert_problem(client.delete(path, headers=headers), 409, "last-factor")
    assert "security key" in str(body["detail"])
    usb = register(client, SoftAuthenticator(), headers=headers).json()
    assert client.delete(path, headers=headers).status_code == 204, "another key remains"
    usb_path = f"/v1/users/alice/factors/{usb['id']}"
    assert_problem(client.delete(usb_path, headers=headers), 409, "last-factor")
    assert client.delete(f"{usb_path}?force=true", headers=headers).status_code == 204
    [record] = [r for r in sparekey.audit.export() if r.event == "factor.removal_forced"]
    assert record.details["protection"] == "last_webauthn"
    totp_path = f"/v1/users/alice/factors/{totp['id']}"
    assert_problem(client.delete(totp_path, headers=headers), 409, "last-factor")


def test_a_totp_factor_goes_while_a_security_key_remains(
    client: TestClient, clock: FixedClock
) -> None:
    totp = alice_with_totp(client, clock)
    headers = step_up(client, fresh_code(totp, clock))
    assert register(client, SoftAuthenticator(), headers=headers).status_code == 201
    removed = client.delete(f"/v1/users/alice/factors/{totp['id']}", headers=headers)
    assert removed.status_code == 204, removed.text


def test_a_pending_factor_protects_nothing(client: TestClient, clock: FixedClock) -> None:
    totp = alice_with_totp(client, clock)
    headers = step_up(client, fresh_code(totp, clock))
    pending = enroll(client, headers=headers)
    removed = client.delete(f"/v1/users/alice/factors/{pending['id']}", headers=headers)
    assert removed.status_code == 204
    totp_path = f"/v1/users/alice/factors/{totp['id']}"
    assert_problem(client.delete(totp_path, headers=headers), 409, "last-factor")


def test_the_answers_and_the_openapi_document_show_the_token(
    client: TestClient, clock: FixedClock
) -> None:
    first = alice_with_totp(client, clock)
    answer = client.post("/v1/users/alice/verify", json={"code": fresh_code(first, clock)})
    assert answer.json()["assurance_token"].startswith("sat1.")
    schema = client.get("/openapi.json").json()
    components = schema["components"]["schemas"]
    for model in ("VerifyOut", "WebAuthnResultOut", "ConfirmedFactorOut"):
        assert "assurance_token" in components[model]["properties"], model
    operation = schema["paths"]["/v1/users/{user_id}/factors/{factor_id}"]["delete"]
    names = {p["name"] for p in operation["parameters"]}
    assert {"Sparekey-Assurance", "Sparekey-Override-Reason", "force"} <= names
    description = schema["info"]["description"]
    assert "assurance-required" in description
    assert "last-factor" in description
    for slug in ("assurance-required", "last-factor"):
        page = client.get(f"/problems/{slug}")
        assert page.status_code == 200
        assert "Sparekey-Assurance" in page.text or "force=true" in page.text


def test_registration_is_refused_before_the_browser_is_asked(
    client: TestClient, clock: FixedClock
) -> None:
    """Both halves of the ceremony check: a challenge begun with a token cannot be finished
    without one (or with another user's)."""
    first = alice_with_totp(client, clock)
    headers = step_up(client, fresh_code(first, clock))
    options = client.post("/v1/users/alice/webauthn/registrations", headers=headers).json()
    credential = SoftAuthenticator().create(options["options"], origin=ORIGIN)
    finished = client.post(
        "/v1/users/alice/webauthn/registrations/verify", json={"credential": credential}
    )
    assert_problem(finished, 403, "assurance-required")
    assert len(client.get("/v1/users/alice/factors").json()["factors"]) == 1
