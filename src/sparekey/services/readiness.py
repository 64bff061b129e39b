"""Recovery readiness: how close each user is to being locked out, what would help most, and
recovery drills that check a backup code without spending it.

Definitions (the README's "Readiness and recovery drills" says the same for operators):

- **Ways in**: the user's active factors (each is taken as one device: an authenticator app, a
  security key, a passkey), plus one for the backup-code set if it has an unused code and counts
  as saved. Pending enrollments and factors marked lost are no way in.
- **Saved**: with ``require_proof`` (the default), a set counts as saved only once one of its codes
  has been entered: checked in a drill (``users.backup_codes_proven_at``) or used to sign in (a
  used code of the current set). A set shown once and never entered is too often not kept.
  Without ``require_proof``, every set with an unused code counts.
- **One lost device from lockout**: exactly one way in. Users with none (not enrolled, or all
  they had lost, used up or unsaved) are counted apart, as having no way in.

The per-user call and the organisation report read the same facts (``storage/readiness.py``)
and apply the same pure rules (the bottom of this module), so they cannot disagree. The report
asks the database for each distinct combination of facts with its number of users (set-based,
one statement) and applies the rules once per combination.

Drills are throttled per user with the GCRA limiter of ``services/ratelimit.py`` (shared between
nodes through Redis when configured), not with the OTP throttle: a backup code has 80 bits, so
the limit is there to keep drills from becoming a flood of checks and audit records, not to stop
guessing; and charging wrong drill codes to the OTP budget would let a mistyped drill lock or
suspend the user's authenticator codes, the lockout this feature exists to prevent.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta

from sparekey.domain.errors import DrillLimitedError, UserNotFoundError
from sparekey.domain.models import SYSTEM, Caller
from sparekey.domain.ports import Clock
from sparekey.domain.readiness import (
    ActionCount,
    Assessment,
    DrillResult,
    OrgReadiness,
    ReadinessAction,
    ReadinessFacts,
    ScoreBand,
    UserReadiness,
)
from sparekey.protocols import backup_codes as backup_code_format
from sparekey.services.audit import AuditEntry, Auditor
from sparekey.services.backup_codes import BackupCodeService
from sparekey.services.ratelimit import Limit, RateLimiter
from sparekey.services.verification import BACKUP_CODES_LOW
from sparekey.storage import backup_codes as codes_repo
from sparekey.storage import readiness as repo
from sparekey.storage.database import Database

__all__ = [
    "RULES",
    "ReadinessPolicy",
    "ReadinessService",
    "assess",
    "codes_saved",
    "summarize",
    "ways_in",
]


@dataclass(frozen=True, kw_only=True)
class ReadinessPolicy:
    require_proof: bool = True  # a backup-code set counts as saved once one code was entered
    stale_after: timedelta = timedelta(days=180)  # a factor unused this long may be gone


class ReadinessService:
    def __init__(
        self,
        *,
        db: Database,
        clock: Clock,
        policy: ReadinessPolicy,
        backup_codes: BackupCodeService,
        limiter: RateLimiter,
        check_limit: Limit,
        auditor: Auditor,
    ) -> None:
        self._db = db
        self._clock = clock
        self.policy = policy
        self._backup_codes = backup_codes
        self._limiter = limiter
        self._check_limit = check_limit
        self._auditor = auditor

    def assess(self, user_id: str) -> UserReadiness:
        """One user's score, ways in and ranked actions."""
        stale_before = self._clock.now() - self.policy.stale_after
        with self._db.read() as conn:
            found = repo.user_facts(conn, user_id, stale_before=stale_before)
        if found is None:
            raise UserNotFoundError(user_id)
        return UserReadiness(
            user_id=user_id,
            assessment=assess(found.facts, policy=self.policy),
            facts=found.facts,
            backup_codes_proven_at=found.backup_codes_proven_at,
            last_drill_at=found.last_drill_at,
        )

    def report(self) -> OrgReadiness:
        """Every user's readiness, counted: set-based in the database, rules applied here."""
        now = self._clock.now()
        stale_before = now - self.policy.stale_after
        with self._db.read() as conn:
            repo.snapshot(conn)
            combinations = repo.fact_combinations(conn, stale_before=stale_before)
            admins = repo.admin_facts(conn, stale_before=stale_before)
        return summarize(combinations, admins, policy=self.policy, generated_at=now)

    def check_backup_code(self, user_id: str, code: str, *, caller: Caller = SYSTEM) -> DrillResult:
        """A recovery drill: whether ``code`` is one of the user's unused backup codes, without
        spending it. Records the drill (and, for a valid code, that the set is saved) with its
        audit record in one transaction. Throttled per user (:class:`DrillLimitedError`)."""
        now = self._clock.now()
        decision = self._limiter.hit(f"drill:{user_id}", self._check_limit, now=now)
        if not decision.allowed:
            raise DrillLimitedError(decision.retry_after)
        canonical = backup_code_format.normalize(code)
        digests = self._backup_codes.digests(canonical) if canonical is not None else []
        with self._db.write() as conn:
            valid = bool(digests) and repo.unused_code_exists(conn, user_id, digests=digests)
            if not repo.record_drill(conn, user_id, now=now, proven=valid):
                raise UserNotFoundError(user_id)
            remaining = codes_repo.count_remaining(conn, user_id)
            entry = AuditEntry(
                event="backup_codes.checked",
                outcome="success" if valid else "failure",
                user_id=user_id,
                details={"valid": valid, "remaining": remaining},
            )
            self._auditor.record(conn, entry, caller)
        return DrillResult(valid=valid, remaining=remaining)


# -- The rules: pure functions of a user's facts ---------------------------------------------------


def codes_saved(facts: ReadinessFacts, *, policy: ReadinessPolicy) -> bool:
    """Whether the current backup-code set counts as saved (see the module docstring)."""
    entered = facts.backup_codes_proven or facts.backup_codes_used > 0
    return entered or not policy.require_proof


def ways_in(facts: ReadinessFacts, *, policy: ReadinessPolicy) -> int:
    """Active factors, plus one for a saved set with an unused code."""
    codes = facts.backup_codes_unused > 0 and codes_saved(facts, policy=policy)
    return facts.active_factors + (1 if codes else 0)


def _plural(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


@dataclass(frozen=True, kw_only=True)
class Rule:
    """One action: when it applies, and why, in words the user can act on."""

    id: str
    title: str
    impact: int  # the points it costs while it applies; the score is 100 minus them, at least 0
    applies: Callable[[ReadinessFacts, ReadinessPolicy], bool]
    why: Callable[[ReadinessFacts, ReadinessPolicy], str]

    def action(self, facts: ReadinessFacts, policy: ReadinessPolicy) -> ReadinessAction:
        why = self.why(facts, policy)
        return ReadinessAction(id=self.id, title=self.title, why=why, impact=self.impact)


# In order of impact on lockout risk; equal impacts keep this order.
RULES: tuple[Rule, ...] = (
    Rule(
        id="enroll_factor",
        title="Enroll an authenticator",
        impact=45,
        applies=lambda f, p: f.active_factors == 0,
        why=lambda f, p: "No authenticator app, security key or passkey is active.",
    ),
    Rule(
        id="add_strong_factor",
        title="Add an authenticator app or a security key",
        impact=45,
        applies=lambda f, p: 0 < f.active_factors == f.fallback_factors,
        why=lambda f, p: (
            "Only email or SMS codes are active: a SIM swap, an intercepted message or a "
            "compromised mailbox is enough to take them over."
        ),
    ),
    Rule(
        id="generate_backup_codes",
        title="Generate backup codes",
        impact=35,
        applies=lambda f, p: f.backup_codes_unused == 0,
        why=lambda f, p: (
            (
                "Every backup code has been used"
                if f.backup_codes_used
                else "There are no backup codes"
            )
            + ": losing the authenticator would mean a recovery case with the helpdesk."
        ),
    ),
    Rule(
        id="add_second_factor",
        title="Add a second authenticator",
        impact=25,
        applies=lambda f, p: f.active_factors == 1,
        why=lambda f, p: (
            "Only one authenticator is active: if its device is lost, only backup codes remain."
        ),
    ),
    Rule(
        id="prove_backup_codes_saved",
        title="Confirm the backup codes are saved",
        impact=20,
        applies=lambda f, p: f.backup_codes_unused > 0 and not codes_saved(f, policy=p),
        why=lambda f, p: (
            "No code of the current set has been entered since it was shown, so it "
            "does not count as saved: check one in a recovery drill."
        ),
    ),
    Rule(
        id="regenerate_backup_codes",
        title="Generate a fresh set of backup codes",
        impact=10,
        applies=lambda f, p: 0 < f.backup_codes_unused <= BACKUP_CODES_LOW,
        why=lambda f, p: f"Only {_plural(f.backup_codes_unused, 'unused backup code')} left.",
    ),
    Rule(
        id="add_phishing_resistant_factor",
        title="Add a security key or passkey",
        impact=10,
        applies=lambda f, p: f.phishing_resistant_factors == 0,
        why=lambda f, p: (
            "Codes can be phished; a security key or passkey cannot, and it "
            "cannot be guessed or throttled either."
        ),
    ),
    Rule(
        id="check_unused_factor",
        title="Use or remove an idle authenticator",
        impact=10,
        applies=lambda f, p: f.stale_factors > 0,
        why=lambda f, p: (
            f"{_plural(f.stale_factors, 'authenticator')} not used in "
            f"{p.stale_after.days} days may be lost or reset: sign in with it once, or remove it."
        ),
    ),
    Rule(
        id="run_recovery_drill",
        title="Run a recovery drill",
        impact=5,
        applies=lambda f, p: not f.drilled,
        why=lambda f, p: (
            "Backup codes have never been checked: a drill checks one without spending it."
        ),
    ),
)

_RANK = {rule.id: position for position, rule in enumerate(RULES)}


def assess(facts: ReadinessFacts, *, policy: ReadinessPolicy) -> Assessment:
    """The score (100 minus the impact of every action that applies, at least 0), the ways in,
    and the actions, highest impact first."""
    actions = [rule.action(facts, policy) for rule in RULES if rule.applies(facts, policy)]
    actions.sort(key=lambda a: (-a.impact, _RANK[a.id]))
    score = max(0, 100 - sum(a.impact for a in actions))
    return Assessment(score=score, ways_in=ways_in(facts, policy=policy), actions=tuple(actions))


_BANDS = (*((low, low + 9) for low in range(0, 100, 10)), (100, 100))


def summarize(
    combinations: Iterable[tuple[ReadinessFacts, int]],
    admins: Iterable[tuple[str, ReadinessFacts]],
    *,
    policy: ReadinessPolicy,
    generated_at: datetime,
) -> OrgReadiness:
    """Fold ``(facts, users)`` combinations and the admins' facts into the report."""
    by_score = [0] * 101
    per_action = dict.fromkeys(_RANK, 0)
    one_device = no_way_in = 0
    for facts, users in combinations:
        assessment = assess(facts, policy=policy)
        by_score[assessment.score] += users
        one_device += users if assessment.one_device_from_lockout else 0
        no_way_in += users if assessment.ways_in == 0 else 0
        for action in assessment.actions:
            per_action[action.id] += users
    total = sum(by_score)
    actions = [
        ActionCount(
            id=rule.id,
            title=rule.title,
            impact=rule.impact,
            users=per_action[rule.id],
            points=per_action[rule.id] * rule.impact,
        )
        for rule in RULES
        if per_action[rule.id]
    ]
    actions.sort(key=lambda a: (-a.points, _RANK[a.id]))
    admin_list = list(admins)
    unprotected = tuple(
        name
        for name, facts in admin_list
        if any(
            a.id == "add_phishing_resistant_factor" for a in assess(facts, policy=policy).actions
        )
    )
    return OrgReadiness(
        generated_at=generated_at,
        users=total,
        one_device_from_lockout=one_device,
        no_way_in=no_way_in,
        mean_score=round(sum(s * n for s, n in enumerate(by_score)) / total, 1) if total else 0.0,
        median_score=_median(by_score, total),
        scores=tuple(
            ScoreBand(low=low, high=high, users=sum(by_score[low : high + 1]))
            for low, high in _BANDS
        ),
        actions=tuple(actions),
        admins=len(admin_list),
        admins_without_phishing_resistant=unprotected,
    )


def _median(by_score: list[int], total: int) -> int:
    """The lower median of the scores (0 for no users)."""
    middle, seen = (total + 1) // 2, 0
    for score, users in enumerate(by_score):
        seen += users
        if seen >= middle:
            return score
    return 0
