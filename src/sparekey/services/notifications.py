"""Security notifications: written to an outbox with their change, delivered at least once.

When a factor is added, removed or marked lost, backup codes are regenerated or run low, the
throttle engages, recovery starts, or a device token for the desktop vault's backups is created or
revoked, the audit recorder calls :meth:`Outbox.enqueue` inside the
transaction of that change. It writes one ``outbox`` row per enabled channel: an email to the user's
contact address (as it is in that transaction) and a webhook to the application. A crash before the
commit loses the change and its notification together; after it, the rows wait for delivery.

:class:`DeliveryWorker` claims due rows under a lease (see :mod:`sparekey.storage.outbox`), sends
each, and marks it delivered or schedules a retry with exponential backoff (30 s, 1 min, 2 min ...
capped at 1 h), giving up after ``max_attempts`` (the row stays, with its last error, and the audit
log records ``notification.given_up`` in the same transaction). A worker that
dies between sending and recording sends that row again once its lease runs out: delivery is **at
least once**, and every event carries a stable UUID that receivers deduplicate on (``id`` in the
JSON body, the ``Sparekey-Event-Id`` header of both the webhook and the email). Rows delivered or
given up are deleted once they are older than the retention (``notify_retention_days``), by
:meth:`DeliveryWorker.prune`, which every worker runs once an hour.

Webhooks are signed like Stripe's: ``Sparekey-Signature: t=<unix time>,v1=<hex>``, where ``v1`` is
HMAC-SHA256 with the webhook secret over ``"<t>.<body>"``. A receiver recomputes it over the raw
body, compares in constant time, and rejects a ``t`` far from its own clock.

Payloads name the event, the user, the time and non-secret details only; keys that could carry a
code or a secret (:data:`NEVER_SENT`) are dropped even if a caller passes them.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import ssl
import threading
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage
from email.utils import format_datetime, parseaddr
from typing import Protocol

import httpx2
from sqlalchemy import Connection

from sparekey.crashpoints import crashpoint
from sparekey.domain.errors import DeliveryError
from sparekey.domain.ports import Clock
from sparekey.services.smtp import MAX_REASON, SmtpServer, describe_error
from sparekey.storage import outbox as repo
from sparekey.storage.database import Database
from sparekey.storage.outbox import OutboxMessage
from sparekey.storage.prepared import Unit

__all__ = [
    "EMAIL",
    "NEVER_SENT",
    "NOTIFY_EVENTS",
    "WEBHOOK",
    "DeliveryError",
    "DeliveryWorker",
    "EmailSender",
    "Outbox",
    "Sender",
    "WebhookSender",
    "compose_email",
    "sign_webhook",
]

log = logging.getLogger("sparekey.notifications")

EMAIL = "email"
WEBHOOK = "webhook"

NOTIFY_EVENTS: frozenset[str] = frozenset(
    {
        "factor.confirmed",
        "factor.removed",
        "factor.lost",
        "factor.destination_changed",
        "backup_codes.generated",
        "backup_codes.low",
        "throttle.engaged",
        "webauthn.counter_regressed",
        "recovery.requested",
        "recovery.identity_verified",
        "recovery.approval_given",
        "recovery.started",
        "recovery.ready",
        "recovery.pass_issued",
        "recovery.pass_redeemed",
        "recovery.completed",
        "recovery.denied",
        "recovery.cancelled",
        "recovery.expired",
        "recovery.break_glass",
        "device_token.created",
        "device_token.revoked",
    }
)

NEVER_SENT: frozenset[str] = frozenset(
    {"code", "codes", "secret", "seed", "token", "password", "otpauth_uri", "recovery_code"}
)

_MAX_ERROR = MAX_REASON


# -- writing ------------------------------------------------------------------------------------


def _public(details: Mapping[str, object]) -> dict[str, object]:
    kept = {}
    for key, value in details.items():
        name = key.lower()
        if name in NEVER_SENT or "secret" in name or "password" in name:
            log.warning("notification detail %r dropped: it may hold a secret", key)
            continue
        kept[key] = value
    return kept


class Outbox:
    """Writes notifications into the transaction of the change they tell about."""

    def __init__(self, *, email: bool, webhook: bool) -> None:
        self._email = email
        self._webhook = webhook

    @property
    def enabled(self) -> bool:
        return self._email or self._webhook

    def enqueue(
        self,
        target: Connection | Unit,
        *,
        event: str,
        user_id: str | None,
        details: Mapping[str, object],
        now: datetime,
    ) -> None:
        """Write one row per enabled channel for ``event`` through ``target``, inside its
        transaction. Events outside :data:`NOTIFY_EVENTS` are ignored, so the audit recorder
        may offer every event. No email is written for a user without an address."""
        if event not in NOTIFY_EVENTS or not self.enabled:
            return
        if isinstance(target, Unit):
            target = target.write()
        recipient = None
        if self._email and user_id is not None:
            recipient = repo.user_email(target, user_id)
        event_id = str(uuid.uuid4())
        payload = json.dumps(
            {
                "id": event_id,
                "type": event,
                "user_id": user_id,
                "occurred_at": now.astimezone(UTC).isoformat(),
                "details": _public(details),
            },
            sort_keys=True,
            separators=(",", ":"),
        )
        channels: list[tuple[str, str | None]] = [(EMAIL, recipient)] if recipient else []
        if self._webhook:
            channels.append((WEBHOOK, None))
        for channel, to in channels:
            repo.insert_message(
                target,
                event_id=event_id,
                event=event,
                channel=channel,
                recipient=to,
                payload=payload,
                now=now,
            )


# -- sending ------------------------------------------------------------------------------------


class Sender(Protocol):
    channel: str
    timeout: float

    def send(self, message: OutboxMessage, *, now: datetime) -> None:
        """Deliver ``message`` or raise :class:`DeliveryError`."""
        ...


def sign_webhook(secret: bytes, timestamp: int, body: bytes) -> str:
    """The ``Sparekey-Signature`` header value for ``body`` sent at ``timestamp``."""
    digest = hmac.new(secret, str(timestamp).encode() + b"." + body, hashlib.sha256).hexdigest()
    return f"t={timestamp},v1={digest}"


_MAX_ANSWER_READ = 64 * 1024


class WebhookSender:
    """POSTs the payload as JSON to the application's webhook URL, signed with its secret."""

    channel = WEBHOOK

    def __init__(self, *, url: str, secret: bytes, timeout: float) -> None:
        self._url = url
        self._secret = secret
        self.timeout = timeout
        # One client, made on first use and kept: its connection pool keeps the connection to
        # the application alive, and loading the CA bundle (tens of milliseconds) happens once.
        self._client: httpx2.Client | None = None
        self._client_lock = threading.Lock()

    def _http(self) -> httpx2.Client:
        with self._client_lock:
            if self._client is None:
                self._client = httpx2.Client(timeout=self.timeout)
            return self._client

    def close(self) -> None:
        with self._client_lock:
            client, self._client = self._client, None
        if client is not None:
            client.close()

    def send(self, message: OutboxMessage, *, now: datetime) -> None:
        body = message.payload.encode()
        headers = {
            "Content-Type": "application/json",
            "User-Agent": "Sparekey-Webhook/1",
            "Sparekey-Event-Id": message.event_id,
            "Sparekey-Event": message.event,
            "Sparekey-Signature": sign_webhook(self._secret, int(now.timestamp()), body),
        }
        try:
            with self._http().stream("POST", self._url, content=body, headers=headers) as response:
                status = response.status_code
                # Read a short answer to its end so the connection goes back to the pool; a long
                # one is not worth reading (closing the stream closes that connection).
                received = 0
                for chunk in response.iter_bytes():
                    received += len(chunk)
                    if received > _MAX_ANSWER_READ:
                        break
        except httpx2.HTTPError as exc:
            raise DeliveryError(describe_error(exc)) from None
        if not 200 <= status < 300:
            raise DeliveryError(f"HTTP {status}")


@dataclass(frozen=True)
class _Wording:
    subject: str
    what: str
    advice: str


_IF_NOT_YOU = (
    "If this was you, there is nothing more to do. If it was not, please contact your "
    "administrator or support team soon so they can secure your account."
)

_IF_NOT_YOU_RECOVERY = (
    "If this was you, there is nothing more to do. If it was not, sign in with any of your "
    "sign-in methods to stop it, and contact your administrator or support team right away."
)

_WORDING = {
    "factor.confirmed": _Wording(
        "A sign-in method was added to your account",
        "A new {method} was added to your account for two-step sign-in",
        _IF_NOT_YOU,
    ),
    "factor.removed": _Wording(
        "A sign-in method was removed from your account",
        "A {method} was removed from your account and no longer works for signing in",
        _IF_NOT_YOU,
    ),
    "factor.lost": _Wording(
        "A sign-in method was marked as lost",
        "A {method} on your account was marked as lost and no longer works for signing in",
        _IF_NOT_YOU,
    ),
    "factor.destination_changed": _Wording(
        "Where your sign-in codes go was changed",
        "The {method} was changed to {destination}, which receives codes from {usable_after}",
        _IF_NOT_YOU_RECOVERY,
    ),
    "backup_codes.generated": _Wording(
        "New backup codes were created",
        "A new set of backup codes was created for your account; any backup codes you had "
        "before no longer work",
        "If this was you, keep the new codes somewhere safe. If it was not, please contact "
        "your administrator or support team soon so they can secure your account.",
    ),
    "backup_codes.low": _Wording(
        "You are running low on backup codes",
        "You have {remaining} backup codes left",
        "Creating a new set now means you can still sign in if you lose your phone or "
        "security key.",
    ),
    "throttle.engaged": _Wording(
        "Sign-in codes paused after several wrong attempts",
        "After several wrong codes, signing in with authenticator codes on your account "
        "is paused for a while",
        "If this was you, wait a little and try again, or use a backup code. If it was not, "
        "someone may know your password: please change it, and contact your administrator "
        "or support team.",
    ),
    "webauthn.counter_regressed": _Wording(
        "A security key on your account may have been copied",
        "A sign-in with one of your security keys was refused because the key's counter went "
        "backwards, which is what a copied (cloned) key looks like",
        "If you did not just sign in, please contact your administrator or support team right "
        "away. Either way, consider removing that key and registering a new one.",
    ),
    "recovery.requested": _Wording(
        "Someone asked to recover your account",
        "A request was opened to let someone back into your account without your usual "
        "two-step method",
        _IF_NOT_YOU_RECOVERY,
    ),
    "recovery.identity_verified": _Wording(
        "Recovery of your account: identity checked",
        "The support team recorded that they checked the identity of the person recovering "
        "your account",
        _IF_NOT_YOU_RECOVERY,
    ),
    "recovery.approval_given": _Wording(
        "Recovery of your account: an approval was given",
        "Someone approved the recovery of your account",
        _IF_NOT_YOU_RECOVERY,
    ),
    "recovery.ready": _Wording(
        "Recovery of your account: the waiting period is over",
        "The waiting period for the recovery of your account is over; a temporary access pass "
        "can now be issued",
        _IF_NOT_YOU_RECOVERY,
    ),
    "recovery.pass_issued": _Wording(
        "A temporary access pass was issued for your account",
        "A one-time temporary access pass was issued to recover your account",
        _IF_NOT_YOU_RECOVERY,
    ),
    "recovery.pass_redeemed": _Wording(
        "A temporary access pass was used on your account",
        "The temporary access pass for your account was used to set up a new sign-in method",
        _IF_NOT_YOU_RECOVERY,
    ),
    "recovery.completed": _Wording(
        "Recovery of your account is complete",
        "Your account was recovered: a new sign-in method was added and new backup codes made",
        _IF_NOT_YOU,
    ),
    "recovery.denied": _Wording(
        "A recovery request for your account was denied",
        "A request to recover your account was denied by the support team",
        "Nothing changed on your account. If you asked for it, contact your support team.",
    ),
    "recovery.cancelled": _Wording(
        "A recovery of your account was cancelled",
        "A recovery of your account was cancelled",
        "Nothing changed on your account.",
    ),
    "recovery.expired": _Wording(
        "A recovery of your account expired",
        "A recovery of your account was not completed in time and has expired",
        "Nothing changed on your account.",
    ),
    "recovery.break_glass": _Wording(
        "Emergency access to your account was granted",
        "An administrator with access to the server granted emergency access to your account",
        _IF_NOT_YOU_RECOVERY,
    ),
    "device_token.created": _Wording(
        "A computer can now back up your authenticator vault",
        "A device token was created for your account: the desktop authenticator that holds it "
        "can store and fetch encrypted backups of its vault",
        "If this was you, there is nothing more to do. If it was not, revoke it on your security "
        "page and contact your administrator or support team soon.",
    ),
    "device_token.revoked": _Wording(
        "A computer can no longer back up your authenticator vault",
        "A device token of your account was revoked; the desktop authenticator that held it can "
        "no longer store or fetch backups of its vault",
        _IF_NOT_YOU,
    ),
    "recovery.started": _Wording(
        "Account recovery was approved and starts after a waiting period",
        "Recovery of your account was approved; after the waiting period someone will be able "
        "to sign in without your usual two-step method",
        _IF_NOT_YOU_RECOVERY,
    ),
}

_METHODS = {
    "totp": "authenticator app",
    "hotp": "hardware token",
    "webauthn": "security key",
    "email": "email address for sign-in codes",
    "sms": "phone number for text-message codes",
}


def _when(moment: datetime) -> str:
    moment = moment.astimezone(UTC)
    return f"{moment.day} {moment:%B %Y} at {moment:%H:%M} UTC"


def compose_email(
    message: OutboxMessage, *, sender: str, now: datetime, product: str
) -> EmailMessage:
    """The plain-text email for an outbox row: what changed, when, and what to do."""
    payload = json.loads(message.payload)
    details = payload.get("details") or {}
    wording = _WORDING.get(
        message.event,
        _Wording("A security setting changed", "A security setting of your account changed", ""),
    )
    what = wording.what.format(
        method=_METHODS.get(str(details.get("factor_type")), "sign-in method"),
        remaining=details.get("remaining", "only a few"),
        destination=details.get("destination", "a new destination"),
        usable_after=_when(datetime.fromisoformat(str(details["usable_after"])))
        if details.get("usable_after")
        else "the end of a waiting period",
    )
    occurred = datetime.fromisoformat(payload["occurred_at"])
    body = (
        f"Hello,\n\n{what} on {_when(occurred)}.\n\n"
        + (f"{wording.advice}\n\n" if wording.advice else "")
        + f"Reference: {message.event_id}\n"
        + f"This is an automatic message from {product}; replies are not read.\n"
    )
    mail = EmailMessage()
    mail["Subject"] = f"{product}: {wording.subject}"
    mail["From"] = sender
    mail["To"] = message.recipient or ""
    mail["Date"] = format_datetime(now.astimezone(UTC))
    domain = parseaddr(sender)[1].rpartition("@")[2] or "sparekey.invalid"
    mail["Message-ID"] = f"<{message.event_id}@{domain}>"
    mail["Sparekey-Event-Id"] = message.event_id
    mail["Sparekey-Event"] = message.event
    mail["Auto-Submitted"] = "auto-generated"  # RFC 3834: no vacation replies
    mail.set_content(body)
    return mail


class EmailSender:
    """Sends the plain-text email over SMTP, with STARTTLS and a login when configured."""

    channel = EMAIL

    def __init__(
        self,
        *,
        host: str,
        port: int,
        sender: str,
        username: str = "",
        password: str = "",
        starttls: bool = True,
        timeout: float = 10.0,
        product: str = "Sparekey",
        tls_context: ssl.SSLContext | None = None,
    ) -> None:
        self._server = SmtpServer(
            host=host,
            port=port,
            username=username,
            password=password,
            starttls=starttls,
            timeout=timeout,
            tls_context=tls_context,
        )
        self._sender = sender
        self._product = product
        self.timeout = timeout

    def send(self, message: OutboxMessage, *, now: datetime) -> None:
        if not message.recipient:
            raise DeliveryError("no recipient address")
        mail = compose_email(message, sender=self._sender, now=now, product=self._product)
        self._server.send(mail, sender=self._sender, to=message.recipient)


# -- the worker ---------------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class _Round:
    claimed: int
    attempted: int
    delivered: int


GivenUp = Callable[[Connection, OutboxMessage], None]
"""Called in the transaction that gives up on a row (the runtime records it in the audit log)."""

PRUNE_BATCH = 500  # rows looked at per pruning transaction: short, so delivery is not held up


class DeliveryWorker:
    """Claims due outbox rows in batches and delivers them; :meth:`start` runs it in a thread.

    Any number of workers, on any number of nodes, may run at once: a claimed row is leased to
    one worker for ``lease_seconds``, and a worker starts a send only while at least three send
    timeouts of its lease remain (it hands the rest of its batch back otherwise). Running, it
    also deletes settled rows past ``retention`` every ``prune_seconds`` (:meth:`prune`).
    """

    def __init__(
        self,
        *,
        db: Database,
        clock: Clock,
        senders: Sequence[Sender],
        batch_size: int = 20,
        lease_seconds: float = 300.0,
        max_attempts: int = 12,
        retry_base_seconds: float = 30.0,
        retry_max_seconds: float = 3600.0,
        interval: float = 1.0,
        retention: timedelta = timedelta(days=30),
        prune_seconds: float = 3600.0,
        on_given_up: GivenUp | None = None,
    ) -> None:
        self._db = db
        self._clock = clock
        self._senders = {sender.channel: sender for sender in senders}
        self._batch_size = batch_size
        self._lease = timedelta(seconds=lease_seconds)
        self._max_attempts = max_attempts
        self._retry_base = retry_base_seconds
        self._retry_max = retry_max_seconds
        self._interval = interval
        self._retention = retention
        self._prune_seconds = prune_seconds
        self._on_given_up = on_given_up
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def channels(self) -> frozenset[str]:
        return frozenset(self._senders)

    @property
    def enabled(self) -> bool:
        return bool(self._senders)

    def retry_delay(self, attempts: int) -> timedelta:
        """How long to wait after the ``attempts``-th failed attempt."""
        return timedelta(seconds=min(self._retry_base * 2 ** (attempts - 1), self._retry_max))

    def run_once(self) -> int:
        """Claim one batch of due rows and deliver it; returns how many were delivered."""
        return self._round().delivered

    def drain(self) -> int:
        """Deliver batches until no full batch is due; returns how many were delivered."""
        delivered = 0
        while not self._stop.is_set():
            done = self._round()
            delivered += done.delivered
            if done.attempted < self._batch_size:
                break
        return delivered

    def prune(self) -> int:
        """Delete the rows delivered or given up that were written more than the retention ago,
        a short transaction per :data:`PRUNE_BATCH` rows; returns how many were deleted."""
        before = self._clock.now() - self._retention
        deleted, after_id = 0, 0
        while not self._stop.is_set():
            with self._db.write() as conn:
                pruned = repo.prune_settled(
                    conn, before=before, after_id=after_id, limit=PRUNE_BATCH
                )
            deleted += pruned.deleted
            after_id = pruned.last_id
            if pruned.done:
                break
        if deleted:
            log.info("deleted %d notifications settled and written before %s", deleted, before)
        return deleted

    def _round(self) -> _Round:
        if not self._senders:
            return _Round(claimed=0, attempted=0, delivered=0)
        now = self._clock.now()
        lease_until = now + self._lease
        with self._db.write() as conn:
            claimed = repo.claim_due(
                conn,
                channels=self._senders.keys(),
                now=now,
                lease_until=lease_until,
                limit=self._batch_size,
            )
        delivered = 0
        for index, message in enumerate(claimed):
            sender = self._senders[message.channel]
            left = (lease_until - self._clock.now()).total_seconds()
            if self._stop.is_set() or left < 3 * sender.timeout:
                with self._db.write() as conn:
                    rest = [m.id for m in claimed[index:]]
                    repo.release(conn, rest, lease_until=lease_until)
                return _Round(claimed=len(claimed), attempted=index, delivered=delivered)
            delivered += self._deliver(message, sender, lease_until)
        return _Round(claimed=len(claimed), attempted=len(claimed), delivered=delivered)

    def _deliver(self, message: OutboxMessage, sender: Sender, lease_until: datetime) -> int:
        if message.attempts > self._max_attempts:  # workers died during every attempt
            self._failed(message, lease_until, "gave up: no attempt completed")
            return 0
        try:
            sender.send(message, now=self._clock.now())
        except DeliveryError as exc:
            self._failed(message, lease_until, str(exc))
            return 0
        except Exception as exc:  # a bug must not stop the other rows; the row is retried
            log.exception("sending notification %s failed unexpectedly", message.event_id)
            self._failed(message, lease_until, describe_error(exc))
            return 0
        crashpoint("notify.sent")
        with self._db.write() as conn:
            repo.mark_delivered(conn, message.id, now=self._clock.now())
        crashpoint("notify.marked")
        return 1

    def _failed(self, message: OutboxMessage, lease_until: datetime, error: str) -> None:
        now = self._clock.now()
        error = error[:_MAX_ERROR]
        with self._db.write() as conn:
            if message.attempts >= self._max_attempts:
                held = repo.mark_failed(
                    conn, message.id, lease_until=lease_until, now=now, error=error
                )
                if held and self._on_given_up is not None:
                    self._on_given_up(conn, message)
                log.error(
                    "gave up on %s notification %s (%s) after %d attempts: %s",
                    message.channel,
                    message.event_id,
                    message.event,
                    message.attempts,
                    error,
                )
                return
            retry_at = now + self.retry_delay(message.attempts)
            repo.schedule_retry(
                conn, message.id, lease_until=lease_until, next_attempt_at=retry_at, error=error
            )
        log.warning(
            "%s notification %s (%s), attempt %d, failed: %s; retrying at %s",
            message.channel,
            message.event_id,
            message.event,
            message.attempts,
            error,
            retry_at.isoformat(),
        )

    # -- running in the background --------------------------------------------------------------

    def start(self) -> None:
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="notification-worker", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop after the send in progress; the rest of the batch is handed back at once."""
        self._stop.set()
        if self._thread is not None:
            longest = max((s.timeout for s in self._senders.values()), default=0.0)
            self._thread.join(timeout=3 * longest + 10)
            self._thread = None
        for sender in self._senders.values():
            close = getattr(sender, "close", None)
            if close is not None:
                close()

    def _run(self) -> None:
        prune_at = time.monotonic()  # at start, then every prune_seconds
        while not self._stop.is_set():
            try:
                self.drain()
            except Exception:  # the next round retries; a server must not stop over it
                log.exception("delivering notifications failed")
            if time.monotonic() >= prune_at:
                prune_at = time.monotonic() + self._prune_seconds
                try:
                    self.prune()
                except Exception:  # the next hour's pruning retries
                    log.exception("deleting old notifications failed")
            self._stop.wait(self._interval)
