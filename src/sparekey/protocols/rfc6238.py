"""TOTP: Time-Based One-Time Password Algorithm (RFC 6238).

Section 4.2: T = floor((now - T0) / X), and TOTP = HOTP(K, T). ``now`` is always an argument here;
the caller owns the clock.
"""

from __future__ import annotations

from sparekey.protocols.rfc4226 import HashAlgorithm, hotp

__all__ = ["time_step", "totp"]


def time_step(*, now: float, period: int, t0: int = 0) -> int:
    """The time-step number T of RFC 6238 section 4.2 for Unix time ``now``."""
    if period <= 0:
        raise ValueError("period must be positive")
    return int((now - t0) // period)


def totp(
    *,
    key: bytes,
    now: float,
    period: int = 30,
    digits: int = 6,
    algorithm: HashAlgorithm = HashAlgorithm.SHA1,
) -> str:
    """The TOTP value at Unix time ``now`` (RFC 6238 section 4)."""
    return hotp(
        key=key, counter=time_step(now=now, period=period), digits=digits, algorithm=algorithm
    )
