"""Email and SMS factors end to end: codes travel through a real SMTP server (aiosmtpd) and a
loopback HTTP server speaking Twilio's message-create API or a generic gateway's, the tests read
them from what those servers received, and verify them; kept in their place by policy."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from sparekey.domain.ports import FixedClock
from sparekey.settings import Settings, load_settings
from tests.api.test_problems import assert_problem
from tests.conftest import START
from tests.helpers import OVERRIDE, assured, create_user, enroll_confirmed_totp, race, step_up
from tests.helpers_delivery import Answer, Provider, Received, twilio_api, twilio_settings
from tests.helpers_notifications import LOOPBACK, SmtpReceiver

PHONE = "+447911123456"
NEW_PHONE = "+447400123456"
_WEBOTP = re.compile(r"\n@example\.com #([0-9]{6})$")


@pytest.fixture
def smtp() -> Iterator[SmtpReceiver]:
    with SmtpReceiver() as receiver:
        yield receiver


@pytest.fixture
def sms() -> Iterator[Provider]:
    with Provider(twilio_api()) as provider:
        yield provider


@pytest.fixture
def mode() -> str:
    return "fallback_only"


@pytest.fixture
def settings(
    tmp_path: Path, database_url: str, smtp: SmtpReceiver, sms: Provider, mode: str
) -> Settings:
    return load_settings(
        tmp_path / "data",
        database_url=database_url,
        public_url="https://example.com",
        smtp_host=LOOPBACK,
        smtp_port=smtp.port,
        smtp_starttls=False,
        smtp_from="security@example.com",
        **twilio_settings(sms),
        fallback_channels=mode,
    )


def sms_codes(provider: Provider, to: str = PHONE) -> list[str]:
    """Every code texted to ``to``, oldest first, read from the WebOTP last line."""
    found = []
    for request in provider.requests:
        form = request.form()
        match = _WEBOTP.search(form["Body"])
        if form["To"] == to and match:
            found.append(match.group(1))
    return found


def email_codes(smtp: SmtpReceiver, to: str) -> list[str]:
    return [
        m.group(1)
        for mail in smtp.mails
        if mail.rcpt_tos == [to]
        for m in [re.search(r"code is ([0-9]{6})\.", mail.message.get_content())]
        if m
    ]


def enroll_sms(
    client: TestClient,
    provider: Provider,
    phone: str = PHONE,
    headers: dict[str, str] | None = None,
) -> str:
    answer = client.post(
        "/v1/users/alice/factors", json={"type": "sms", "phone": phone}, headers=headers
    )
    assert answer.status_code == 201, answer.text
    factor = answer.json()
    assert factor["status"] == "pending"
    assert phone not in answer.text
    assert factor["destination"].endswith(phone[-4:])
    confirm = client.post(
        f"/v1/users/alice/factors/{factor['id']}/confirm",
        json={"code": sms_codes(provider, phone)[-1]},
        headers=headers,
    )
    assert confirm.status_code == 200, confirm.text
    return str(factor["id"])


def verify(client: TestClient, code: str) -> dict[str, object]:
    return dict(client.post("/v1/users/alice/verify", json={"code": code}).json())


def events(client: TestClient) -> list[str]:
    answer = client.get("/v1/audit", params={"user": "alice", "limit": 200})
    return [e["event"] for e in answer.json()["events"]]


def test_email_factor_confirmed_then_signs_in_once(client: TestClient, smtp: SmtpReceiver) -> None:
    create_user(client)
    answer = client.post(
        "/v1/users/alice/factors", json={"type": "email", "address": "Alice@Example.COM"}
    )
    assert answer.status_code == 201, answer.text
    factor = answer.json()
    assert factor["destination"] == "A•••@example.com"
    assert factor["code_sent"]["provider"] == "smtp"
    [code] = email_codes(smtp, "Alice@example.com")
    assert verify(client, code) == {"verified": False}, "a pending factor signs nobody in"
    confirm = client.post(f"/v1/users/alice/factors/{factor['id']}/confirm", json={"code": code})
    assert confirm.status_code == 200, confirm.text
    sent = client.post(f"/v1/users/alice/factors/{factor['id']}/send")
    assert sent.status_code == 200, sent.text
    code = email_codes(smtp, "Alice@example.com")[-1]
    result = verify(client, code)
    assert result["verified"] is True
    assert result["factor_type"] == "email"
    assert verify(client, code) == {"verified": False}, "single use"
    assert {"factor.confirmed", "fallback_code.sent", "verify.succeeded"} <= set(events(client))


def test_resending_voids_the_old_code(client: TestClient, sms: Provider) -> None:
    create_user(client)
    factor_id = enroll_sms(client, sms)
    for _ in range(2):
        assert client.post(f"/v1/users/alice/factors/{factor_id}/send").status_code == 200
    _confirm, old, new = sms_codes(sms)
    assert old != new or pytest.skip("the two codes happened to be equal")
    assert verify(client, old) == {"verified": False}
    assert verify(client, new)["verified"] is True


def test_a_code_is_single_use_under_parallel_attempts(client: TestClient, sms: Provider) -> None:
    create_user(client)
    factor_id = enroll_sms(client, sms)
    assert client.post(f"/v1/users/alice/factors/{factor_id}/send").status_code == 200
    code = sms_codes(sms)[-1]

    def attempt() -> str:
        """How the server answered: verified, not verified, or refused by the throttle (each
        loser is a wrong code, and seven exceed the free failures if enough come in a row)."""
        answer = client.post("/v1/users/alice/verify", json={"code": code})
        if answer.status_code == 429:
            assert answer.json()["type"] == "/problems/too-many-attempts"
            return "refused"
        assert answer.status_code == 200, answer.text
        return "verified" if answer.json()["verified"] is True else "not verified"

    results = race(attempt, threads=8)
    assert results.count("verified") == 1, results
    assert results.count("not verified") >= 1, results


def test_a_changed_number_gets_no_code_before_the_wait_ends(
    client: TestClient, sms: Provider, clock: FixedClock
) -> None:
    create_user(client)
    factor_id = enroll_sms(client, sms)
    client.post(f"/v1/users/alice/factors/{factor_id}/send")
    headers = step_up(client, sms_codes(sms)[-1])
    changed = client.patch(
        f"/v1/users/alice/factors/{factor_id}", json={"phone": NEW_PHONE}, headers=headers
    )
    assert changed.status_code == 200, changed.text
    assert changed.json()["usable_after"] is not None
    notice = sms.requests[-1].form()
    assert notice["To"] == PHONE
    assert "new phone number" in notice["Body"]
    waiting = client.post(f"/v1/users/alice/factors/{factor_id}/send")
    assert_problem(waiting, 409, "destination-waiting")
    assert waiting.json()["until"]
    assert sms_codes(sms, NEW_PHONE) == []
    assert verify(client, sms_codes(sms)[-1]) == {"verified": False}, "the old number stopped"
    clock.advance(86_400)
    assert client.post(f"/v1/users/alice/factors/{factor_id}/send").status_code == 200
    assert verify(client, sms_codes(sms, NEW_PHONE)[-1]) == {"verified": False}
    assert "factor.destination_changed" in events(client)


def test_a_changed_number_signs_in_only_once_confirmed_after_the_wait(
    client: TestClient, sms: Provider, clock: FixedClock
) -> None:
    create_user(client)
    factor_id = enroll_sms(client, sms)
    client.post(f"/v1/users/alice/factors/{factor_id}/send")
    headers = step_up(client, sms_codes(sms)[-1])
    changed = client.patch(
        f"/v1/users/alice/factors/{factor_id}", json={"phone": NEW_PHONE}, headers=headers
    )
    assert changed.status_code == 200, changed.text
    assert changed.json()["destination_unconfirmed"] is True
    assert changed.json()["status"] == "active"
    early = client.post(f"/v1/users/alice/factors/{factor_id}/confirm", json={"code": "123456"})
    assert_problem(early, 422, "code-rejected")
    clock.advance(86_400)
    assert client.post(f"/v1/users/alice/factors/{factor_id}/send").status_code == 200
    [confirmation] = sms_codes(sms, NEW_PHONE)
    assert verify(client, confirmation) == {"verified": False}, "a confirmation code, not a sign-in"
    confirmed = client.post(
        f"/v1/users/alice/factors/{factor_id}/confirm", json={"code": confirmation}
    )
    assert confirmed.status_code == 200, confirmed.text
    assert confirmed.json()["destination_unconfirmed"] is False
    assert confirmed.json()["status"] == "active"
    again = client.post(f"/v1/users/alice/factors/{factor_id}/confirm", json={"code": confirmation})
    assert_problem(again, 409, "factor-state")
    assert client.post(f"/v1/users/alice/factors/{factor_id}/send").status_code == 200
    assert verify(client, sms_codes(sms, NEW_PHONE)[-1])["verified"] is True
    assert "factor.destination_confirmed" in events(client)


def test_a_change_needs_step_up(client: TestClient, sms: Provider) -> None:
    create_user(client)
    factor_id = enroll_sms(client, sms)
    refused = client.patch(f"/v1/users/alice/factors/{factor_id}", json={"phone": NEW_PHONE})
    assert_problem(refused, 403, "assurance-required")


def test_a_second_sms_factor_waits(client: TestClient, sms: Provider) -> None:
    create_user(client)
    enroll_sms(client, sms)
    second = client.post(
        "/v1/users/alice/factors", json={"type": "sms", "phone": NEW_PHONE}, headers=OVERRIDE
    )
    assert second.status_code == 201, second.text
    assert second.json()["code_sent"] is None
    assert second.json()["usable_after"]
    assert sms_codes(sms, NEW_PHONE) == []


@pytest.mark.parametrize("mode", ["disabled"])
def test_disabled_refuses_enrollment(client: TestClient) -> None:
    create_user(client)
    answer = client.post("/v1/users/alice/factors", json={"type": "sms", "phone": PHONE})
    assert_problem(answer, 403, "fallback-disabled")


def test_fallback_only_refuses_sms_while_totp_is_active(client: TestClient, sms: Provider) -> None:
    create_user(client)
    factor_id = enroll_sms(client, sms)
    assert client.post(f"/v1/users/alice/factors/{factor_id}/send").status_code == 200
    early = sms_codes(sms)[-1]
    enroll_confirmed_totp(client, START, headers=OVERRIDE)
    assert verify(client, early) == {"verified": False}
    refused = client.post(f"/v1/users/alice/factors/{factor_id}/send")
    assert_problem(refused, 403, "fallback-not-allowed")


@pytest.mark.parametrize("mode", ["allowed"])
def test_an_sms_verification_cannot_change_factors_while_totp_is_active(
    client: TestClient, sms: Provider
) -> None:
    create_user(client)
    factor_id = enroll_sms(client, sms)
    totp = enroll_confirmed_totp(client, START, headers=OVERRIDE)
    assert client.post(f"/v1/users/alice/factors/{factor_id}/send").status_code == 200
    answer = verify(client, sms_codes(sms)[-1])
    assert answer["verified"] is True
    weak = assured(answer["assurance_token"])
    removed = client.delete(f"/v1/users/alice/factors/{totp['id']}", headers=weak)
    assert_problem(removed, 403, "assurance-required")
    added = client.post("/v1/users/alice/factors", json={"type": "totp"}, headers=weak)
    assert_problem(added, 403, "assurance-required")


def test_an_sms_only_user_is_told_to_add_an_app_or_key(client: TestClient, sms: Provider) -> None:
    create_user(client)
    enroll_sms(client, sms)
    readiness = client.get("/v1/users/alice/readiness").json()
    assert readiness["facts"]["fallback_factors"] == 1
    assert readiness["actions"][0]["id"] == "add_strong_factor"
    assert readiness["actions"][0]["title"] == "Add an authenticator app or a security key"


# -- a failing gateway ----------------------------------------------------------------------------


def _failing(_request: Received, _n: int) -> Answer:
    return Answer(500, {"error": "down"})


@pytest.fixture
def gateway() -> Iterator[Provider]:
    with Provider(_failing) as provider:
        yield provider


def test_a_failing_gateway_is_a_502_and_nothing_is_sent(
    tmp_path: Path, database_url: str, gateway: Provider, clock: FixedClock
) -> None:
    from sparekey.api import create_app
    from sparekey.domain.models import Scope
    from sparekey.runtime import Sparekey, initialize

    settings = load_settings(
        tmp_path / "gw",
        database_url=database_url,
        sms_provider="http",
        sms_gateway_url=gateway.base_url + "/send",
        sms_gateway_body='{"to": "{to}", "text": "{text}"}',
        delivery_timeout_seconds=2,
        delivery_retries=0,
    )
    initialize(settings, clock=clock)
    app = Sparekey.open(settings, clock=clock)
    token = app.api_keys.create(name="t", scopes=[Scope.ADMIN]).token
    try:
        with TestClient(create_app(app), raise_server_exceptions=False) as client:
            client.headers["Authorization"] = f"Bearer {token}"
            create_user(client)
            answer = client.post("/v1/users/alice/factors", json={"type": "sms", "phone": PHONE})
            assert_problem(answer, 502, "delivery-failed")
            assert PHONE not in answer.text
            assert len(gateway.requests) == 1
            assert client.get("/v1/users/alice/factors").json()["factors"] == []
            seen = events(client)
            assert "fallback_code.send_failed" in seen
            assert "fallback_code.sent" not in seen
    finally:
        app.close()


# -- send limits and a disabled policy -----------------------------------------------------------


def test_the_per_destination_limit_is_a_429_and_sends_nothing(
    client: TestClient, sms: Provider
) -> None:
    create_user(client)
    factor_id = enroll_sms(client, sms)  # the confirmation code: the first of three
    for _ in range(2):
        assert client.post(f"/v1/users/alice/factors/{factor_id}/send").status_code == 200
    received = len(sms.requests)
    limited = client.post(f"/v1/users/alice/factors/{factor_id}/send")
    body = assert_problem(limited, 429, "send-limited")
    assert "phone number or address" in str(body["detail"])
    assert int(limited.headers["Retry-After"]) >= 1
    assert len(sms.requests) == received, "a code past the limit is not sent"
    assert PHONE not in limited.text


def test_the_per_user_limit_is_a_429_and_sends_nothing(
    client: TestClient, sms: Provider, smtp: SmtpReceiver
) -> None:
    create_user(client)
    pending = client.post("/v1/users/alice/factors", json={"type": "sms", "phone": PHONE})
    assert pending.status_code == 201, pending.text  # 1 code for alice
    sms_id = pending.json()["id"]
    for _ in range(2):  # 3 for alice, 3 to the phone
        assert client.post(f"/v1/users/alice/factors/{sms_id}/send").status_code == 200
    mail = client.post(
        "/v1/users/alice/factors", json={"type": "email", "address": "alice@example.com"}
    )
    assert mail.status_code == 201, mail.text  # 4 for alice, 1 to the address
    email_id = mail.json()["id"]
    assert client.post(f"/v1/users/alice/factors/{email_id}/send").status_code == 200  # 5
    texts, mails = len(sms.requests), len(smtp.mails)
    limited = client.post(f"/v1/users/alice/factors/{email_id}/send")
    body = assert_problem(limited, 429, "send-limited")
    assert "this user" in str(body["detail"]), "the address itself is under its own limit"
    assert (len(sms.requests), len(smtp.mails)) == (texts, mails)


def test_disabling_the_channels_refuses_sending_and_voids_live_codes(
    client: TestClient,
    sms: Provider,
    settings: Settings,
    clock: FixedClock,
    admin_token: str,
) -> None:
    from sparekey.api import create_app
    from sparekey.runtime import Sparekey

    create_user(client)
    factor_id = enroll_sms(client, sms)
    assert client.post(f"/v1/users/alice/factors/{factor_id}/send").status_code == 200
    code = sms_codes(sms)[-1]
    disabled = Sparekey.open(
        settings.model_copy(update={"fallback_channels": "disabled"}), clock=clock
    )
    try:
        with TestClient(create_app(disabled), raise_server_exceptions=False) as off:
            off.headers["Authorization"] = f"Bearer {admin_token}"
            received = len(sms.requests)
            refused = off.post(f"/v1/users/alice/factors/{factor_id}/send")
            assert_problem(refused, 403, "fallback-disabled")
            assert len(sms.requests) == received
            assert verify(off, code) == {"verified": False}
    finally:
        disabled.close()
    assert verify(client, code)["verified"] is True, "refused, not spent, while disabled"
