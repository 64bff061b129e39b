"""Records of recovery readiness: one user's facts and assessment, and the organisation's report.

The rules that turn facts into a score and actions are in ``services/readiness.py``; the facts
come from ``storage/readiness.py``, for one user or grouped over every user.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

__all__ = [
    "ActionCount",
    "Assessment",
    "DrillResult",
    "OrgReadiness",
    "ReadinessAction",
    "ReadinessFacts",
    "ScoreBand",
    "UserReadiness",
]


@dataclass(frozen=True, kw_only=True, slots=True)
class ReadinessFacts:
    """What the database says about one user's ways in; all the readiness rules read.

    Only ``active`` factors count: pending enrollments and lost devices are no way in.
    """

    active_factors: int
    phishing_resistant_factors: int  # active WebAuthn security keys and passkeys
    stale_factors: int  # active, and not used (nor confirmed) within the policy's stale_after
    backup_codes_unused: int
    backup_codes_used: int  # of the current set: a code used to sign in proves the set was saved
    backup_codes_proven: bool  # users.backup_codes_proven_at is set (a drill checked a code)
    drilled: bool  # users.last_drill_at is set
    fallback_factors: int = 0  # active email and SMS factors (the weakest: a last resort)


@dataclass(frozen=True, kw_only=True, slots=True)
class ReadinessAction:
    """Something the user can do, and the points it adds to their score (its impact)."""

    id: str
    title: str
    why: str
    impact: int


@dataclass(frozen=True, kw_only=True, slots=True)
class Assessment:
    """What the rules make of a user's facts. ``actions`` are ranked, highest impact first."""

    score: int  # 0 to 100
    ways_in: int  # active factors, plus one for a saved set of unused backup codes
    actions: tuple[ReadinessAction, ...]

    @property
    def one_device_from_lockout(self) -> bool:
        """Exactly one way in: losing that one device (or sheet of codes) locks the user out."""
        return self.ways_in == 1


@dataclass(frozen=True, kw_only=True)
class UserReadiness:
    user_id: str
    assessment: Assessment
    facts: ReadinessFacts
    backup_codes_proven_at: datetime | None
    last_drill_at: datetime | None


@dataclass(frozen=True, kw_only=True)
class DrillResult:
    """A recovery drill's answer: whether the code is valid (it is not spent) and how many
    unused codes the user has."""

    valid: bool
    remaining: int


@dataclass(frozen=True, kw_only=True)
class ScoreBand:
    low: int
    high: int
    users: int


@dataclass(frozen=True, kw_only=True)
class ActionCount:
    """How many users an action applies to; ``points`` is users times impact."""

    id: str
    title: str
    impact: int
    users: int
    points: int


@dataclass(frozen=True, kw_only=True)
class OrgReadiness:
    """Readiness of every user of the deployment, at ``generated_at``."""

    generated_at: datetime
    users: int
    one_device_from_lockout: int  # users with exactly one way in
    no_way_in: int  # users with none: not enrolled, or everything they had is lost or used
    mean_score: float
    median_score: int
    scores: tuple[ScoreBand, ...]  # 0-9, 10-19, ..., 90-99, 100
    actions: tuple[ActionCount, ...]  # most points first
    admins: int  # enabled operators with the admin role
    admins_without_phishing_resistant: tuple[str, ...]  # their operator names
