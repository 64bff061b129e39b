"""TOTP and HOTP factors: the policy, the sealed secret, and matching a code against a factor.

Matching is pure given the secret and ``now``; the caller records the matched step with
:func:`sparekey.storage.factors.advance_step`, which refuses any step not later than the last one.
"""

from __future__ import annotations

import hmac
from dataclasses import dataclass
from datetime import datetime

from sparekey.crypto.keyring import Keyring
from sparekey.domain.models import FactorType
from sparekey.protocols.rfc4226 import hotp, match_counter
from sparekey.protocols.rfc6238 import time_step
from sparekey.storage.factors import OtpFactor

__all__ = ["Match", "OtpPolicy", "find_resync", "match_code", "open_secret", "secret_aad"]


@dataclass(frozen=True, kw_only=True)
class OtpPolicy:
    totp_window: int = 1
    hotp_window: int = 10
    resync_window: int = 100


@dataclass(frozen=True, kw_only=True)
class Match:
    step: int
    drift: int


def secret_aad(*, user_id: str, factor_id: str) -> bytes:
    """Associated data that binds a sealed secret to its factor row and its user."""
    return f"sparekey/factor-secret/v1|{len(user_id)}:{user_id}|{factor_id}".encode()


def open_secret(keyring: Keyring, factor: OtpFactor) -> bytes:
    return keyring.decrypt(
        factor.secret_key_id,
        factor.secret,
        aad=secret_aad(user_id=factor.user_id, factor_id=factor.id),
    )


def _candidates(factor: OtpFactor, *, now: datetime, policy: OtpPolicy) -> tuple[range, int]:
    """The steps a code may match, newer than the last used one, and the step "now" is."""
    floor = -1 if factor.last_step is None else factor.last_step
    if factor.type is FactorType.TOTP:
        assert factor.period is not None
        current = time_step(now=now.timestamp(), period=factor.period)
        center = current + factor.drift
        low, high = center - policy.totp_window, center + policy.totp_window
        return range(max(low, floor + 1, 0), high + 1), current
    start = floor + 1
    return range(start, start + policy.hotp_window), start


def match_code(
    factor: OtpFactor, secret: bytes, code: str, *, now: datetime, policy: OtpPolicy
) -> Match | None:
    if len(code) != factor.digits:
        return None
    steps, current = _candidates(factor, now=now, policy=policy)
    step = match_counter(
        key=secret, code=code, counters=steps, digits=factor.digits, algorithm=factor.algorithm
    )
    if step is None:
        return None
    drift = step - current if factor.type is FactorType.TOTP else 0
    return Match(step=step, drift=drift)


def find_resync(
    factor: OtpFactor, secret: bytes, codes: tuple[str, str], *, now: datetime, policy: OtpPolicy
) -> Match | None:
    """Find two consecutive steps producing ``codes``; returns the second step and its drift.

    HOTP searches ``resync_window`` counters past the last one used; TOTP searches that many
    steps either side of now. Only steps later than the last used one count.
    """
    floor = -1 if factor.last_step is None else factor.last_step
    if factor.type is FactorType.TOTP:
        assert factor.period is not None
        current = time_step(now=now.timestamp(), period=factor.period)
        low = max(current - policy.resync_window, floor + 1, 0)
        first_steps = range(low, current + policy.resync_window)
    else:
        current = floor + 1
        first_steps = range(current, current + policy.resync_window)
    # As bytes: compare_digest refuses str with non-ASCII characters (which match no code).
    first, second = (code.encode("ascii", "replace") for code in codes)
    for step in first_steps:
        pair = (
            hotp(key=secret, counter=step, digits=factor.digits, algorithm=factor.algorithm),
            hotp(key=secret, counter=step + 1, digits=factor.digits, algorithm=factor.algorithm),
        )
        if hmac.compare_digest(pair[0].encode(), first) & hmac.compare_digest(
            pair[1].encode(), second
        ):
            drift = step + 1 - current if factor.type is FactorType.TOTP else 0
            return Match(step=step + 1, drift=drift)
    return None
