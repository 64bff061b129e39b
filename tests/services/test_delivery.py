"""Senders of one-time codes, against real servers on loopback: an SMTP server (aiosmtpd), an HTTP
server speaking Twilio's message-create API, and a generic SMS gateway; retried only where the
provider cannot have taken the message, and never leaking the code or the number."""

from __future__ import annotations

import json
import logging
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from sparekey.domain.errors import DeliveryError
from sparekey.domain.ports import FixedClock
from sparekey.protocols.contact import webotp_sms
from sparekey.runtime import build_code_senders
from sparekey.services.delivery import (
    FORM,
    JSON,
    HttpGatewaySender,
    RetryPolicy,
    SmtpSender,
    TwilioSender,
)
from sparekey.services.smtp import SmtpServer
from sparekey.settings import load_settings
from tests.conftest import START
from tests.helpers_delivery import ACCOUNT, TOKEN, Answer, Provider, Received, twilio_api
from tests.helpers_notifications import LOOPBACK, SmtpReceiver

SERVICE = "MG" + "fedcba9876543210" * 2
NUMBER = "+447911123456"
CODE = "493817"
TEXT = webotp_sms(code=CODE, origin_host="example.com", app_name="Example", minutes=10)
FAST = RetryPolicy(timeout=2.0, retries=1, backoff=0.01, max_wait=0.5)


def twilio(provider: Provider, policy: RetryPolicy = FAST, **options: str) -> TwilioSender:
    given = {"sender": "+15005550006"} | options
    return TwilioSender(
        account_sid=ACCOUNT,
        auth_token=TOKEN,
        base_url=provider.base_url,
        policy=policy,
        **given,
    )


@pytest.fixture
def logs(caplog: pytest.LogCaptureFixture) -> Iterator[pytest.LogCaptureFixture]:
    caplog.set_level(logging.DEBUG)
    yield caplog
    assert CODE not in caplog.text
    assert NUMBER not in caplog.text
    assert NUMBER[1:] not in caplog.text
    assert TOKEN not in caplog.text


def assert_clean(error: DeliveryError) -> None:
    for secret in (CODE, NUMBER, NUMBER[1:], "7911123456", TOKEN):
        assert secret not in error.detail
    assert "\n" not in error.detail


# -- email --------------------------------------------------------------------------------------


def test_email_code_reaches_the_smtp_server(logs: pytest.LogCaptureFixture) -> None:
    with SmtpReceiver() as smtp:
        sender = SmtpSender(
            server=SmtpServer(host=LOOPBACK, port=smtp.port, starttls=False, timeout=5),
            sender="Acme Security <security@acme.example>",
            product="Acme",
            clock=FixedClock(START),
        )
        delivery = sender.send(destination="alice@example.com", text=TEXT, code=CODE)
    [mail] = smtp.mails
    assert mail.mail_from == "security@acme.example"
    assert mail.rcpt_tos == ["alice@example.com"]
    message = mail.message
    assert message["To"] == "alice@example.com"
    assert message["From"] == "Acme Security <security@acme.example>"
    assert message["Subject"] == "Acme: your sign-in code"
    assert CODE not in message["Subject"], "subjects show on lock screens"
    assert message["Auto-Submitted"] == "auto-generated"
    assert message["Date"] == "Thu, 15 Jan 2026 12:00:00 +0000"
    assert message["Message-ID"] == delivery.message_id
    assert delivery.message_id
    assert delivery.message_id.endswith("@acme.example>")
    assert message.get_content().replace("\r\n", "\n") == TEXT + "\n"
    assert delivery.provider == "smtp"


def test_an_unreachable_smtp_server_is_a_delivery_error(logs: pytest.LogCaptureFixture) -> None:
    sender = SmtpSender(
        server=SmtpServer(host=LOOPBACK, port=_closed_port(), starttls=False, timeout=2),
        sender="security@acme.example",
        product="Acme",
        clock=FixedClock(START),
    )
    with pytest.raises(DeliveryError, match="smtp: ConnectionRefusedError") as caught:
        sender.send(destination="alice@example.com", text=TEXT, code=CODE)
    assert_clean(caught.value)


# -- Twilio -------------------------------------------------------------------------------------


def test_twilio_gets_its_form_with_basic_auth_and_answers_with_a_sid(
    logs: pytest.LogCaptureFixture,
) -> None:
    with Provider(twilio_api()) as api:
        delivery = twilio(api).send(destination=NUMBER, text=TEXT, code=CODE)
    [request] = api.requests
    assert request.method == "POST"
    assert request.headers["content-type"] == FORM
    assert request.form() == {"To": NUMBER, "From": "+15005550006", "Body": TEXT}
    assert (delivery.provider, delivery.message_id, delivery.attempts) == (
        "twilio",
        f"SM{1:032x}",
        1,
    )


def test_twilio_through_a_messaging_service(logs: pytest.LogCaptureFixture) -> None:
    with Provider(twilio_api()) as api:
        twilio(api, sender="", messaging_service_sid=SERVICE).send(
            destination=NUMBER, text=TEXT, code=CODE
        )
    assert api.requests[0].form() == {"To": NUMBER, "MessagingServiceSid": SERVICE, "Body": TEXT}


def test_a_500_is_repeated_once_and_one_message_is_created(
    logs: pytest.LogCaptureFixture,
) -> None:
    failure = Answer(500, {"code": 20500, "message": "Internal Server Error", "status": 500})
    with Provider(twilio_api(failure)) as api:
        delivery = twilio(api).send(destination=NUMBER, text=TEXT, code=CODE)
    assert [r.form() for r in api.requests] == [api.requests[0].form()] * 2
    assert (delivery.attempts, delivery.message_id) == (2, f"SM{2:032x}")
    assert "twilio: HTTP 500; repeating" in logs.text


def test_a_429_is_repeated_after_a_short_retry_after(logs: pytest.LogCaptureFixture) -> None:
    busy = Answer(429, {"code": 20429, "message": "Too Many Requests"}, {"Retry-After": "0"})
    with Provider(twilio_api(busy)) as api:
        assert twilio(api).send(destination=NUMBER, text=TEXT, code=CODE).attempts == 2


def test_a_long_retry_after_fails_at_once(logs: pytest.LogCaptureFixture) -> None:
    busy = Answer(429, {"code": 20429, "message": "Too Many Requests"}, {"Retry-After": "60"})
    with Provider(twilio_api(busy)) as api, pytest.raises(DeliveryError, match="HTTP 429"):
        twilio(api).send(destination=NUMBER, text=TEXT, code=CODE)
    assert len(api.requests) == 1


def test_twilio_errors_are_reported_with_its_message_and_not_repeated(
    logs: pytest.LogCaptureFixture,
) -> None:
    refused = Answer(
        400,
        {
            "code": 21211,
            "message": f"The 'To' number {NUMBER} is not a valid phone number.",
            "more_info": "https://www.twilio.com/docs/errors/21211",
            "status": 400,
        },
    )
    with Provider(twilio_api(refused)) as api, pytest.raises(DeliveryError) as caught:
        twilio(api).send(destination=NUMBER, text=TEXT, code=CODE)
    assert len(api.requests) == 1
    assert caught.value.detail == (
        "twilio: HTTP 400, error 21211: The 'To' number [destination] is not a valid phone number."
    )
    assert_clean(caught.value)


def test_wrong_credentials_are_a_delivery_error(logs: pytest.LogCaptureFixture) -> None:
    with Provider(twilio_api()) as api, pytest.raises(DeliveryError) as caught:
        TwilioSender(
            account_sid=ACCOUNT,
            auth_token="wrong",
            sender="+15005550006",
            base_url=api.base_url,
            policy=FAST,
        ).send(destination=NUMBER, text=TEXT, code=CODE)
    assert caught.value.detail == "twilio: HTTP 401, error 20003: Authenticate"


def test_persistent_5xx_gives_up_after_the_retries(logs: pytest.LogCaptureFixture) -> None:
    policy = RetryPolicy(timeout=2.0, retries=2, backoff=0.01)
    down = Answer(503, {"code": 20503, "message": "Service Unavailable", "status": 503})
    with Provider(lambda _r, _n: down) as api, pytest.raises(DeliveryError) as caught:
        twilio(api, policy).send(destination=NUMBER, text=TEXT, code=CODE)
    assert len(api.requests) == 3
    assert caught.value.detail == (
        "twilio: HTTP 503, error 20503: Service Unavailable after 3 attempts"
    )


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind((LOOPBACK, 0))
        return int(sock.getsockname()[1])


def test_connection_refused_is_repeated_then_a_delivery_error(
    logs: pytest.LogCaptureFixture,
) -> None:
    sender = TwilioSender(
        account_sid=ACCOUNT,
        auth_token=TOKEN,
        sender="+15005550006",
        base_url=f"http://{LOOPBACK}:{_closed_port()}",
        policy=FAST,
    )
    with pytest.raises(DeliveryError) as caught:
        sender.send(destination=NUMBER, text=TEXT, code=CODE)
    assert caught.value.detail == "twilio: cannot connect (ConnectError) after 2 attempts"
    assert "repeating" in logs.text


def test_a_slow_provider_is_given_up_on_in_time_and_not_asked_again(
    logs: pytest.LogCaptureFixture,
) -> None:
    slow = RetryPolicy(timeout=0.3, retries=2, backoff=0.01)
    with Provider(lambda _r, _n: Answer(201, {"sid": "SMlate"}, delay=1.5)) as api:
        started = time.monotonic()
        with pytest.raises(DeliveryError, match=r"no answer within 0\.3 s") as caught:
            twilio(api, slow).send(destination=NUMBER, text=TEXT, code=CODE)
        took = time.monotonic() - started
    assert took < 1.2
    assert len(api.requests) == 1, "the provider may have taken it: never sent twice"
    assert_clean(caught.value)


# -- a generic gateway --------------------------------------------------------------------------


def gateway_ok(_request: Received, n: int) -> Answer:
    return Answer(200, {"message_id": f"gw-{n}", "status": "queued"})


def test_gateway_json_body_is_escaped_and_custom_headers_sent(
    logs: pytest.LogCaptureFixture,
) -> None:
    text = 'Say "hi"\\ {to}\n\n@example.com #' + CODE
    with Provider(gateway_ok) as api:
        delivery = HttpGatewaySender(
            url=api.base_url + "/v1/sms",
            headers={"X-Api-Key": "gw-key", "Authorization": "Bearer gw-token"},
            body='{"recipient": "{to}", "message": "{text}", "otp": "{code}", "n": {"a": 1}}',
            content_type=JSON,
            policy=FAST,
        ).send(destination=NUMBER, text=text, code=CODE)
    [request] = api.requests
    assert (request.method, request.path) == ("POST", "/v1/sms")
    assert request.headers["x-api-key"] == "gw-key"
    assert request.headers["authorization"] == "Bearer gw-token"
    assert request.headers["content-type"] == "application/json; charset=utf-8"
    assert json.loads(request.body) == {
        "recipient": NUMBER,
        "message": text,
        "otp": CODE,
        "n": {"a": 1},
    }
    assert (delivery.provider, delivery.message_id, delivery.attempts) == ("sms-gateway", "gw-1", 1)


def test_gateway_form_body(logs: pytest.LogCaptureFixture) -> None:
    with Provider(gateway_ok) as api:
        HttpGatewaySender(
            url=api.base_url + "/send",
            body="to={to}&msg={text}&sender=Acme+Inc",
            content_type=FORM,
            policy=FAST,
        ).send(destination=NUMBER, text=TEXT + " & more=1", code=CODE)
    [request] = api.requests
    assert request.headers["content-type"] == FORM
    assert request.form() == {"to": NUMBER, "msg": TEXT + " & more=1", "sender": "Acme Inc"}


def test_gateway_get_carries_the_values_in_the_url(logs: pytest.LogCaptureFixture) -> None:
    with Provider(lambda _r, _n: Answer(204)) as api:
        delivery = HttpGatewaySender(
            url=api.base_url + "/api/send?to={to}&text={text}&key=abc",
            method="GET",
            policy=FAST,
        ).send(destination=NUMBER, text=TEXT, code=CODE)
    [request] = api.requests
    assert request.method == "GET"
    assert request.body == b""
    assert {k: v[0] for k, v in request.query.items()} == {"to": NUMBER, "text": TEXT, "key": "abc"}
    assert delivery.message_id is None


def test_gateway_refusal_is_not_repeated_and_a_500_is(logs: pytest.LogCaptureFixture) -> None:
    def answer(_request: Received, n: int) -> Answer:
        return Answer(500) if n == 1 else Answer(403, {"error": f"{NUMBER} blocked, code {CODE}"})

    with Provider(answer) as api, pytest.raises(DeliveryError) as caught:
        HttpGatewaySender(
            url=api.base_url + "/sms", body='{"to": "{to}"}', policy=RetryPolicy(backoff=0.01)
        ).send(destination=NUMBER, text=TEXT, code=CODE)
    assert len(api.requests) == 2
    assert caught.value.detail == "sms-gateway: HTTP 403 after 2 attempts"


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        ('{"to": "{phone}"}', "unknown placeholder {phone}"),
        ('{"to": {to}}', "not valid JSON"),
        ('{"to": "{to}"', "not valid JSON"),
    ],
)
def test_bad_gateway_templates_are_refused(body: str, reason: str) -> None:
    with pytest.raises(ValueError, match=reason):
        HttpGatewaySender(url="https://sms.example/send", body=body, policy=FAST)


# -- wiring from settings -----------------------------------------------------------------------


def test_settings_build_twilio_and_email_senders(tmp_path: Path) -> None:
    with Provider(twilio_api()) as api, SmtpReceiver() as smtp:
        settings = load_settings(
            tmp_path,
            smtp_host=LOOPBACK,
            smtp_port=smtp.port,
            smtp_starttls=False,
            smtp_from="security@acme.example",
            sms_provider="twilio",
            twilio_account_sid=ACCOUNT,
            twilio_auth_token=TOKEN,
            twilio_messaging_service_sid=SERVICE,
            twilio_base_url=api.base_url,
            delivery_timeout_seconds=2,
        )
        senders = build_code_senders(settings, clock=FixedClock(START))
        assert senders.sms is not None
        assert senders.email is not None
        assert senders.sms.send(destination=NUMBER, text=TEXT, code=CODE).provider == "twilio"
        senders.email.send(destination="bob@example.com", text=TEXT, code=CODE)
    assert api.requests[0].form()["MessagingServiceSid"] == SERVICE
    assert smtp.mails[0].rcpt_tos == ["bob@example.com"]


def test_settings_build_a_gateway_sender(tmp_path: Path) -> None:
    with Provider(gateway_ok) as api:
        settings = load_settings(
            tmp_path,
            sms_provider="http",
            sms_gateway_url=api.base_url + "/sms",
            sms_gateway_headers='{"X-Api-Key": "k"}',
            sms_gateway_content_type=FORM,
            sms_gateway_body="to={to}&text={text}",
        )
        senders = build_code_senders(settings, clock=FixedClock(START))
        assert senders.email is None
        assert senders.sms is not None
        senders.sms.send(destination=NUMBER, text=TEXT, code=CODE)
    assert api.requests[0].headers["x-api-key"] == "k"
    assert api.requests[0].form() == {"to": NUMBER, "text": TEXT}


def test_by_default_no_code_sender_is_configured(tmp_path: Path) -> None:
    senders = build_code_senders(load_settings(tmp_path), clock=FixedClock(START))
    assert (senders.email, senders.sms) == (None, None)
