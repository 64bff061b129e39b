"""`sparekey worker` killed after a notification went out but before it was marked delivered, and
again right after marking one: after a restart every event arrives, the one in flight once more
with the same id (so a receiver deduplicating on it sees each event exactly once), the one
marked not again, none lost."""

from __future__ import annotations

import hashlib
import hmac
import json
import signal
import time
from collections import Counter
from collections.abc import Callable

import pytest

from tests.crash.nodes import Deployment, expect_killed
from tests.helpers_notifications import LOOPBACK, SmtpReceiver, WebhookReceiver

pytestmark = pytest.mark.slow  # real processes, started and killed

SECRET = "whsec_crash_0123456789abcdef"
USERS = 4


def _outbox(deployment: Deployment) -> list[tuple[str, str, bool]]:
    """(event id, channel, delivered) of every row, in the order they were written: the order
    the worker takes them in (due first, then by id; each event's rows are due together)."""
    rows = deployment.query("SELECT event_id, channel, delivered_at FROM outbox ORDER BY id")
    return [(r.event_id, r.channel, r.delivered_at is not None) for r in rows]


def _delivered(deployment: Deployment) -> list[bool]:
    return [delivered for _, _, delivered in _outbox(deployment)]


def _signed(header: str, body: bytes) -> bool:
    fields = dict(part.split("=", 1) for part in header.split(","))
    expected = hmac.new(
        SECRET.encode(), fields["t"].encode() + b"." + body, hashlib.sha256
    ).hexdigest()
    return hmac.compare_digest(expected, fields["v1"])


def test_a_killed_worker_sends_the_in_flight_event_again_with_its_id_and_loses_none(
    deploy: Callable[..., Deployment],
) -> None:
    with SmtpReceiver() as smtp, WebhookReceiver() as hooks:
        deployment = deploy(
            smtp_host=LOOPBACK,
            smtp_port=str(smtp.port),
            smtp_from="Sparekey <security@sparekey.test>",
            smtp_starttls="false",
            webhook_url=hooks.url,
            webhook_secret=SECRET,
            notify_timeout_seconds="0.5",
            notify_lease_seconds="3",
            notify_poll_seconds="0.1",
        )
        with deployment.app() as app:
            for n in range(USERS):
                user_id = f"user-{n}"
                app.users.create(user_id=user_id, display_name=None, email=f"{user_id}@example.com")
                app.backup_codes.regenerate(user_id)  # notified: an email and a webhook
        queue = _outbox(deployment)
        assert [channel for _, channel, _ in queue] == ["email", "webhook"] * USERS
        events = [event_id for event_id, _, _ in queue[::2]]
        assert len(set(events)) == USERS

        # Dies once the SMTP server took the second event's email, before recording it.
        first, log = deployment.spawn("worker", crash_at="notify.sent:3")
        expect_killed(first, log)
        assert len(smtp.mails) == 2
        assert len(hooks.hooks) == 1
        assert _delivered(deployment) == [True, True] + [False] * (2 * USERS - 2)

        # Sends that email again, records it, sends the webhook, records it, and dies.
        second, log = deployment.spawn("worker", crash_at="notify.marked:2")
        expect_killed(second, log)
        assert len(smtp.mails) == 3
        assert len(hooks.hooks) == 2
        assert _delivered(deployment) == [True] * 4 + [False] * (2 * USERS - 4)

        third, log = deployment.spawn("worker")
        deadline = time.monotonic() + 30
        while not all(_delivered(deployment)):
            assert third.poll() is None, log.read_text()
            assert time.monotonic() < deadline, "the restarted worker did not deliver the rest"
            time.sleep(0.1)
        third.send_signal(signal.SIGTERM)
        assert third.wait(timeout=30) == 0, log.read_text()

    mail_ids = [mail.message["Sparekey-Event-Id"] for mail in smtp.mails]
    for mail in smtp.mails:
        event_id = mail.message["Sparekey-Event-Id"]
        assert mail.message["Message-ID"] == f"<{event_id}@sparekey.test>"
    assert Counter(mail_ids) == {events[0]: 1, events[1]: 2, events[2]: 1, events[3]: 1}, (
        "the email in flight arrives again with the same id; none is lost"
    )
    hook_ids = [hook.event_id for hook in hooks.hooks]
    assert Counter(hook_ids) == dict.fromkeys(events, 1), "the webhook marked before the kill"
    for hook in hooks.hooks:
        assert _signed(hook.headers["sparekey-signature"], hook.body)
        assert json.loads(hook.body)["id"] == hook.event_id
