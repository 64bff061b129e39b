"""Security changes made through the services reach the user by email and the app by webhook."""

from __future__ import annotations

import json

from sparekey.domain.models import FactorType
from sparekey.domain.ports import FixedClock
from sparekey.protocols.otpauth import b32encode
from sparekey.runtime import Sparekey, initialize
from sparekey.services.assurance import Assurance
from sparekey.settings import Settings, load_settings
from tests.helpers import totp_code
from tests.helpers_notifications import LOOPBACK, SmtpReceiver, WebhookReceiver


def test_each_security_change_is_delivered_once_on_both_channels(
    settings: Settings, clock: FixedClock
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
            webhook_secret="whsec_end_to_end_0123456789",
        )
        initialize(configured, clock=clock)
        app = Sparekey.open(configured, clock=clock)
        try:
            app.users.create(user_id="alice", display_name=None, email="alice@example.com")
            codes = app.backup_codes.regenerate("alice").codes  # no factor yet: no step-up
            enrollment = app.factors.enroll("alice", type=FactorType.TOTP)
            secret = b32encode(enrollment.secret)
            factor_id = enrollment.factor.id
            app.factors.confirm("alice", factor_id, code=totp_code(secret, clock.now()))
            clock.advance(60)
            for _ in range(6):  # the sixth wrong code engages the throttle
                assert not app.verification.verify("alice", "000000").verified
            signed_in = app.verification.verify("alice", codes[0])  # a backup code steps up
            stepped_up = Assurance(token=signed_in.assurance_token)
            # her only factor: removing it is forced (an administrator's call)
            app.factors.delete("alice", factor_id, assurance=stepped_up, force=True)
            delivered = app.delivery.run_once()
        finally:
            app.close()
    expected = ["backup_codes.generated", "factor.confirmed", "throttle.engaged", "factor.removed"]
    hooks = [json.loads(hook.body) for hook in receiver.hooks]
    assert [h["type"] for h in hooks] == expected
    assert all(h["user_id"] == "alice" for h in hooks)
    assert delivered == 2 * len(expected)
    assert [m.message["To"] for m in smtp.mails] == ["alice@example.com"] * len(expected)
    assert len({m.message["Sparekey-Event-Id"] for m in smtp.mails}) == len(expected)
    assert all(secret not in m.message.as_string() for m in smtp.mails)
