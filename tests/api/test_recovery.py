"""Helpdesk recovery over the API, on SQLite and PostgreSQL: the happy path, and the attacker's
view of every step (skipping states, approving one's own case, reusing or misusing a pass)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pytest
from fastapi.testclient import TestClient

from sparekey.domain.models import OperatorRole, Scope
from sparekey.domain.ports import FixedClock
from sparekey.runtime import Sparekey
from sparekey.services.recovery import PASS_LENGTH
from tests.helpers import create_user, enroll, race, totp_code

CASES = "/v1/recovery/cases"


@dataclass
class Desk:
    """Operators' tokens and the application's own manage key."""

    hank: dict[str, str]  # helpdesk
    ada: dict[str, str]  # admin
    bob: dict[str, str]  # admin
    audrey: dict[str, str]  # auditor
    app: dict[str, str]  # the application (manage scope), acting for its users


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@pytest.fixture
def desk(sparekey: Sparekey) -> Desk:
    def token(name: str, role: OperatorRole) -> dict[str, str]:
        return bearer(sparekey.operators.create(name, role=role).token)

    return Desk(
        hank=token("hank", OperatorRole.HELPDESK),
        ada=token("ada", OperatorRole.ADMIN),
        bob=token("bob", OperatorRole.ADMIN),
        audrey=token("audrey", OperatorRole.AUDITOR),
        app=bearer(sparekey.api_keys.create(name="app", scopes=[Scope.MANAGE]).token),
    )


@pytest.fixture
def alice(client: TestClient, clock: FixedClock) -> dict[str, Any]:
    """Alice, whose phone (her only TOTP factor) is gone."""
    create_user(client, "alice", email="alice@example.com")
    factor = enroll(client, "alice")
    code = totp_code(str(factor["secret"]), clock.now())
    confirmed = client.post(f"/v1/users/alice/factors/{factor['id']}/confirm", json={"code": code})
    assert confirmed.status_code == 200, confirmed.text
    return factor


def open_case(client: TestClient, desk: Desk, **body: Any) -> dict[str, Any]:
    made = client.post(CASES, json={"user_id": "alice", **body}, headers=desk.hank)
    assert made.status_code == 201, made.text
    return dict(made.json())


def step(client: TestClient, case_id: str, action: str, who: dict[str, str], **body: Any) -> Any:
    return client.post(f"{CASES}/{case_id}/{action}", json=body, headers=who)


def to_ready(client: TestClient, desk: Desk, clock: FixedClock) -> str:
    case = open_case(client, desk, reason="phone lost")
    case_id = case["id"]
    verified = step(
        client, case_id, "identity", desk.hank, evidence=["government_id", "video_call"]
    )
    assert verified.json()["state"] == "identity_verified", verified.text
    approved = step(client, case_id, "approve", desk.ada)
    assert approved.json()["state"] == "waiting", approved.text
    clock.advance(24 * 3600)
    assert client.get(f"{CASES}/{case_id}", headers=desk.ada).json()["state"] == "ready"
    return str(case_id)


def redeem(client: TestClient, desk: Desk, access_pass: str) -> Any:
    return client.post(
        "/v1/users/alice/temporary-access/redeem", json={"pass": access_pass}, headers=desk.app
    )


def test_a_locked_out_user_is_recovered_end_to_end(
    client: TestClient, desk: Desk, alice: dict[str, Any], clock: FixedClock, sparekey: Sparekey
) -> None:
    case_id = to_ready(client, desk, clock)
    issued = step(client, case_id, "pass", desk.hank)
    assert issued.status_code == 200, issued.text
    access_pass = issued.json()["access_pass"]
    assert len(access_pass.replace("-", "")) == PASS_LENGTH  # 100 bits

    redeemed = redeem(client, desk, access_pass.lower().replace("-", " "))
    assert redeemed.status_code == 200, redeemed.text
    token = redeemed.json()["enrollment_token"]
    enrolled = client.post(
        "/v1/users/alice/factors",
        json={"type": "totp", "label": "New phone"},
        headers={**desk.app, "Sparekey-Assurance": token},
    )
    assert enrolled.status_code == 201, enrolled.text
    new = enrolled.json()
    code = totp_code(new["secret"], clock.now())
    confirmed = client.post(
        f"/v1/users/alice/factors/{new['id']}/confirm",
        json={"code": code},
        headers={**desk.app, "Sparekey-Assurance": token},
    )
    assert confirmed.status_code == 200, confirmed.text

    done = step(client, case_id, "complete", desk.ada, factors={alice["id"]: "revoke"})
    assert done.status_code == 200, done.text
    assert done.json()["case"]["state"] == "completed"
    assert len(done.json()["backup_codes"]) == 10
    factors = client.get("/v1/users/alice/factors").json()["factors"]
    assert [f["id"] for f in factors] == [new["id"]]
    events = [r.event for r in sparekey.audit.export(user_id="alice") if "recovery" in r.event]
    assert events == [
        "recovery.requested",
        "recovery.identity_verified",
        "recovery.approval_given",
        "recovery.waiting",
        "recovery.started",
        "recovery.ready",
        "recovery.pass_issued",
        "recovery.pass_redeemed",
        "recovery.completed",
    ]
    requested = next(r for r in sparekey.audit.export() if r.event == "recovery.requested")
    assert requested.actor_type == "operator", "attributed to the operator, not an API key"


def test_no_step_can_be_skipped(
    client: TestClient, desk: Desk, alice: dict[str, Any], clock: FixedClock
) -> None:
    case_id = open_case(client, desk)["id"]
    for action, who in (("approve", desk.ada), ("pass", desk.hank)):
        refused = step(client, case_id, action, who)
        assert refused.status_code == 409, (action, refused.text)
        assert refused.json()["type"] == "/problems/recovery-state"
    step(client, case_id, "identity", desk.hank, evidence=["government_id", "video_call"])
    step(client, case_id, "approve", desk.ada)
    early = step(client, case_id, "pass", desk.hank)
    assert early.status_code == 409, "not during the waiting period"
    complete = step(client, case_id, "complete", desk.ada, factors={})
    assert complete.status_code == 409
    clock.advance(24 * 3600)
    complete = step(client, case_id, "complete", desk.ada, factors={})
    assert complete.status_code == 409, "not before the pass was redeemed"


def test_four_eyes(client: TestClient, desk: Desk, alice: dict[str, Any]) -> None:
    mine = client.post(CASES, json={"user_id": "alice"}, headers=desk.ada).json()
    step(client, mine["id"], "identity", desk.ada, evidence=["government_id", "video_call"])
    own = step(client, mine["id"], "approve", desk.ada)
    assert own.status_code == 403, "the requester and verifier cannot approve"
    helpdesk = step(client, mine["id"], "approve", desk.hank)
    assert helpdesk.status_code == 403, "helpdesk never approves"
    app_key = step(client, mine["id"], "approve", desk.app)
    assert app_key.status_code == 403
    assert step(client, mine["id"], "approve", desk.bob).json()["state"] == "waiting"
    twice = step(client, mine["id"], "approve", desk.bob)
    assert twice.status_code == 409


def test_an_auditor_reads_and_changes_nothing(
    client: TestClient, desk: Desk, alice: dict[str, Any]
) -> None:
    case_id = open_case(client, desk)["id"]
    assert client.get(CASES, headers=desk.audrey).status_code == 200
    assert client.post(CASES, json={"user_id": "alice"}, headers=desk.audrey).status_code == 403
    assert step(client, case_id, "cancel", desk.audrey).status_code == 403


def test_a_pass_never_verifies_a_sign_in_and_works_once_under_a_race(
    client: TestClient, desk: Desk, alice: dict[str, Any], clock: FixedClock
) -> None:
    case_id = to_ready(client, desk, clock)
    access_pass = step(client, case_id, "pass", desk.hank).json()["access_pass"]
    answer = client.post("/v1/users/alice/verify", json={"code": access_pass})
    assert answer.json() == {"verified": False}
    results = race(lambda: redeem(client, desk, access_pass).status_code, threads=12)
    assert sorted(results) == [200] + [403] * 11
    assert redeem(client, desk, access_pass).status_code == 403


def test_an_enrollment_token_only_adds_a_factor(
    client: TestClient, desk: Desk, alice: dict[str, Any], clock: FixedClock
) -> None:
    case_id = to_ready(client, desk, clock)
    access_pass = step(client, case_id, "pass", desk.hank).json()["access_pass"]
    token = redeem(client, desk, access_pass).json()["enrollment_token"]
    headers = {**desk.app, "Sparekey-Assurance": token}
    removed = client.delete(f"/v1/users/alice/factors/{alice['id']}", headers=headers)
    assert removed.status_code == 403
    regenerated = client.post("/v1/users/alice/backup-codes", headers=headers)
    assert regenerated.status_code == 403
    answer = client.post("/v1/users/alice/verify", json={"code": token[:8]})
    assert answer.json() == {"verified": False}


def test_a_closed_case_cannot_be_resumed(
    client: TestClient, desk: Desk, alice: dict[str, Any], clock: FixedClock
) -> None:
    case_id = open_case(client, desk)["id"]
    step(client, case_id, "identity", desk.hank, evidence=["government_id", "video_call"])
    assert step(client, case_id, "cancel", desk.hank, reason="caller hung up").status_code == 200
    for action, who in (("approve", desk.ada), ("pass", desk.hank), ("deny", desk.ada)):
        assert step(client, case_id, action, who).status_code == 409, action
    assert open_case(client, desk)["state"] == "requested", "a new case may be opened"


def test_the_real_user_cancels_by_signing_in_or_through_the_app(
    client: TestClient, desk: Desk, alice: dict[str, Any], clock: FixedClock, sparekey: Sparekey
) -> None:
    case_id = open_case(client, desk)["id"]
    step(client, case_id, "identity", desk.hank, evidence=["government_id", "video_call"])
    step(client, case_id, "approve", desk.ada)
    clock.advance(60)
    code = totp_code(str(alice["secret"]), clock.now())
    assert client.post("/v1/users/alice/verify", json={"code": code}).json()["verified"]
    case = client.get(f"{CASES}/{case_id}", headers=desk.ada).json()
    assert case["state"] == "cancelled"
    assert case["close_reason"] == "the user signed in with a working factor"

    second = open_case(client, desk)["id"]
    cancelled = client.post("/v1/users/alice/recovery/cancel", json={}, headers=desk.app)
    assert cancelled.status_code == 200, cancelled.text
    assert cancelled.json()["id"] == second
    assert cancelled.json()["state"] == "cancelled"


def test_an_unfinished_case_expires(
    client: TestClient, desk: Desk, alice: dict[str, Any], clock: FixedClock
) -> None:
    case_id = open_case(client, desk)["id"]
    clock.advance(8 * 86400)
    assert client.get(f"{CASES}/{case_id}", headers=desk.ada).json()["state"] == "expired"
    late = step(client, case_id, "identity", desk.hank, evidence=["government_id", "video_call"])
    assert late.status_code == 409


def test_evidence_comes_from_the_checklist(
    client: TestClient, desk: Desk, alice: dict[str, Any]
) -> None:
    case_id = open_case(client, desk)["id"]
    unknown = step(client, case_id, "identity", desk.hank, evidence=["vibes", "video_call"])
    assert unknown.status_code == 422
    too_little = step(client, case_id, "identity", desk.hank, evidence=["video_call"])
    assert too_little.status_code == 422


def sign_in_token(client: TestClient, user_id: str, secret: str, clock: FixedClock) -> str:
    answer = client.post(
        f"/v1/users/{user_id}/verify", json={"code": totp_code(secret, clock.now())}
    ).json()
    assert answer["verified"], answer
    return str(answer["assurance_token"])


def test_trusted_contacts_approve_instead_of_an_admin(
    client: TestClient, desk: Desk, alice: dict[str, Any], clock: FixedClock
) -> None:
    secrets = {}
    for friend in ("bea", "cy", "dee"):
        create_user(client, friend)
        factor = enroll(client, friend)
        client.post(
            f"/v1/users/{friend}/factors/{factor['id']}/confirm",
            json={"code": totp_code(str(factor["secret"]), clock.now())},
        )
        secrets[friend] = str(factor["secret"])
    clock.advance(30)
    alices_token = sign_in_token(client, "alice", str(alice["secret"]), clock)
    named = client.put(
        "/v1/users/alice/trusted-contacts",
        json={"contacts": ["bea", "cy"]},
        headers={**desk.app, "Sparekey-Assurance": alices_token},
    )
    assert named.status_code == 200, named.text
    unproved = client.put(
        "/v1/users/alice/trusted-contacts", json={"contacts": ["bea", "dee"]}, headers=desk.app
    )
    assert unproved.status_code == 403, "a sensitive change needs a step-up"

    case_id = open_case(client, desk, approval="contacts")["id"]
    assert step(client, case_id, "approve", desk.ada).status_code == 409, "contacts approve"

    def contact_approves(contact: str, token: str | None) -> Any:
        headers = {**desk.app, **({"Sparekey-Assurance": token} if token else {})}
        return client.post(
            f"{CASES}/{case_id}/contact-approvals", json={"contact_id": contact}, headers=headers
        )

    clock.advance(30)
    assert contact_approves("bea", None).status_code == 403
    assert contact_approves("bea", alices_token).status_code in (401, 403), "alice's own token"
    dee = sign_in_token(client, "dee", secrets["dee"], clock)
    assert contact_approves("dee", dee).status_code == 403, "not a contact"
    first = contact_approves("bea", sign_in_token(client, "bea", secrets["bea"], clock))
    assert first.json()["state"] == "requested"
    second = contact_approves("cy", sign_in_token(client, "cy", secrets["cy"], clock))
    assert second.json()["state"] == "waiting"
    assert second.json()["approvals"] == ["contact:bea", "contact:cy"]


def test_contacts_must_be_two_to_five_other_users(client: TestClient, desk: Desk) -> None:
    create_user(client, "solo")
    for contacts, status in ((["solo", "x"], 422), (["ghost1", "ghost2"], 422), (["a"], 422)):
        answer = client.put(
            "/v1/users/solo/trusted-contacts", json={"contacts": contacts}, headers=desk.app
        )
        assert answer.status_code == status, (contacts, answer.text)


def test_a_security_key_sign_in_cancels_too_but_not_a_redeemed_recovery(
    client: TestClient, desk: Desk, alice: dict[str, Any], clock: FixedClock
) -> None:
    from tests.api.test_webauthn import ORIGIN
    from tests.softauthn import SoftAuthenticator

    clock.advance(30)
    token = sign_in_token(client, "alice", str(alice["secret"]), clock)
    key = SoftAuthenticator()
    options = client.post(
        "/v1/users/alice/webauthn/registrations", headers={"Sparekey-Assurance": token}
    ).json()["options"]
    made = client.post(
        "/v1/users/alice/webauthn/registrations/verify",
        json={"credential": key.create(options, origin=ORIGIN)},
        headers={"Sparekey-Assurance": token},
    )
    assert made.status_code == 201, made.text

    def sign_in_with_key() -> None:
        begun = client.post("/v1/webauthn/authentications", json={"user_id": "alice"}).json()
        assertion = key.get(begun["options"], origin=ORIGIN)
        answer = client.post("/v1/webauthn/authentications/verify", json={"credential": assertion})
        assert answer.json()["verified"] is True

    case_id = open_case(client, desk)["id"]
    sign_in_with_key()
    assert client.get(f"{CASES}/{case_id}", headers=desk.ada).json()["state"] == "cancelled"

    case_id = to_ready(client, desk, clock)
    access_pass = step(client, case_id, "pass", desk.hank).json()["access_pass"]
    assert redeem(client, desk, access_pass).status_code == 200
    sign_in_with_key()
    assert client.get(f"{CASES}/{case_id}", headers=desk.ada).json()["state"] == "ready"


def test_a_trusted_contact_who_did_not_hear_from_the_user_denies(
    client: TestClient, desk: Desk, alice: dict[str, Any], clock: FixedClock
) -> None:
    secrets = {}
    for friend in ("bea", "cy"):
        create_user(client, friend)
        factor = enroll(client, friend)
        client.post(
            f"/v1/users/{friend}/factors/{factor['id']}/confirm",
            json={"code": totp_code(str(factor["secret"]), clock.now())},
        )
        secrets[friend] = str(factor["secret"])
    clock.advance(30)
    token = sign_in_token(client, "alice", str(alice["secret"]), clock)
    client.put(
        "/v1/users/alice/trusted-contacts",
        json={"contacts": ["bea", "cy"]},
        headers={**desk.app, "Sparekey-Assurance": token},
    )
    case_id = open_case(client, desk, approval="contacts")["id"]
    no_token = client.post(
        f"{CASES}/{case_id}/contact-denials", json={"contact_id": "bea"}, headers=desk.app
    )
    assert no_token.status_code == 403
    clock.advance(30)
    bea = sign_in_token(client, "bea", secrets["bea"], clock)
    denied = client.post(
        f"{CASES}/{case_id}/contact-denials",
        json={"contact_id": "bea"},
        headers={**desk.app, "Sparekey-Assurance": bea},
    )
    assert denied.status_code == 200, denied.text
    assert denied.json()["state"] == "denied"
    assert denied.json()["closed_by"] == "contact:bea"
    cy = sign_in_token(client, "cy", secrets["cy"], clock)
    late = client.post(
        f"{CASES}/{case_id}/contact-approvals",
        json={"contact_id": "cy"},
        headers={**desk.app, "Sparekey-Assurance": cy},
    )
    assert late.status_code == 409, "a denied case takes no more approvals"
