"""Servers killed in the middle of recovery-case transitions: after a restart each case's state and
its audit trail agree (both show the transition, or neither does), and a transition that did not
happen can be made again.

Four servers start at once, each armed at one crash point and killed by one request: an approval
between the state UPDATE and its audit INSERT, a cancellation and a completion just before their
COMMIT, a pass redemption just after its COMMIT. A fifth, without the variable, checks."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest

from sparekey.domain.models import SYSTEM, Caller, FactorType, OperatorRole, Scope
from sparekey.protocols.rfc4226 import hotp
from sparekey.runtime import Sparekey
from sparekey.services.assurance import Assurance
from tests.crash.nodes import Deployment

pytestmark = pytest.mark.slow  # real processes, started and killed

CASES = "/v1/recovery/cases"
EVIDENCE = ("government_id", "video_call")
CAL_CODES = "SELECT digest FROM backup_codes WHERE user_id = 'cal' ORDER BY digest"
# The state each audited event leaves a case in (the other recovery events leave it as it is).
STATE_AFTER = {
    "recovery.requested": "requested",
    "recovery.identity_verified": "identity_verified",
    "recovery.waiting": "waiting",
    "recovery.ready": "ready",
    "recovery.completed": "completed",
    "recovery.cancelled": "cancelled",
    "recovery.denied": "denied",
    "recovery.expired": "expired",
}


@dataclass(frozen=True)
class Desk:
    hank: Caller  # helpdesk: opens cases, checks identity, issues passes
    ada: Caller  # admin: approves
    hank_token: str
    ada_token: str
    app_token: str  # the application's manage key, acting for its users


def _desk(app: Sparekey) -> Desk:
    hank = app.operators.create("hank", role=OperatorRole.HELPDESK)
    ada = app.operators.create("ada", role=OperatorRole.ADMIN)
    return Desk(
        hank=Caller(type="operator", id=hank.operator.id, role=OperatorRole.HELPDESK.value),
        ada=Caller(type="operator", id=ada.operator.id, role=OperatorRole.ADMIN.value),
        hank_token=hank.token,
        ada_token=ada.token,
        app_token=app.api_keys.create(name="app", scopes=[Scope.MANAGE]).token,
    )


def _verified_case(app: Sparekey, desk: Desk, user_id: str) -> str:
    app.users.create(user_id=user_id, display_name=None, email=None)
    case = app.recovery.request(user_id, reason="phone lost", caller=desk.hank)
    app.recovery.verify_identity(case.id, evidence=EVIDENCE, caller=desk.hank)
    return case.id


def _ready_case(app: Sparekey, desk: Desk, user_id: str) -> tuple[str, str]:
    """A case past its (zero) wait with a pass issued: (case id, pass)."""
    case_id = _verified_case(app, desk, user_id)
    app.recovery.approve(case_id, caller=desk.ada)
    assert app.recovery.get(case_id).state.value == "ready"
    return case_id, app.recovery.issue_pass(case_id, caller=desk.hank).access_pass


def _case_row(deployment: Deployment, case_id: str) -> Any:
    (row,) = deployment.query(
        "SELECT state, pass_redeemed_at FROM recovery_cases WHERE id = :id", id=case_id
    )
    return row


def _case_events(deployment: Deployment, case_id: str) -> list[str]:
    return [e for e, d in deployment.audit() if d.get("case_id") == case_id]


def _assert_state_and_audit_agree(deployment: Deployment, case_id: str) -> str:
    """The state the audit trail leads to is the stored one, the approvals and the redemption
    are audited as stored; returns the state."""
    events = _case_events(deployment, case_id)
    row = _case_row(deployment, case_id)
    audited = [STATE_AFTER[e] for e in events if e in STATE_AFTER]
    assert audited[-1] == row.state, f"{case_id}: audit says {audited}, stored {row.state}"
    approvals = deployment.query(
        "SELECT approver FROM recovery_approvals WHERE case_id = :id", id=case_id
    )
    assert events.count("recovery.approval_given") == len(approvals), case_id
    redeemed = events.count("recovery.pass_redeemed")
    assert redeemed == (row.pass_redeemed_at is not None), f"{case_id}: {events}"
    return str(row.state)


def test_a_recovery_transition_killed_midway_is_all_there_or_not_at_all(
    deploy: Callable[..., Deployment],
) -> None:
    deployment = deploy(recovery_waiting_seconds="0")
    with deployment.app() as app:
        desk = _desk(app)
        approving = _verified_case(app, desk, "amy")
        cancelling = _verified_case(app, desk, "ben")
        completing, cal_pass = _ready_case(app, desk, "cal")
        redeeming, dee_pass = _ready_case(app, desk, "dee")
        app.backup_codes.regenerate("cal")
        # Cal's old phone, then a new one set up with the pass: the completion revokes the old.
        old = app.factors.enroll("cal", type=FactorType.HOTP)
        app.factors.confirm("cal", old.factor.id, code=hotp(key=old.secret, counter=0))
        token = app.recovery.redeem("cal", cal_pass, caller=SYSTEM).enrollment_token
        stepped_up = Assurance(token=token)
        new = app.factors.enroll("cal", type=FactorType.HOTP, assurance=stepped_up)
        code = hotp(key=new.secret, counter=0)
        app.factors.confirm("cal", new.factor.id, code=code, assurance=stepped_up)
    old_codes = deployment.query(CAL_CODES)

    servers = deployment.serve(
        "recovery.state_updated",
        "recovery.before_commit",
        "recovery.before_commit",
        "recovery.committed",
    )
    approve, cancel, complete, redeem = servers
    approve.crash_on(desk.ada_token, f"{CASES}/{approving}/approve", {})
    cancel.crash_on(desk.hank_token, f"{CASES}/{cancelling}/cancel", {"reason": "a mistake"})
    decisions = {"factors": {old.factor.id: "revoke"}}
    complete.crash_on(desk.ada_token, f"{CASES}/{completing}/complete", decisions)
    redeem.crash_on(desk.app_token, "/v1/users/dee/temporary-access/redeem", {"pass": dee_pass})

    # Killed before COMMIT: nothing of the transition is stored, in the case or the audit log.
    for case_id in (approving, cancelling, completing, redeeming):
        _assert_state_and_audit_agree(deployment, case_id)
    assert _case_row(deployment, approving).state == "identity_verified"
    assert _case_row(deployment, cancelling).state == "identity_verified"
    assert _case_row(deployment, completing).state == "ready"
    factors = deployment.query("SELECT id FROM factors WHERE user_id = 'cal' ORDER BY id")
    assert {row.id for row in factors} == {old.factor.id, new.factor.id}, "nothing revoked"
    assert len(old_codes) == 10
    assert deployment.query(CAL_CODES) == old_codes, "the old backup codes still hold"
    # Killed after COMMIT: the redemption is stored and audited, though no one saw the answer.
    assert _case_row(deployment, redeeming).pass_redeemed_at is not None

    (server,) = deployment.serve(None)
    approved = server.post(desk.ada_token, f"{CASES}/{approving}/approve", {})
    assert approved.status_code == 200, approved.text
    cancelled = server.post(desk.hank_token, f"{CASES}/{cancelling}/cancel", {"reason": "again"})
    assert cancelled.json()["state"] == "cancelled", cancelled.text
    completed = server.post(desk.ada_token, f"{CASES}/{completing}/complete", decisions)
    assert completed.json()["case"]["state"] == "completed", completed.text
    again = server.post(desk.app_token, "/v1/users/dee/temporary-access/redeem", {"pass": dee_pass})
    assert again.status_code == 403, "the pass was spent by the redemption that committed"
    server.stop()

    assert _assert_state_and_audit_agree(deployment, approving) == "ready"  # no wait configured
    assert _assert_state_and_audit_agree(deployment, cancelling) == "cancelled"
    assert _assert_state_and_audit_agree(deployment, completing) == "completed"
    assert _assert_state_and_audit_agree(deployment, redeeming) == "ready"
    # Each transition is recorded once, the retried ones included.
    amy = _case_events(deployment, approving)
    assert [amy.count(e) for e in ("recovery.approval_given", "recovery.started")] == [1, 1]
    assert _case_events(deployment, cancelling).count("recovery.cancelled") == 1
    assert _case_events(deployment, completing).count("recovery.completed") == 1
    removed = [d for e, d in deployment.audit("cal") if e == "factor.removed"]
    assert removed == [{"factor_id": old.factor.id, "recovery_case": completing}]
    factors = deployment.query("SELECT id FROM factors WHERE user_id = 'cal'")
    assert [row.id for row in factors] == [new.factor.id]
    dee = _case_events(deployment, redeeming)
    assert dee.count("recovery.pass_redeemed") == 1
    assert dee[-1] == "recovery.pass_refused"
    deployment.assert_audit_chain_verifies()
