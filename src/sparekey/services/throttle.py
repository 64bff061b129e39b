"""Throttling guessable codes without letting an attacker lock the user out.

Guessable codes (TOTP and HOTP; later SMS and email) share one budget per user. The first
``free_failures`` consecutive failures cost nothing; each later one locks guessable codes for
``base_delay * 2**(n - free_failures - 1)`` seconds, at most ``max_delay``; the
``suspend_after``-th consecutive failure (100 by default, NIST SP 800-63B section 5.2.2) suspends
them until a success with a non-guessable factor (a backup code, later a security key) or an
administrator lifts it. A successful code resets the count.

Non-guessable factors never consult this budget, so a flood of wrong codes cannot stop the user
from signing in with a backup code. The bound this gives is worked out in docs/throttling.md.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime, timedelta

from sparekey.domain.errors import FactorsSuspendedError, ThrottledError
from sparekey.domain.models import ThrottleState
from sparekey.storage import throttle as repo
from sparekey.storage.prepared import Unit

__all__ = ["Throttle", "ThrottlePolicy"]


@dataclass(frozen=True, kw_only=True)
class ThrottlePolicy:
    free_failures: int = 5
    base_delay_seconds: float = 1.0
    max_delay_seconds: float = 900.0
    suspend_after: int = 100

    def delay_after(self, failures: int) -> float:
        """Seconds guessable codes stay locked after the ``failures``-th consecutive failure."""
        extra = failures - self.free_failures
        if extra <= 0:
            return 0.0
        return min(self.base_delay_seconds * 2.0 ** min(extra - 1, 64), self.max_delay_seconds)


class Throttle:
    def __init__(self, policy: ThrottlePolicy) -> None:
        self.policy = policy

    def check(self, state: ThrottleState, *, now: datetime) -> None:
        """Refuse before any code is checked if guessable codes are locked or suspended."""
        if state.suspended_at is not None:
            raise FactorsSuspendedError()
        if state.locked_until is not None and state.locked_until > now:
            raise ThrottledError(_seconds_until(state.locked_until, now))

    def succeed(
        self, unit: Unit, user_id: str, *, now: datetime, seen: ThrottleState | None = None
    ) -> None:
        """A good code: reset the count, unless a concurrent failure locked the user first.
        ``seen``: the state this unit read, if any; with nothing to reset, nothing is written."""
        reset = seen is None or seen.failures != 0 or seen.locked_until is not None
        if not repo.record_success(unit.write(), user_id, now=now, reset=reset):
            raise ThrottledError(math.ceil(self.policy.base_delay_seconds))

    def fail(self, unit: Unit, user_id: str, *, now: datetime) -> ThrottleState | None:
        """A wrong code: count it, and lock or suspend as the policy says. Returns the new state
        when this failure engaged the throttle (a lock or a suspension), None otherwise."""
        failures = repo.record_failure(unit.write(), user_id, now=now)
        if failures is None:  # a concurrent failure locked the user first
            raise ThrottledError(math.ceil(self.policy.base_delay_seconds))
        delay = self.policy.delay_after(failures)
        suspended = failures >= self.policy.suspend_after
        if not delay and not suspended:
            return None
        state = ThrottleState(
            failures=failures,
            locked_until=now + timedelta(seconds=delay) if delay else None,
            suspended_at=now if suspended else None,
        )
        repo.lock(unit, user_id, until=state.locked_until, suspended_at=state.suspended_at)
        return state


def _seconds_until(moment: datetime, now: datetime) -> int:
    return max(1, math.ceil((moment - now).total_seconds()))
