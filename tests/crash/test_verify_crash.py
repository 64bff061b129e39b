"""A server killed in the middle of a sign-in: a code is accepted exactly once (crash after COMMIT)
or not at all (before it), and every accepted code has its audit record.

Each test starts two servers at once, each armed at one crash point, kills each with one request,
then checks on a third server, started without the variable, on the same database."""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest

from sparekey.domain.models import FactorType
from sparekey.protocols.rfc4226 import hotp
from sparekey.protocols.rfc6238 import time_step
from tests.crash.nodes import Deployment, Server, stop_all

pytestmark = pytest.mark.slow  # real processes, started and killed


def _verify(deployment: Deployment, server: Server, user_id: str, code: str) -> dict[str, object]:
    answer = server.post(deployment.admin_token, f"/v1/users/{user_id}/verify", {"code": code})
    assert answer.status_code == 200, answer.text
    return dict(answer.json())


def _succeeded(deployment: Deployment, user_id: str) -> list[str]:
    """The factor id of each ``verify.succeeded`` record of the user."""
    return [d["factor_id"] for e, d in deployment.audit(user_id) if e == "verify.succeeded"]


def _last_step(deployment: Deployment, factor_id: str) -> int:
    rows = deployment.query("SELECT last_step FROM factors WHERE id = :id", id=factor_id)
    return int(rows[0].last_step)


def test_a_code_is_accepted_once_or_not_at_all_across_a_crash(
    deploy: Callable[..., Deployment],
) -> None:
    deployment = deploy()
    with deployment.app() as app:
        for user_id in ("hana", "toby"):
            app.users.create(user_id=user_id, display_name=None, email=None)
        hana = app.factors.enroll("hana", type=FactorType.HOTP)
        app.factors.confirm("hana", hana.factor.id, code=hotp(key=hana.secret, counter=0))
        toby = app.factors.enroll("toby", type=FactorType.TOTP)
        confirmed_step = time_step(now=time.time(), period=30)
        app.factors.confirm(
            "toby", toby.factor.id, code=hotp(key=toby.secret, counter=confirmed_step)
        )

    # One server dies after its second match, before COMMIT; the other after a COMMIT.
    before, after = deployment.serve("verify.before_commit:2", "verify.committed")
    assert _verify(deployment, before, "hana", hotp(key=hana.secret, counter=1))["verified"] is True
    before.crash_on(
        deployment.admin_token, "/v1/users/hana/verify", {"code": hotp(key=hana.secret, counter=2)}
    )
    # The step after the one confirmed: within the window for the next minute at least.
    toby_code = hotp(key=toby.secret, counter=confirmed_step + 1)
    after.crash_on(deployment.admin_token, "/v1/users/toby/verify", {"code": toby_code})

    (server,) = deployment.serve(None)
    # Rolled back with its audit record: the code was never accepted, so it is accepted now, once.
    assert _last_step(deployment, hana.factor.id) == 1
    assert _succeeded(deployment, "hana") == [hana.factor.id]
    again = _verify(deployment, server, "hana", hotp(key=hana.secret, counter=2))
    assert again["verified"] is True
    assert again["factor_id"] == hana.factor.id
    assert _verify(deployment, server, "hana", hotp(key=hana.secret, counter=2)) == {
        "verified": False
    }
    # Committed with its audit record, answer lost: spent, and a replay is refused.
    assert _last_step(deployment, toby.factor.id) == confirmed_step + 1
    assert _succeeded(deployment, "toby") == [toby.factor.id]
    assert _verify(deployment, server, "toby", toby_code) == {"verified": False}
    stop_all([server])

    # Every accepted code has one audit record, and the factor's last step is the last accepted.
    assert _succeeded(deployment, "hana") == [hana.factor.id] * 2
    assert _last_step(deployment, hana.factor.id) == 2
    assert _succeeded(deployment, "toby") == [toby.factor.id]
    assert _last_step(deployment, toby.factor.id) == confirmed_step + 1
    failed = [d["kind"] for e, d in deployment.audit("toby") if e == "verify.failed"]
    assert failed == ["otp"], "the replay is recorded as a failure"
    deployment.assert_audit_chain_verifies()


def _remaining(deployment: Deployment, user_id: str) -> int:
    rows = deployment.query(
        "SELECT COUNT(*) AS n FROM backup_codes WHERE user_id = :u AND used_at IS NULL", u=user_id
    )
    return int(rows[0].n)


def test_a_backup_code_is_spent_once_or_not_at_all_across_a_crash(
    deploy: Callable[..., Deployment],
) -> None:
    deployment = deploy()
    with deployment.app() as app:
        app.users.create(user_id="bea", display_name=None, email=None)
        codes = app.backup_codes.regenerate("bea").codes
    count = len(codes)

    before, after = deployment.serve("backup_code.before_commit", "backup_code.committed")
    before.crash_on(deployment.admin_token, "/v1/users/bea/verify", {"code": codes[0]})
    after.crash_on(deployment.admin_token, "/v1/users/bea/verify", {"code": codes[1]})

    (server,) = deployment.serve(None)
    assert _remaining(deployment, "bea") == count - 1, "only the committed use is kept"
    used = _verify(deployment, server, "bea", codes[0])
    assert used["verified"] is True, "rolled back: still usable"
    assert used["backup_codes_remaining"] == count - 2
    assert _verify(deployment, server, "bea", codes[0]) == {"verified": False}
    assert _verify(deployment, server, "bea", codes[1]) == {"verified": False}, "spent"
    stop_all([server])

    # Remaining count and audit agree: one record per code spent, each with the count after it.
    assert _remaining(deployment, "bea") == count - 2
    uses = [d["remaining"] for e, d in deployment.audit("bea") if e == "backup_code.used"]
    assert uses == [count - 1, count - 2]
    failed = [d["kind"] for e, d in deployment.audit("bea") if e == "verify.failed"]
    assert failed == ["backup_code", "backup_code"]
    deployment.assert_audit_chain_verifies()
