"""Security notifications: written with their change, delivered by email and signed webhook to real
receivers on loopback, retried with backoff, never twice at once, and never lost to a crash."""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import Connection

from sparekey.domain.models import FactorType
from sparekey.domain.ports import FixedClock, SystemClock
from sparekey.protocols.otpauth import b32encode
from sparekey.runtime import Sparekey, initialize
from sparekey.services.notifications import (
    NOTIFY_EVENTS,
    DeliveryWorker,
    EmailSender,
    Outbox,
    Sender,
    WebhookSender,
    compose_email,
)
from sparekey.settings import Settings, SettingsError, load_settings
from sparekey.storage import outbox as repo
from sparekey.storage.outbox import OutboxMessage
from sparekey.storage.prepared import Unit
from tests.helpers import totp_code
from tests.helpers_notifications import LOOPBACK, SmtpReceiver, WebhookReceiver, tls_contexts

SECRET = b"whsec_test_0123456789abcdef"
SPAREKEY = str(Path(sys.executable).parent / "sparekey")
BOTH = Outbox(email=True, webhook=True)


def verify_signature(secret: bytes, header: str, body: bytes) -> int:
    """Check ``Sparekey-Signature`` as a receiver would, independently of the server's code;
    returns the signed timestamp."""
    fields = dict(part.split("=", 1) for part in header.split(","))
    expected = hmac.new(secret, fields["t"].encode() + b"." + body, hashlib.sha256).hexdigest()
    assert hmac.compare_digest(expected, fields["v1"]), "the webhook signature does not verify"
    return int(fields["t"])


def rows(sparekey: Sparekey) -> list[OutboxMessage]:
    with sparekey.db.read() as conn:
        return repo.messages(conn)


def enqueue(
    sparekey: Sparekey,
    event: str,
    user_id: str | None = "alice",
    *,
    outbox: Outbox = BOTH,
    now: datetime | None = None,
    **details: object,
) -> None:
    with sparekey.db.write() as conn:
        outbox.enqueue(
            conn, event=event, user_id=user_id, details=details, now=now or sparekey.clock.now()
        )


def worker(sparekey: Sparekey, *senders: Sender, **options: float) -> DeliveryWorker:
    return DeliveryWorker(db=sparekey.db, clock=sparekey.clock, senders=senders, **options)


_SENDERS: list[WebhookSender] = []


def webhook(receiver: WebhookReceiver) -> WebhookSender:
    sender = WebhookSender(url=receiver.url, secret=SECRET, timeout=5)
    _SENDERS.append(sender)
    return sender


@pytest.fixture(autouse=True)
def _close_senders() -> Iterator[None]:
    """A sender keeps its connection open between webhooks; each test closes what it made."""
    yield
    while _SENDERS:
        _SENDERS.pop().close()


@pytest.fixture
def alice(sparekey: Sparekey) -> Sparekey:
    sparekey.users.create(user_id="alice", display_name="Alice", email="alice@example.com")
    return sparekey


# -- email -----------------------------------------------------------------------------------------


def test_email_reaches_the_user_over_starttls_with_login_and_holds_no_secret(
    alice: Sparekey, clock: FixedClock, tmp_path: Path
) -> None:
    enrollment = alice.factors.enroll("alice", type=FactorType.TOTP)
    secret = b32encode(enrollment.secret)
    code = totp_code(secret, clock.now())
    alice.factors.confirm("alice", enrollment.factor.id, code=code)
    # A careless caller passes the code and the secret: neither may leave the server.
    enqueue(
        alice,
        "factor.confirmed",
        outbox=Outbox(email=True, webhook=False),
        factor_id=enrollment.factor.id,
        factor_type="totp",
        code=code,
        secret=secret,
    )
    server_tls, client_tls = tls_contexts(tmp_path)
    with SmtpReceiver(tls_context=server_tls, login=("sparekey", "smtp-pass")) as smtp:
        sender = EmailSender(
            host=LOOPBACK,
            port=smtp.port,
            sender="Acme Security <security@acme.example>",
            username="sparekey",
            password="smtp-pass",
            starttls=True,
            timeout=5,
            product="Acme",
            tls_context=client_tls,
        )
        assert worker(alice, sender).run_once() == 1
    [row] = rows(alice)
    [mail] = smtp.mails
    assert (mail.tls, mail.authenticated) == (True, True)
    assert mail.mail_from == "security@acme.example"
    assert mail.rcpt_tos == ["alice@example.com"]
    message = mail.message
    assert message["To"] == "alice@example.com"
    assert message["Subject"] == "Acme: A sign-in method was added to your account"
    assert message["Sparekey-Event-Id"] == row.event_id
    assert message["Message-ID"] == f"<{row.event_id}@acme.example>"
    body = message.get_content()
    assert "A new authenticator app was added to your account" in body
    assert "15 January 2026 at 12:00 UTC" in body
    assert row.event_id in body
    for leak in (code, secret, "smtp-pass"):
        assert leak not in mail.raw.decode(), "a code or secret went out by email"
        assert leak not in row.payload
    assert (row.delivered_at, row.next_attempt_at, row.attempts) == (clock.now(), None, 1)


def test_email_goes_to_the_address_the_user_had_when_it_changed(
    alice: Sparekey, clock: FixedClock
) -> None:
    enqueue(alice, "factor.removed", factor_id="fct_1", factor_type="totp")
    alice.users.update("alice", changes={"email": "mallory@example.com"})
    alice.users.create(user_id="bob", display_name=None, email=None)
    enqueue(alice, "factor.removed", "bob", factor_id="fct_2")
    assert [(r.channel, r.recipient) for r in rows(alice)] == [
        ("email", "alice@example.com"),
        ("webhook", None),
        ("webhook", None),  # bob has no address: the application still hears of it
    ]
    with SmtpReceiver() as smtp:
        sender = EmailSender(
            host=LOOPBACK, port=smtp.port, sender="security@acme.example", starttls=False
        )
        assert worker(alice, sender).run_once() == 1
    assert [m.rcpt_tos for m in smtp.mails] == [["alice@example.com"]]
    assert not smtp.mails[0].tls


@pytest.mark.parametrize("event", sorted(NOTIFY_EVENTS))
def test_every_notifying_event_has_its_own_calm_wording(event: str) -> None:
    payload = {
        "id": "e1",
        "type": event,
        "user_id": "alice",
        "occurred_at": "2026-01-15T12:00:00+00:00",
        "details": {"factor_type": "totp", "remaining": 2},
    }
    message = OutboxMessage(
        id=1,
        event_id="e1",
        event=event,
        channel="email",
        recipient="alice@example.com",
        payload=json.dumps(payload),
        created_at=datetime(2026, 1, 15, 12, tzinfo=UTC),
        attempts=1,
        next_attempt_at=None,
        delivered_at=None,
        failed_at=None,
        last_error=None,
        locked_until=None,
    )
    mail = compose_email(message, sender="s@acme.example", now=message.created_at, product="Acme")
    assert "security setting" not in mail["Subject"], f"{event} has no wording of its own"
    body = mail.get_content()
    assert "15 January 2026 at 12:00 UTC" in body
    assert "{" not in body
    assert "!" not in body, "calm: no exclamation marks"
    if event == "backup_codes.low":
        assert "You have 2 backup codes left" in body


# -- webhooks --------------------------------------------------------------------------------------


def test_webhook_is_signed_and_carries_the_event_id(alice: Sparekey, clock: FixedClock) -> None:
    enqueue(alice, "backup_codes.low", outbox=Outbox(email=False, webhook=True), remaining=2)
    with WebhookReceiver() as receiver:
        assert worker(alice, webhook(receiver)).run_once() == 1
    [hook] = receiver.hooks
    body = json.loads(hook.body)
    assert body == {
        "id": hook.event_id,
        "type": "backup_codes.low",
        "user_id": "alice",
        "occurred_at": "2026-01-15T12:00:00+00:00",
        "details": {"remaining": 2},
    }
    assert hook.headers["content-type"] == "application/json"
    assert hook.headers["sparekey-event"] == "backup_codes.low"
    signed_at = verify_signature(SECRET, hook.headers["sparekey-signature"], hook.body)
    assert signed_at == int(clock.now().timestamp())
    with pytest.raises(AssertionError, match="does not verify"):
        verify_signature(b"another secret", hook.headers["sparekey-signature"], hook.body)
    with pytest.raises(AssertionError, match="does not verify"):
        verify_signature(SECRET, hook.headers["sparekey-signature"], hook.body + b" ")
    assert "alice@example.com" not in hook.body.decode()


def test_webhooks_reuse_one_connection(alice: Sparekey) -> None:
    for remaining in (3, 2, 1):
        enqueue(
            alice, "backup_codes.low", outbox=Outbox(email=False, webhook=True), remaining=remaining
        )
    with WebhookReceiver() as receiver:
        assert worker(alice, webhook(receiver)).run_once() == 3
    assert len(receiver.hooks) == 3
    assert len({hook.peer for hook in receiver.hooks}) == 1, "a new connection per webhook"


def test_a_failed_webhook_is_retried_later_and_delivered_once(
    alice: Sparekey, clock: FixedClock
) -> None:
    enqueue(alice, "throttle.engaged", outbox=Outbox(email=False, webhook=True), failures=6)
    with WebhookReceiver(respond=lambda _id, attempt: 500 if attempt == 1 else 200) as receiver:
        deliver = worker(alice, webhook(receiver))
        assert deliver.run_once() == 0
        [row] = rows(alice)
        assert (row.attempts, row.last_error) == (1, "HTTP 500")
        assert row.next_attempt_at == clock.now() + timedelta(seconds=30)
        assert row.delivered_at is None
        assert deliver.run_once() == 0, "not before its time"
        clock.advance(29)
        assert deliver.run_once() == 0
        assert len(receiver.hooks) == 1
        clock.advance(1)
        assert deliver.run_once() == 1
        clock.advance(3600)
        assert deliver.run_once() == 0
    assert [h.status for h in receiver.hooks] == [500, 200]
    assert receiver.hooks[0].body == receiver.hooks[1].body, "a retry sends the same event"
    assert len({h.event_id for h in receiver.hooks}) == 1
    [row] = rows(alice)
    assert row.delivered_at == clock.now() - timedelta(seconds=3600)
    assert row.next_attempt_at is None


def test_gives_up_after_the_last_attempt_and_keeps_the_row(
    alice: Sparekey, clock: FixedClock
) -> None:
    enqueue(alice, "recovery.started", outbox=Outbox(email=False, webhook=True))
    with WebhookReceiver(respond=lambda _id, _n: 503) as receiver:
        deliver = worker(alice, webhook(receiver), max_attempts=3)
        waits = []
        for _ in range(3):
            assert deliver.run_once() == 0
            [row] = rows(alice)
            if row.next_attempt_at is not None:
                waits.append(row.next_attempt_at - clock.now())
                clock.set(row.next_attempt_at)
        clock.advance(86_400)
        assert deliver.run_once() == 0
    assert waits == [timedelta(seconds=30), timedelta(seconds=60)]
    assert len(receiver.hooks) == 3
    [row] = rows(alice)
    assert (row.attempts, row.last_error, row.next_attempt_at) == (3, "HTTP 503", None)
    assert row.failed_at is not None
    assert row.delivered_at is None


def test_giving_up_is_audited_in_the_same_transaction(
    settings: Settings, clock: FixedClock
) -> None:
    """Wired as the runtime wires it: the user was not told, and the audit log says so."""
    with WebhookReceiver(respond=lambda _id, _n: 503) as receiver:
        configured = load_settings(
            settings.data_dir,
            database_url=settings.database_url,
            webhook_url=receiver.url,
            webhook_secret=SECRET.decode(),
            notify_max_attempts=2,
        )
        initialize(configured, clock=clock)
        app = Sparekey.open(configured, clock=clock)
        try:
            app.users.create(user_id="alice", display_name=None, email=None)
            enqueue(app, "factor.lost", outbox=app.outbox, factor_id="f1")
            assert app.delivery.run_once() == 0
            assert not app.audit.query(events=("notification.given_up",)).records
            clock.advance(30)
            assert app.delivery.run_once() == 0
            [row] = rows(app)
            [record] = app.audit.query(events=("notification.given_up",)).records
            app.audit.seal_all()
            assert app.audit.verify().ok
        finally:
            app.close()
    assert len(receiver.hooks) == 2
    assert row.failed_at == clock.now()
    assert (record.user_id, record.outcome, record.actor_type) == ("alice", "failure", "system")
    assert record.details == {
        "notification": "factor.lost",
        "channel": "webhook",
        "event_id": row.event_id,
        "attempts": 2,
    }


def test_settled_notifications_are_deleted_once_past_the_retention(
    alice: Sparekey, clock: FixedClock
) -> None:
    hooks = Outbox(email=False, webhook=True)
    enqueue(alice, "factor.removed", outbox=hooks)  # delivered
    enqueue(alice, "factor.lost", outbox=hooks)  # given up
    enqueue(alice, "recovery.started")  # the webhook delivered; the email never sent (no sender)
    refused = {next(r.event_id for r in rows(alice) if r.event == "factor.lost")}
    with WebhookReceiver(respond=lambda event_id, _n: 503 if event_id in refused else 200) as hook:
        deliver = worker(alice, webhook(hook), max_attempts=3)
        assert deliver.run_once() == 2
        clock.advance(30)
        assert deliver.run_once() == 0
        clock.advance(60)
        assert deliver.run_once() == 0  # factor.lost's third attempt: given up
        clock.advance(30 * 86_400 - 91)
        enqueue(alice, "backup_codes.generated", outbox=hooks)  # recent, delivered
        assert deliver.run_once() == 1
        settled = [(r.event, r.channel, r.delivered_at, r.failed_at) for r in rows(alice)]
        assert deliver.prune() == 0, "nothing was written 30 days ago yet"
        clock.advance(2)
        assert deliver.prune() == 3
        assert deliver.prune() == 0
    assert [
        (event, channel, bool(done), bool(failed)) for event, channel, done, failed in settled
    ] == [
        ("factor.removed", "webhook", True, False),
        ("factor.lost", "webhook", False, True),
        ("recovery.started", "email", False, False),
        ("recovery.started", "webhook", True, False),
        ("backup_codes.generated", "webhook", True, False),
    ]
    left = [(r.event, r.channel, r.attempts, r.next_attempt_at is not None) for r in rows(alice)]
    assert left == [
        ("recovery.started", "email", 0, True),  # old, but pending: kept, and looked past
        ("backup_codes.generated", "webhook", 1, False),
    ]


def test_pruning_reads_batch_by_batch_and_stops_at_the_first_recent_row(
    alice: Sparekey, clock: FixedClock
) -> None:
    hooks = Outbox(email=False, webhook=True)
    for _ in range(5):
        enqueue(alice, "factor.removed", outbox=hooks)
    with WebhookReceiver() as receiver:
        assert worker(alice, webhook(receiver)).drain() == 5
    clock.advance(10)
    cut_off = clock.now()
    enqueue(alice, "factor.lost", outbox=hooks)  # after the cut-off, still pending
    for _ in range(3):
        enqueue(alice, "factor.removed", outbox=hooks)
    first_id = rows(alice)[0].id
    batches = []
    after_id = 0
    while True:
        with alice.db.write() as conn:
            pruned = repo.prune_settled(conn, before=cut_off, after_id=after_id, limit=2)
        batches.append((pruned.deleted, pruned.last_id - first_id, pruned.done))
        after_id = pruned.last_id
        if pruned.done:
            break
    # Two rows a batch; the third batch meets the first row written after the cut-off
    assert batches == [(2, 1, False), (2, 3, False), (1, 4, True)]
    assert [r.event for r in rows(alice)] == ["factor.lost"] + ["factor.removed"] * 3


def test_backoff_doubles_up_to_an_hour(alice: Sparekey) -> None:
    deliver = worker(alice)
    assert [deliver.retry_delay(n).total_seconds() for n in (1, 2, 3, 7, 8, 20)] == [
        30,
        60,
        120,
        1920,
        3600,
        3600,
    ]


def test_an_unreachable_receiver_is_a_retry_not_a_crash(alice: Sparekey) -> None:
    with WebhookReceiver() as receiver:
        url = receiver.url  # closed at the end of the block: nothing listens there now
    enqueue(alice, "factor.lost", outbox=Outbox(email=False, webhook=True))
    sender = WebhookSender(url=url, secret=SECRET, timeout=2)
    assert worker(alice, sender).run_once() == 0
    [row] = rows(alice)
    assert row.last_error is not None
    assert row.last_error.startswith("ConnectError")
    assert row.next_attempt_at is not None


# -- the outbox and its transaction ----------------------------------------------------------------


def _enqueue_through(target: Connection | Unit, clock: FixedClock) -> None:
    BOTH.enqueue(
        target, event="factor.removed", user_id="alice", details={"factor_id": "f"}, now=clock.now()
    )


@pytest.mark.parametrize("through", ["connection", "unit"])
def test_enqueue_commits_and_rolls_back_with_the_change(
    alice: Sparekey, clock: FixedClock, through: str
) -> None:
    class BoomError(Exception):
        pass

    def attempt(fail: bool) -> None:
        if through == "connection":
            with alice.db.write() as conn:
                _enqueue_through(conn, clock)
                if fail:
                    raise BoomError
        else:
            with alice.db.unit() as unit:
                _enqueue_through(unit, clock)
                if fail:
                    raise BoomError

    with pytest.raises(BoomError):
        attempt(fail=True)
    assert rows(alice) == []
    attempt(fail=False)
    found = rows(alice)
    assert [(r.channel, r.recipient) for r in found] == [
        ("email", "alice@example.com"),
        ("webhook", None),
    ]
    assert found[0].event_id == found[1].event_id
    assert found[0].payload == found[1].payload


def test_only_notifying_events_and_enabled_channels_are_written(alice: Sparekey) -> None:
    enqueue(alice, "verify.succeeded")
    enqueue(alice, "factor.removed", outbox=Outbox(email=False, webhook=False))
    assert rows(alice) == []
    enqueue(alice, "factor.removed", outbox=Outbox(email=True, webhook=False))
    assert [r.channel for r in rows(alice)] == ["email"]


def test_the_settings_wire_both_channels(
    settings: Settings, clock: FixedClock, tmp_path: Path
) -> None:
    with SmtpReceiver() as smtp, WebhookReceiver() as receiver:
        configured = load_settings(
            settings.data_dir,
            database_url=settings.database_url,
            smtp_host=LOOPBACK,
            smtp_port=smtp.port,
            smtp_starttls=False,
            smtp_from="security@acme.example",
            webhook_url=receiver.url,
            webhook_secret=SECRET.decode(),
        )
        initialize(configured, clock=clock)
        app = Sparekey.open(configured, clock=clock)
        try:
            app.users.create(user_id="alice", display_name=None, email="alice@example.com")
            enqueue(app, "backup_codes.generated", outbox=app.outbox, count=10)
            assert app.delivery.channels == {"email", "webhook"}
            assert app.delivery.run_once() == 2
        finally:
            app.close()
    [mail], [hook] = smtp.mails, receiver.hooks
    assert mail.message["Sparekey-Event-Id"] == hook.event_id
    verify_signature(SECRET, hook.headers["sparekey-signature"], hook.body)


def test_incomplete_notification_settings_are_refused(tmp_path: Path) -> None:
    with pytest.raises(SettingsError, match="smtp_from"):
        load_settings(tmp_path, smtp_host="mail.example")
    with pytest.raises(SettingsError, match="webhook_secret"):
        load_settings(tmp_path, webhook_url="https://app.example/hooks")
    with pytest.raises(SettingsError, match="webhook_url"):
        load_settings(tmp_path, webhook_url="app.example/hooks", webhook_secret=SECRET.decode())
    assert "smtp-pass" not in repr(load_settings(tmp_path, smtp_password="smtp-pass"))


# -- concurrency and leases ------------------------------------------------------------------------


@pytest.fixture
def second_node(sparekey: Sparekey, settings: Settings, clock: FixedClock) -> Iterator[Sparekey]:
    """Another process's view of the same deployment: its own engine and connections."""
    other = Sparekey.open(settings, clock=clock)
    yield other
    other.close()


def test_two_workers_deliver_each_event_once(
    alice: Sparekey, second_node: Sparekey, clock: FixedClock
) -> None:
    hooks_only = Outbox(email=False, webhook=True)
    for n in range(30):
        enqueue(alice, "factor.removed", outbox=hooks_only, factor_id=f"fct_{n}")
    with WebhookReceiver(delay=0.01) as receiver:
        workers = [worker(node, webhook(receiver), batch_size=4) for node in (alice, second_node)]
        delivered = [0, 0]
        start = threading.Barrier(2)

        def run(index: int) -> None:
            start.wait()
            delivered[index] = workers[index].drain()

        threads = [threading.Thread(target=run, args=(i,)) for i in (0, 1)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=15)
    assert sum(delivered) == 30
    assert all(delivered), f"both workers took part: {delivered}"
    counts = Counter(h.event_id for h in receiver.hooks)
    assert len(counts) == 30
    assert set(counts.values()) == {1}, "an event was delivered twice"
    assert all(r.delivered_at is not None and r.attempts == 1 for r in rows(alice))


class _TickingClock:
    """Every reading is ``step`` seconds after the one before: a slow worker, without sleeping."""

    def __init__(self, at: datetime, step: float) -> None:
        self._at = at
        self._step = timedelta(seconds=step)

    def now(self) -> datetime:
        self._at += self._step
        return self._at


class _Recorder:
    channel = "webhook"
    timeout = 5.0

    def __init__(self) -> None:
        self.sent: list[str] = []

    def send(self, message: OutboxMessage, *, now: datetime) -> None:
        self.sent.append(message.event_id)


def test_a_worker_hands_back_what_it_cannot_send_within_its_lease(
    alice: Sparekey, clock: FixedClock
) -> None:
    for n in range(5):
        enqueue(alice, "factor.removed", outbox=Outbox(email=False, webhook=True), factor_id=n)
    recorder = _Recorder()
    slow = DeliveryWorker(
        db=alice.db,
        clock=_TickingClock(clock.now(), step=10),
        senders=[recorder],
        lease_seconds=60,
    )
    # Claimed at t+10, leased to t+70; each row reads the clock three times (check the lease,
    # send, record) and is sent only with 3 x 5 s of lease left: the checks at t+20 and t+50
    # leave 50 s and 20 s, the one at t+80 none, so two go out and three are handed back.
    assert slow.run_once() == 2
    found = rows(alice)
    assert [r.delivered_at is not None for r in found] == [True, True, False, False, False]
    assert [(r.attempts, r.locked_until) for r in found[2:]] == [(0, None)] * 3
    assert len(recorder.sent) == 2
    assert worker(alice, recorder).run_once() == 3, "handed back rows are claimable at once"


# -- a crash ---------------------------------------------------------------------------------------


def _start_worker(settings: Settings, receiver: WebhookReceiver) -> subprocess.Popen[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SPAREKEY_")}
    env |= {
        "SPAREKEY_DATABASE_URL": settings.resolved_database_url,
        "SPAREKEY_WEBHOOK_URL": receiver.url,
        "SPAREKEY_WEBHOOK_SECRET": SECRET.decode(),
        "SPAREKEY_NOTIFY_TIMEOUT_SECONDS": "0.5",
        "SPAREKEY_NOTIFY_LEASE_SECONDS": "3",
        "SPAREKEY_NOTIFY_POLL_SECONDS": "0.1",
    }
    return subprocess.Popen(
        [SPAREKEY, "worker", "--data-dir", str(settings.data_dir)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )


@pytest.mark.slow
def test_a_worker_killed_while_delivering_loses_nothing(
    sparekey: Sparekey, settings: Settings
) -> None:
    count = 12
    now = SystemClock().now()  # the worker process runs on the system clock
    hooks_only = Outbox(email=False, webhook=True)
    for n in range(count):
        enqueue(sparekey, "factor.removed", None, outbox=hooks_only, now=now, factor_id=n)
    enqueued = {r.event_id for r in rows(sparekey)}
    with WebhookReceiver(delay=0.25) as receiver:
        with _start_worker(settings, receiver) as first:
            try:
                receiver.wait_for(4, timeout=15)  # three answered, the fourth in flight
            finally:
                first.send_signal(signal.SIGKILL)
                first.wait(timeout=5)
        in_flight = receiver.hooks[3].event_id
        done = {r.event_id for r in rows(sparekey) if r.delivered_at is not None}
        assert done == {h.event_id for h in receiver.hooks[:3]}
        assert in_flight not in done, "received but never recorded: it must be sent again"

        with _start_worker(settings, receiver) as second:
            try:
                deadline = time.monotonic() + 15
                while any(r.delivered_at is None for r in rows(sparekey)):
                    assert time.monotonic() < deadline, "the restarted worker did not finish"
                    time.sleep(0.1)
                second.send_signal(signal.SIGTERM)
                _, stderr = second.communicate(timeout=10)
            finally:
                if second.poll() is None:
                    second.kill()
                    second.wait(timeout=5)
    assert second.returncode == 0, stderr
    assert "Sparekey worker stopped" in stderr
    for hook in receiver.hooks:
        verify_signature(SECRET, hook.headers["sparekey-signature"], hook.body)
        assert json.loads(hook.body)["id"] == hook.event_id
    arrivals = Counter(h.event_id for h in receiver.hooks)
    assert set(arrivals) == enqueued, "every event arrives at least once"
    assert arrivals[in_flight] == 2, "at least once: the one in flight arrives again"
    deduplicated = {h.event_id: h for h in receiver.hooks}
    assert len(deduplicated) == count
