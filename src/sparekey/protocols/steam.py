"""Steam Guard codes: RFC 4226 truncation written in Steam's own alphabet.

Steam's mobile authenticator computes TOTP with HMAC-SHA-1 and a 30-second period (RFC 6238), takes
the 31-bit dynamically truncated value (RFC 4226 section 5.4) and writes it as five characters of
``23456789BCDFGHJKMNPQRTVWXY``, lowest-order character first. Other apps (Aegis, 2FAS, Ente,
KeePassXC) compute it the same way.
"""

from __future__ import annotations

from sparekey.protocols.rfc4226 import HashAlgorithm, truncated_value
from sparekey.protocols.rfc6238 import time_step

__all__ = ["ALPHABET", "DIGITS", "PERIOD", "steam_code"]

ALPHABET = "23456789BCDFGHJKMNPQRTVWXY"
DIGITS = 5
PERIOD = 30


def steam_code(*, key: bytes, now: float, period: int = PERIOD) -> str:
    """The Steam Guard code at Unix time ``now``."""
    value = truncated_value(
        key=key, counter=time_step(now=now, period=period), algorithm=HashAlgorithm.SHA1
    )
    chars = []
    for _ in range(DIGITS):
        value, index = divmod(value, len(ALPHABET))
        chars.append(ALPHABET[index])
    return "".join(chars)
