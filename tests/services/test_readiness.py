"""Readiness: the pure rules, and the service on both databases (facts, drills, the report)."""

from __future__ import annotations

import itertools
from collections import Counter
from dataclasses import replace
from datetime import datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import insert

from sparekey.domain.errors import DrillLimitedError, UserNotFoundError
from sparekey.domain.models import FactorType
from sparekey.domain.ports import FixedClock
from sparekey.domain.readiness import ReadinessFacts
from sparekey.protocols.otpauth import b32encode
from sparekey.runtime import Sparekey, initialize
from sparekey.services.readiness import RULES, ReadinessPolicy, assess, summarize
from sparekey.settings import Settings, load_settings
from sparekey.storage.tables import factors, operators
from tests.conftest import START
from tests.helpers import totp_code

POLICY = ReadinessPolicy()
IMPACT = {rule.id: rule.impact for rule in RULES}

# A user who has done everything: two factors (one a security key), a saved set, a drill.
READY = ReadinessFacts(
    active_factors=2,
    phishing_resistant_factors=1,
    stale_factors=0,
    backup_codes_unused=10,
    backup_codes_used=0,
    backup_codes_proven=True,
    drilled=True,
)
NOTHING = ReadinessFacts(
    active_factors=0,
    phishing_resistant_factors=0,
    stale_factors=0,
    backup_codes_unused=0,
    backup_codes_used=0,
    backup_codes_proven=False,
    drilled=False,
)


def ids(facts: ReadinessFacts, policy: ReadinessPolicy = POLICY) -> list[str]:
    return [action.id for action in assess(facts, policy=policy).actions]


# -- The rules ------------------------------------------------------------------------------------


def test_a_ready_user_scores_100_with_nothing_to_do() -> None:
    assessment = assess(READY, policy=POLICY)
    assert (assessment.score, assessment.actions, assessment.ways_in) == (100, (), 3)
    assert not assessment.one_device_from_lockout


@pytest.mark.parametrize(
    ("action", "condition"),
    [
        ("enroll_factor", {"active_factors": 0}),
        ("add_second_factor", {"active_factors": 1}),
        ("generate_backup_codes", {"backup_codes_unused": 0}),
        ("generate_backup_codes", {"backup_codes_unused": 0, "backup_codes_used": 10}),
        ("prove_backup_codes_saved", {"backup_codes_proven": False}),
        ("regenerate_backup_codes", {"backup_codes_unused": 3, "backup_codes_used": 7}),
        ("regenerate_backup_codes", {"backup_codes_unused": 1, "backup_codes_used": 9}),
        ("add_phishing_resistant_factor", {"phishing_resistant_factors": 0}),
        ("check_unused_factor", {"stale_factors": 1}),
        ("run_recovery_drill", {"drilled": False}),
    ],
)
def test_each_action_applies_exactly_when_its_condition_holds(
    action: str, condition: dict[str, Any]
) -> None:
    assessment = assess(replace(READY, **condition), policy=POLICY)
    assert [a.id for a in assessment.actions] == [action]
    assert assessment.score == 100 - IMPACT[action]
    (found,) = assessment.actions
    assert found.title
    assert found.why.endswith(".")


def test_thresholds() -> None:
    assert ids(replace(READY, backup_codes_unused=4, backup_codes_used=6)) == []
    assert ids(replace(READY, backup_codes_unused=3, backup_codes_used=7)) == [
        "regenerate_backup_codes"
    ]
    # A code used to sign in proves the set was saved as much as a drill does
    assert ids(replace(READY, backup_codes_proven=False, backup_codes_used=1)) == []
    # Nothing to prove about a set with no unused code: generating one comes first
    assert ids(replace(READY, backup_codes_unused=0, backup_codes_proven=False)) == [
        "generate_backup_codes"
    ]


def test_ranking_puts_the_biggest_lockout_risk_first() -> None:
    assessment = assess(NOTHING, policy=POLICY)
    assert [a.id for a in assessment.actions] == [
        "enroll_factor",
        "generate_backup_codes",
        "add_phishing_resistant_factor",
        "run_recovery_drill",
    ]
    assert (assessment.score, assessment.ways_in) == (5, 0)
    one_app_unsaved_codes = replace(
        NOTHING, active_factors=1, backup_codes_unused=10, stale_factors=1
    )
    assert ids(one_app_unsaved_codes) == [
        "add_second_factor",
        "prove_backup_codes_saved",
        "add_phishing_resistant_factor",  # equal impacts keep the rules' order
        "check_unused_factor",
        "run_recovery_drill",
    ]


def test_ways_in_and_one_lost_device_from_lockout() -> None:
    one_app = replace(NOTHING, active_factors=1)
    assert assess(one_app, policy=POLICY).one_device_from_lockout
    unsaved = replace(one_app, backup_codes_unused=10)
    assert assess(unsaved, policy=POLICY).ways_in == 1, "an unproven set is no way in"
    saved = replace(unsaved, backup_codes_proven=True)
    assert assess(saved, policy=POLICY).ways_in == 2
    assert not assess(saved, policy=POLICY).one_device_from_lockout
    codes_only = replace(NOTHING, backup_codes_unused=10, backup_codes_proven=True)
    assert assess(codes_only, policy=POLICY).one_device_from_lockout
    assert assess(NOTHING, policy=POLICY).ways_in == 0
    assert not assess(NOTHING, policy=POLICY).one_device_from_lockout


def test_without_required_proof_every_set_with_a_code_counts_as_saved() -> None:
    trusting = ReadinessPolicy(require_proof=False)
    unsaved = replace(NOTHING, active_factors=1, backup_codes_unused=10)
    assert "prove_backup_codes_saved" not in ids(unsaved, trusting)
    assert assess(unsaved, policy=trusting).ways_in == 2


def test_score_bounds_and_order_over_every_combination() -> None:
    for values in itertools.product(
        range(3), range(2), range(2), (0, 1, 3, 4, 10), (0, 2), (False, True), (False, True)
    ):
        facts = ReadinessFacts(
            active_factors=values[0],
            phishing_resistant_factors=min(values[1], values[0]),
            stale_factors=min(values[2], values[0]),
            backup_codes_unused=values[3],
            backup_codes_used=values[4],
            backup_codes_proven=values[5],
            drilled=values[6],
        )
        for policy in (POLICY, ReadinessPolicy(require_proof=False)):
            assessment = assess(facts, policy=policy)
            impacts = [a.impact for a in assessment.actions]
            assert 0 <= assessment.score <= 100
            assert assessment.score == max(0, 100 - sum(impacts))
            assert impacts == sorted(impacts, reverse=True)
            assert len({a.id for a in assessment.actions}) == len(impacts)
            assert (assessment.score == 100) == (not impacts)


def test_summarize_counts_by_the_same_rules() -> None:
    at = START
    report = summarize(
        [(READY, 3), (NOTHING, 1), (replace(READY, active_factors=1), 2)],
        [("root", NOTHING), ("ops", READY)],
        policy=POLICY,
        generated_at=at,
    )
    assert (report.users, report.no_way_in, report.one_device_from_lockout) == (6, 1, 0)
    assert report.median_score == 75  # 5, 75, 75, 100, 100, 100: the lower median
    assert report.mean_score == round((3 * 100 + 5 + 2 * 75) / 6, 1)
    assert [(b.low, b.high, b.users) for b in report.scores if b.users] == [
        (0, 9, 1),
        (70, 79, 2),
        (100, 100, 3),
    ]
    assert [(a.id, a.users, a.points) for a in report.actions] == [
        ("add_second_factor", 2, 50),
        ("enroll_factor", 1, 45),
        ("generate_backup_codes", 1, 35),
        ("add_phishing_resistant_factor", 1, 10),
        ("run_recovery_drill", 1, 5),
    ]
    assert (report.admins, report.admins_without_phishing_resistant) == (2, ("root",))
    empty = summarize([], [], policy=POLICY, generated_at=at)
    assert (empty.users, empty.mean_score, empty.median_score) == (0, 0.0, 0)


# -- On the database ------------------------------------------------------------------------------


def enroll_totp(app: Sparekey, user_id: str, at: datetime) -> tuple[str, str]:
    """A confirmed TOTP factor through the service (the user's first, so no step-up)."""
    enrollment = app.factors.enroll(user_id, type=FactorType.TOTP)
    secret = b32encode(enrollment.secret)
    app.factors.confirm(user_id, enrollment.factor.id, code=totp_code(secret, at))
    return enrollment.factor.id, secret


def add_factor_row(
    app: Sparekey,
    user_id: str,
    factor_id: str,
    *,
    type: str = "webauthn",
    status: str = "active",
    at: datetime = START,
) -> None:
    """A factor written as the services store it, for the facts readiness reads (a security
    key's credential, a second app, a lost device) without their ceremonies."""
    with app.db.write() as conn:
        conn.execute(
            insert(factors).values(
                id=factor_id,
                user_id=user_id,
                type=type,
                status=status,
                label="Key",
                drift=0,
                created_at=at,
                confirmed_at=at,
            )
        )


def add_operator(
    app: Sparekey, name: str, user_id: str, *, role: str, disabled: bool = False
) -> None:
    with app.db.write() as conn:
        conn.execute(
            insert(operators).values(
                id=f"opr_{name}",
                name=name,
                role=role,
                user_id=user_id,
                created_at=START,
                disabled_at=START if disabled else None,
            )
        )


def new_user(app: Sparekey, user_id: str) -> None:
    app.users.create(user_id=user_id, display_name=None, email=None)


def action_ids(app: Sparekey, user_id: str) -> list[str]:
    return [a.id for a in app.readiness.assess(user_id).assessment.actions]


def test_actions_follow_the_users_state(sparekey: Sparekey, clock: FixedClock) -> None:
    new_user(sparekey, "alice")
    assert action_ids(sparekey, "alice") == [
        "enroll_factor",
        "generate_backup_codes",
        "add_phishing_resistant_factor",
        "run_recovery_drill",
    ]
    codes = sparekey.backup_codes.regenerate("alice").codes
    assert action_ids(sparekey, "alice") == [
        "enroll_factor",
        "prove_backup_codes_saved",
        "add_phishing_resistant_factor",
        "run_recovery_drill",
    ]
    assert sparekey.readiness.check_backup_code("alice", codes[0]).valid
    assert action_ids(sparekey, "alice") == ["enroll_factor", "add_phishing_resistant_factor"]
    _, secret = enroll_totp(sparekey, "alice", clock.now())
    assert action_ids(sparekey, "alice") == [
        "add_second_factor",
        "add_phishing_resistant_factor",
    ]
    add_factor_row(sparekey, "alice", "fct_key", at=clock.now())
    readiness = sparekey.readiness.assess("alice")
    assert (readiness.assessment.score, readiness.assessment.ways_in) == (100, 3)
    assert readiness.facts == ReadinessFacts(
        active_factors=2,
        phishing_resistant_factors=1,
        stale_factors=0,
        backup_codes_unused=10,
        backup_codes_used=0,
        backup_codes_proven=True,
        drilled=True,
    )

    for code in codes[:7]:  # three left
        assert sparekey.verification.verify("alice", code).verified
    assert action_ids(sparekey, "alice") == ["regenerate_backup_codes"]

    clock.advance(timedelta(days=181).total_seconds())
    assert action_ids(sparekey, "alice") == ["regenerate_backup_codes", "check_unused_factor"]
    assert sparekey.readiness.assess("alice").facts.stale_factors == 2
    assert sparekey.verification.verify("alice", totp_code(secret, clock.now())).verified
    assert sparekey.readiness.assess("alice").facts.stale_factors == 1  # the key is still idle


def test_lost_and_pending_factors_are_no_way_in(sparekey: Sparekey, clock: FixedClock) -> None:
    new_user(sparekey, "alice")
    enroll_totp(sparekey, "alice", clock.now())
    add_factor_row(sparekey, "alice", "fct_lost", status="lost")
    add_factor_row(sparekey, "alice", "fct_pending", type="totp", status="pending")
    readiness = sparekey.readiness.assess("alice")
    assert readiness.facts.active_factors == 1
    assert readiness.facts.phishing_resistant_factors == 0
    assert readiness.assessment.one_device_from_lockout


def test_a_drill_never_spends_the_code(sparekey: Sparekey) -> None:
    new_user(sparekey, "alice")
    codes = sparekey.backup_codes.regenerate("alice").codes
    for _ in range(2):
        result = sparekey.readiness.check_backup_code("alice", codes[0].lower().replace("-", " "))
        assert (result.valid, result.remaining) == (True, 10)
    signed_in = sparekey.verification.verify("alice", codes[0])
    assert (signed_in.verified, signed_in.backup_codes_remaining) == (True, 9)
    spent = sparekey.readiness.check_backup_code("alice", codes[0])
    assert (spent.valid, spent.remaining) == (False, 9)


def test_a_drill_records_itself_and_a_valid_code_proves_the_set(
    sparekey: Sparekey, clock: FixedClock
) -> None:
    new_user(sparekey, "alice")
    codes = sparekey.backup_codes.regenerate("alice").codes
    assert not sparekey.readiness.check_backup_code("alice", "7KQF-M2XD-9RWP-HTNC").valid
    assert not sparekey.readiness.check_backup_code("alice", "not a code").valid
    after_wrong = sparekey.readiness.assess("alice")
    assert after_wrong.last_drill_at == clock.now()
    assert after_wrong.backup_codes_proven_at is None
    clock.advance(60)
    assert sparekey.readiness.check_backup_code("alice", codes[3]).valid
    after_right = sparekey.readiness.assess("alice")
    assert after_right.last_drill_at == after_right.backup_codes_proven_at == clock.now()

    events = sparekey.audit.query(user_id="alice", events=("backup_codes.checked",)).records
    assert [(e.outcome, e.details) for e in events] == [
        ("success", {"valid": True, "remaining": 10}),
        ("failure", {"valid": False, "remaining": 10}),
        ("failure", {"valid": False, "remaining": 10}),
    ]
    assert all(codes[3] not in str(e.details) for e in events)


def test_regenerating_codes_forgets_the_proof(sparekey: Sparekey) -> None:
    new_user(sparekey, "alice")
    codes = sparekey.backup_codes.regenerate("alice").codes
    assert sparekey.readiness.check_backup_code("alice", codes[0]).valid
    assert sparekey.readiness.assess("alice").facts.backup_codes_proven
    sparekey.backup_codes.regenerate("alice")
    readiness = sparekey.readiness.assess("alice")
    assert readiness.backup_codes_proven_at is None
    assert not readiness.facts.backup_codes_proven
    assert "prove_backup_codes_saved" in [a.id for a in readiness.assessment.actions]
    assert readiness.last_drill_at is not None, "the drill itself happened"


def test_drills_are_throttled_per_user(sparekey: Sparekey, clock: FixedClock) -> None:
    new_user(sparekey, "alice")
    new_user(sparekey, "bob")
    codes = sparekey.backup_codes.regenerate("alice").codes
    for _ in range(5):  # drill_checks: 5 per 900 s, all at once, then one every 180 s
        sparekey.readiness.check_backup_code("alice", "WRONG-CODE-0000-0000")
    with pytest.raises(DrillLimitedError) as refused:
        sparekey.readiness.check_backup_code("alice", codes[0])
    assert refused.value.retry_after == 180
    assert sparekey.readiness.check_backup_code("bob", codes[0]).remaining == 0
    assert sparekey.verification.verify("alice", codes[0]).verified, "sign-in is not limited"
    clock.advance(180)
    assert sparekey.readiness.check_backup_code("alice", codes[1]).valid


def test_unknown_users(sparekey: Sparekey) -> None:
    with pytest.raises(UserNotFoundError):
        sparekey.readiness.assess("nobody")
    with pytest.raises(UserNotFoundError):
        sparekey.readiness.check_backup_code("nobody", "7KQF-M2XD-9RWP-HTNC")


def test_the_report_counts_a_known_population(sparekey: Sparekey, clock: FixedClock) -> None:
    now = clock.now()
    for user_id in ("ready", "app_only", "codes_only", "unsaved", "nothing"):
        new_user(sparekey, user_id)
    for user_id in ("root_user", "safe_user", "gone_user", "help_user"):
        new_user(sparekey, user_id)
    for user_id in ("ready", "codes_only", "unsaved"):
        codes = sparekey.backup_codes.regenerate(user_id).codes
        if user_id != "unsaved":
            assert sparekey.readiness.check_backup_code(user_id, codes[0]).valid
    for user_id in ("ready", "app_only", "unsaved", "root_user", "gone_user", "help_user"):
        enroll_totp(sparekey, user_id, now)
    add_factor_row(sparekey, "ready", "fct_ready_key")
    add_factor_row(sparekey, "safe_user", "fct_safe_key")
    add_operator(sparekey, "root", "root_user", role="admin")
    add_operator(sparekey, "safe", "safe_user", role="admin")
    add_operator(sparekey, "gone", "gone_user", role="admin", disabled=True)
    add_operator(sparekey, "help", "help_user", role="helpdesk")

    report = sparekey.readiness.report()
    assert report.generated_at == now
    assert report.users == 9
    # one way in: app_only, codes_only, unsaved (an unproven set), and the four operators'
    # users with one factor each
    assert report.one_device_from_lockout == 7
    assert report.no_way_in == 1  # nothing
    assert (report.admins, report.admins_without_phishing_resistant) == (2, ("root",))

    # The report and the per-user call can never disagree: same facts, same rules
    users = ["ready", "app_only", "codes_only", "unsaved", "nothing"]
    users += ["root_user", "safe_user", "gone_user", "help_user"]
    each = [sparekey.readiness.assess(u).assessment for u in users]
    assert sum(a.one_device_from_lockout for a in each) == report.one_device_from_lockout
    scores = Counter(a.score for a in each)
    for band in report.scores:
        assert band.users == sum(n for s, n in scores.items() if band.low <= s <= band.high)
    actions = Counter(action.id for a in each for action in a.actions)
    assert {a.id: a.users for a in report.actions} == dict(actions)
    points = [a.points for a in report.actions]
    assert points == sorted(points, reverse=True)
    assert report.mean_score == round(sum(a.score for a in each) / len(each), 1)


def test_the_policy_setting_decides_whether_unproven_sets_count(
    settings: Settings, clock: FixedClock
) -> None:
    trusting = load_settings(
        settings.data_dir, database_url=settings.database_url, backup_codes_require_proof=False
    )
    initialize(trusting, clock=clock)
    app = Sparekey.open(trusting, clock=clock)
    try:
        new_user(app, "alice")
        app.backup_codes.regenerate("alice")
        readiness = app.readiness.assess("alice")
        assert readiness.assessment.ways_in == 1
        assert "prove_backup_codes_saved" not in [a.id for a in readiness.assessment.actions]
        assert app.readiness.report().one_device_from_lockout == 1
    finally:
        app.close()
