"""Senders of one-time codes: email over SMTP, SMS through Twilio or a generic HTTP gateway.

A :class:`CodeSender` hands one message to its provider while the request that asked for it waits,
and returns a :class:`Delivery` (the provider and its message id) or raises
:class:`~sparekey.domain.errors.DeliveryError`, whose one-line reason never holds the code, the full
phone number or a credential. The caller marks a code as sent only after a :class:`Delivery`.

Retries and idempotency (both HTTP senders; see docs/decisions/0015-delivery-providers.md)
    Creating a message is not idempotent: Twilio's Messages API has no idempotency key, and a
    generic gateway cannot be assumed to have one. So a request is repeated only when the provider
    cannot have accepted it, or said it did not:

    - the connection could not be made (refused, unreachable, connect timeout): nothing was sent;
    - ``429``: the provider refused to process it (Twilio: "never processed and always safe to
      retry"); ``Retry-After`` is honoured when it is short, otherwise the send fails at once;
    - ``5xx``: the provider answered that it failed. Twilio warns that a ``500`` to a message
      create may on rare occasions have sent the message anyway; the repeat carries the same text
      and the same code, so the worst case is that one code arrives twice, which costs an SMS but
      weakens nothing, while giving up would leave the user without their code.

    It is never repeated once the request may have been taken in silence: a read or write timeout,
    a connection dropped mid-answer, a malformed answer. Those fail at once (the message may still
    arrive; a new code voids it). Any ``2xx`` is a success even when its body cannot be read.
    At most ``retries`` repeats, waiting ``backoff`` seconds and doubling, and no single wait
    longer than ``max_wait``: a send takes at most about
    ``(retries + 1) x (connect + read timeout) + waits``.
"""

from __future__ import annotations

import json
import logging
import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from email.message import EmailMessage
from email.utils import format_datetime, make_msgid, parseaddr
from typing import Any, Literal, Protocol
from urllib.parse import quote, quote_plus

import httpx2

import sparekey
from sparekey.domain.errors import DeliveryError
from sparekey.domain.ports import Clock
from sparekey.services.smtp import MAX_REASON, SmtpServer, describe_error

__all__ = [
    "FORM",
    "JSON",
    "PLACEHOLDERS",
    "CodeSender",
    "CodeSenders",
    "Delivery",
    "HttpGatewaySender",
    "RetryPolicy",
    "SmtpSender",
    "TwilioSender",
    "check_gateway_template",
    "render_template",
]

log = logging.getLogger("sparekey.delivery")

JSON = "application/json"
FORM = "application/x-www-form-urlencoded"
PLACEHOLDERS = ("to", "text", "code")
TWILIO_BASE_URL = "https://api.twilio.com"

_USER_AGENT = f"Sparekey/{sparekey.__version__}"
_PLACEHOLDER = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)\}")
_NUMBERISH = re.compile(r"\+?\d[\d ().-]{5,}\d")
_ID_KEYS = ("id", "message_id", "messageId", "sid")


@dataclass(frozen=True, kw_only=True)
class Delivery:
    """A message the provider accepted: which provider, its id for the message (``None`` when it
    gives none), and how many requests it took."""

    provider: str
    message_id: str | None
    attempts: int = 1


class CodeSender(Protocol):
    provider: str

    def send(self, *, destination: str, text: str, code: str) -> Delivery:
        """Hand ``text`` to the provider for ``destination`` (a normalised address or E.164
        number), or raise :class:`DeliveryError`. ``code`` is the code ``text`` carries, for
        gateway templates and for keeping it out of errors; it is never logged."""
        ...


@dataclass(frozen=True, kw_only=True)
class CodeSenders:
    """The configured senders; ``None`` where a channel is not configured."""

    email: CodeSender | None = None
    sms: CodeSender | None = None


@dataclass(frozen=True, kw_only=True)
class RetryPolicy:
    timeout: float = 10.0
    retries: int = 1
    backoff: float = 0.25
    max_wait: float = 2.0

    def wait(self, attempt: int, retry_after: float | None = None) -> float:
        return retry_after if retry_after is not None else self.backoff * 2 ** (attempt - 1)


def _scrub(reason: str, *, destination: str, code: str) -> str:
    """One line, without the code, the destination or anything shaped like a phone number."""
    if code:
        reason = reason.replace(code, "[code]")
    if destination:
        reason = reason.replace(destination, "[destination]")
    reason = _NUMBERISH.sub("[number]", reason)
    return " ".join(reason.split())[:MAX_REASON]


def _failed(provider: str, reason: str, *, destination: str, code: str) -> DeliveryError:
    return DeliveryError(_scrub(f"{provider}: {reason}", destination=destination, code=code))


# -- email --------------------------------------------------------------------------------------


class SmtpSender:
    """Email codes, as plain text over the SMTP server the security notifications use."""

    provider = "smtp"

    def __init__(self, *, server: SmtpServer, sender: str, product: str, clock: Clock) -> None:
        self._server = server
        self._sender = sender
        self._product = product
        self._clock = clock

    def send(self, *, destination: str, text: str, code: str) -> Delivery:
        mail = EmailMessage()
        mail["Subject"] = f"{self._product}: your sign-in code"
        mail["From"] = self._sender
        mail["To"] = destination
        mail["Date"] = format_datetime(self._clock.now())
        domain = parseaddr(self._sender)[1].rpartition("@")[2] or "sparekey.invalid"
        message_id = make_msgid(domain=domain)
        mail["Message-ID"] = message_id
        mail["Auto-Submitted"] = "auto-generated"  # RFC 3834: no vacation replies
        mail.set_content(text if text.endswith("\n") else text + "\n")
        try:
            self._server.send(mail, sender=self._sender, to=destination)
        except DeliveryError as exc:
            raise _failed(self.provider, exc.detail, destination=destination, code=code) from None
        return Delivery(provider=self.provider, message_id=message_id)


# -- HTTP ---------------------------------------------------------------------------------------


def _retry_after(response: httpx2.Response) -> float | None:
    value = response.headers.get("Retry-After", "")
    return float(value) if value.isdigit() else None


def _exchange(
    *,
    provider: str,
    policy: RetryPolicy,
    request: Callable[[httpx2.Client], httpx2.Response],
    destination: str,
    code: str,
) -> tuple[httpx2.Response, int]:
    """Make the request, repeating it only as the module docstring says; the last answer and
    how many requests were made."""
    attempt = 0
    while True:
        attempt += 1
        try:
            with httpx2.Client(timeout=httpx2.Timeout(policy.timeout)) as client:
                response = request(client)
        except (httpx2.ConnectError, httpx2.ConnectTimeout, httpx2.PoolTimeout) as exc:
            reason = f"cannot connect ({type(exc).__name__})"
            if attempt > policy.retries:
                raise _failed(
                    provider,
                    f"{reason} after {attempt} attempt{'s' if attempt > 1 else ''}",
                    destination=destination,
                    code=code,
                ) from None
            wait = policy.wait(attempt)
        except httpx2.TimeoutException as exc:
            raise _failed(
                provider,
                f"no answer within {policy.timeout:g} s ({type(exc).__name__}); not repeated, "
                "as the message may have been accepted",
                destination=destination,
                code=code,
            ) from None
        except httpx2.HTTPError as exc:
            raise _failed(
                provider,
                f"{describe_error(exc)}; not repeated, as the message may have been accepted",
                destination=destination,
                code=code,
            ) from None
        else:
            status = response.status_code
            if not (status == 429 or status >= 500) or attempt > policy.retries:
                return response, attempt
            wait = policy.wait(attempt, _retry_after(response))
            if wait > policy.max_wait:
                return response, attempt
            reason = f"HTTP {status}"
        log.warning(
            "sending a code through %s: %s; repeating in %.2f s (attempt %d of %d)",
            provider,
            reason,
            wait,
            attempt + 1,
            policy.retries + 1,
        )
        time.sleep(wait)


def _json(response: httpx2.Response) -> Any:
    try:
        return response.json()
    except ValueError:
        return None


def _message_id(body: Any, keys: tuple[str, ...]) -> str | None:
    if isinstance(body, dict):
        for key in keys:
            value = body.get(key)
            if isinstance(value, str | int) and not isinstance(value, bool) and str(value):
                return str(value)[:128]
    return None


def _attempts(count: int) -> str:
    return f" after {count} attempts" if count > 1 else ""


class TwilioSender:
    """SMS through Twilio's Programmable Messaging REST API (no SDK): one form-encoded
    ``POST /2010-04-01/Accounts/{AccountSid}/Messages.json`` with ``To``, ``Body`` and either
    ``MessagingServiceSid`` (preferred when set) or ``From``, authenticated with HTTP Basic
    ``AccountSid:AuthToken``. Twilio answers ``201`` with the Message resource (its ``sid``), or an
    error object ``{"code", "message", "more_info", "status"}``."""

    provider = "twilio"

    def __init__(
        self,
        *,
        account_sid: str,
        auth_token: str,
        sender: str = "",
        messaging_service_sid: str = "",
        base_url: str = TWILIO_BASE_URL,
        policy: RetryPolicy,
    ) -> None:
        if not sender and not messaging_service_sid:
            raise ValueError("a Twilio sender needs a From number or a messaging service")
        self._url = (
            f"{base_url.rstrip('/')}/2010-04-01/Accounts/{quote(account_sid, safe='')}"
            "/Messages.json"
        )
        self._auth = httpx2.BasicAuth(account_sid, auth_token)
        self._origin = (
            {"MessagingServiceSid": messaging_service_sid}
            if messaging_service_sid
            else {"From": sender}
        )
        self._policy = policy

    def send(self, *, destination: str, text: str, code: str) -> Delivery:
        form = {"To": destination, **self._origin, "Body": text}
        headers = {"Accept": JSON, "User-Agent": _USER_AGENT}
        response, attempts = _exchange(
            provider=self.provider,
            policy=self._policy,
            request=lambda client: client.post(
                self._url, data=form, headers=headers, auth=self._auth
            ),
            destination=destination,
            code=code,
        )
        body = _json(response)
        if response.is_success:
            return Delivery(
                provider=self.provider, message_id=_message_id(body, ("sid",)), attempts=attempts
            )
        reason = f"HTTP {response.status_code}"
        if isinstance(body, dict) and body.get("message"):
            number = body.get("code")
            reason += f", error {number}" if isinstance(number, int) else ""
            reason += f": {body['message']}"
        raise _failed(
            self.provider, reason + _attempts(attempts), destination=destination, code=code
        )


# -- a generic HTTP gateway ---------------------------------------------------------------------


def render_template(template: str, values: Mapping[str, str], *, content_type: str) -> str:
    """``template`` with ``{to}``, ``{text}`` and ``{code}`` replaced by ``values``, each escaped
    for where it stands: inside a JSON string (without the quotes, which the template has), or
    form-encoded. Other braces are left alone, so JSON templates need no doubling."""
    if content_type == JSON:

        def escape(value: str) -> str:
            return json.dumps(value)[1:-1]
    else:

        def escape(value: str) -> str:
            return quote_plus(value, safe="")

    return _PLACEHOLDER.sub(lambda m: escape(values[m[1]]) if m[1] in values else m[0], template)


def check_gateway_template(template: str, *, content_type: str) -> str | None:
    """Why ``template`` cannot be used as a gateway body, or ``None``: every placeholder must be
    known, and a JSON body must stay valid JSON whatever the values (placeholders inside quotes)."""
    if not template:
        return None
    unknown = sorted({m[1] for m in _PLACEHOLDER.finditer(template)} - set(PLACEHOLDERS))
    if unknown:
        names = ", ".join(f"{{{name}}}" for name in unknown)
        return f"unknown placeholder {names}; use {{to}}, {{text}} or {{code}}"
    if content_type == JSON:
        sample = {"to": '+1"2', "text": 'a "b"\n{c}\\', "code": "123456"}
        try:
            json.loads(render_template(template, sample, content_type=JSON))
        except ValueError:
            return "not valid JSON once filled in (put each placeholder inside a JSON string)"
    return None


class HttpGatewaySender:
    """SMS through any HTTP gateway: ``method`` to ``url`` with ``headers``, and for ``POST`` the
    ``body`` template as JSON or a form. Placeholders ``{to}``, ``{text}``, ``{code}`` may stand in
    the URL (percent-encoded) and the body (escaped as :func:`render_template` says). Any ``2xx``
    is success; the message id is read from a JSON answer's ``id``, ``message_id``, ``messageId``
    or ``sid`` when present."""

    provider = "sms-gateway"

    def __init__(
        self,
        *,
        url: str,
        method: Literal["POST", "GET"] = "POST",
        headers: Mapping[str, str] | None = None,
        body: str = "",
        content_type: str = JSON,
        policy: RetryPolicy,
    ) -> None:
        if content_type not in (JSON, FORM):
            raise ValueError(f"unsupported gateway content type {content_type!r}")
        if (method == "POST") != bool(body):
            raise ValueError("a gateway body template is needed with POST, and only then")
        problem = check_gateway_template(url, content_type=FORM) or check_gateway_template(
            body, content_type=content_type
        )
        if problem:
            raise ValueError(f"gateway template: {problem}")
        self._url = url
        self._method = method
        self._headers = {"User-Agent": _USER_AGENT, "Accept": JSON, **(headers or {})}
        self._body = body
        self._content_type = content_type
        self._policy = policy

    def send(self, *, destination: str, text: str, code: str) -> Delivery:
        values = {"to": destination, "text": text, "code": code}
        url = _PLACEHOLDER.sub(
            lambda m: quote(values[m[1]], safe="") if m[1] in values else m[0], self._url
        )
        headers = dict(self._headers)
        content: bytes | None = None
        if self._method == "POST":
            rendered = render_template(self._body, values, content_type=self._content_type)
            content = rendered.encode()
            headers["Content-Type"] = (
                f"{JSON}; charset=utf-8" if self._content_type == JSON else FORM
            )
        response, attempts = _exchange(
            provider=self.provider,
            policy=self._policy,
            request=lambda client: client.request(
                self._method, url, content=content, headers=headers
            ),
            destination=destination,
            code=code,
        )
        if response.is_success:
            message_id = _message_id(_json(response), _ID_KEYS)
            return Delivery(provider=self.provider, message_id=message_id, attempts=attempts)
        raise _failed(
            self.provider,
            f"HTTP {response.status_code}{_attempts(attempts)}",
            destination=destination,
            code=code,
        )
