"""What docs/security.md claims of notifications and of WebAuthn intent, shown here: every step
of a helpdesk recovery is queued for the user's email and the application's webhook in the
transaction of the step (NIST SP 800-63B-4 section 4.2), every notice of a change says whom to
contact if it was not the user (section 4.6), and an assertion without the user-presence flag
signs nobody in (section 3.2.8)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
from fastapi.testclient import TestClient

from sparekey.domain.models import FactorType, OperatorRole
from sparekey.domain.ports import FixedClock
from sparekey.protocols.otpauth import b32encode
from sparekey.runtime import Sparekey, initialize
from sparekey.services.assurance import Assurance
from sparekey.services.notifications import NOTIFY_EVENTS, compose_email
from sparekey.settings import Settings, load_settings
from sparekey.storage import outbox as outbox_repo
from sparekey.storage.outbox import OutboxMessage
from tests.api.test_webauthn import ORIGIN, register
from tests.helpers import create_user, totp_code
from tests.softauthn import (
    UP,
    UV,
    SoftAuthenticator,
    authenticator_data,
    b64url,
    b64url_decode,
    sign_assertion,
)

STEPS = [
    "recovery.requested",
    "recovery.identity_verified",
    "recovery.approval_given",
    "recovery.started",
    "recovery.ready",
    "recovery.pass_issued",
    "recovery.pass_redeemed",
    "recovery.completed",
]


@pytest.fixture
def notifying(settings: Settings, clock: FixedClock) -> Iterator[Sparekey]:
    """Email and webhook configured; nothing is delivered here, the outbox is read instead."""
    configured = load_settings(
        settings.data_dir,
        database_url=settings.database_url,
        smtp_host="127.0.0.1",
        smtp_port=9,
        smtp_starttls=False,
        smtp_from="security@acme.example",
        webhook_url="http://127.0.0.1:9/hooks",
        webhook_secret="whsec_recovery_claims_0123456789",
    )
    initialize(configured, clock=clock)
    app = Sparekey.open(configured, clock=clock)
    yield app
    app.close()


def test_every_step_of_a_recovery_reaches_the_user_and_the_application(
    notifying: Sparekey, clock: FixedClock
) -> None:
    app = notifying
    app.users.create(user_id="alice", display_name=None, email="alice@example.com")
    lost = app.factors.enroll("alice", type=FactorType.TOTP)
    app.factors.confirm(
        "alice", lost.factor.id, code=totp_code(b32encode(lost.secret), clock.now())
    )
    app.operators.create("hank", role=OperatorRole.HELPDESK)
    app.operators.create("ada", role=OperatorRole.ADMIN)
    hank, ada = app.operators.caller("hank"), app.operators.caller("ada")

    case = app.recovery.request("alice", reason="phone lost", caller=hank)
    app.recovery.verify_identity(case.id, evidence=["government_id", "video_call"], caller=hank)
    app.recovery.approve(case.id, caller=ada)
    clock.advance(int(timedelta(hours=24).total_seconds()))
    issued = app.recovery.issue_pass(case.id, caller=hank)
    redeemed = app.recovery.redeem("alice", issued.access_pass, caller=hank)
    enrolling = Assurance(token=redeemed.enrollment_token)
    new = app.factors.enroll("alice", type=FactorType.TOTP, assurance=enrolling)
    code = totp_code(b32encode(new.secret), clock.now())
    app.factors.confirm("alice", new.factor.id, code=code, assurance=enrolling)
    app.recovery.complete(case.id, decisions={lost.factor.id: "revoke"}, caller=ada)

    with app.db.read() as conn:
        queued = outbox_repo.messages(conn)
    for channel, recipient in (("email", "alice@example.com"), ("webhook", None)):
        steps = [
            m.event
            for m in queued
            if m.channel == channel
            and m.event.startswith("recovery.")
            and (recipient is None or m.recipient == recipient)
        ]
        assert steps == STEPS, channel


# Notices of things that changed nothing, or that only remind: no one to repudiate
_NOTHING_TO_REPUDIATE = {
    "backup_codes.low",
    "recovery.denied",
    "recovery.cancelled",
    "recovery.expired",
}


@pytest.mark.parametrize("event", sorted(NOTIFY_EVENTS - _NOTHING_TO_REPUDIATE))
def test_every_notice_of_a_change_says_whom_to_contact(event: str) -> None:
    moment = datetime(2026, 1, 15, 12, tzinfo=UTC)
    payload = {"id": "e1", "type": event, "user_id": "alice", "occurred_at": moment.isoformat()}
    message = OutboxMessage(
        id=1,
        event_id="e1",
        event=event,
        channel="email",
        recipient="alice@example.com",
        payload=json.dumps({**payload, "details": {"factor_type": "totp"}}),
        created_at=moment,
        attempts=0,
        next_attempt_at=None,
        delivered_at=None,
        failed_at=None,
        last_error=None,
        locked_until=None,
    )
    body = compose_email(message, sender="s@acme.example", now=moment, product="Acme").get_content()
    assert "administrator or support team" in body


def test_an_assertion_without_user_presence_signs_nobody_in(
    client: TestClient, sparekey: Sparekey
) -> None:
    """The same credential, challenge and origin, signed correctly, but with the UP flag clear
    (as malware driving an authenticator without a touch would send): refused."""
    create_user(client)
    key = SoftAuthenticator()
    assert register(client, key).status_code == 201
    [credential] = key.credentials.values()

    def assertion(flags: int) -> dict[str, object]:
        options = client.post("/v1/webauthn/authentications", json={"user_id": "alice"}).json()
        answer = key.get(options["options"], origin=ORIGIN)
        response = answer["response"]
        assert isinstance(response, dict)
        client_data = b64url_decode(response["clientDataJSON"])
        data = authenticator_data(rp_id="localhost", flags=flags, sign_count=credential.sign_count)
        signature = sign_assertion(
            credential, authenticator_data=data, client_data_json=client_data
        )
        response["authenticatorData"] = b64url(data)
        response["signature"] = b64url(signature)
        return answer

    verify = "/v1/webauthn/authentications/verify"
    absent = client.post(verify, json={"credential": assertion(UV)}).json()
    assert absent["verified"] is False
    [failed] = [r for r in sparekey.audit.export() if r.event == "verify.failed"]
    assert "not present" in str(failed.details["reason"])
    present = client.post(verify, json={"credential": assertion(UP | UV)}).json()
    assert present["verified"] is True, "the same assertion with UP set is accepted"
