"""HOTP: An HMAC-Based One-Time Password Algorithm (RFC 4226).

Section 5.3 defines the algorithm with HMAC-SHA-1; RFC 6238 section 1.2 extends it to HMAC-SHA-256
and
HMAC-SHA-512, which is why the hash is a parameter here. Section 5.4 gives dynamic truncation.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Iterable
from enum import StrEnum

__all__ = ["MAX_DIGITS", "MIN_DIGITS", "HashAlgorithm", "hotp", "match_counter", "truncated_value"]

MIN_DIGITS = 4
MAX_DIGITS = 10


class HashAlgorithm(StrEnum):
    """The HMAC hash functions of RFC 6238 section 1.2, spelled as in the Key URI format."""

    SHA1 = "SHA1"
    SHA256 = "SHA256"
    SHA512 = "SHA512"

    @property
    def digest_size(self) -> int:
        return _DIGEST_SIZES[self]


_HASHES = {
    HashAlgorithm.SHA1: hashlib.sha1,
    HashAlgorithm.SHA256: hashlib.sha256,
    HashAlgorithm.SHA512: hashlib.sha512,
}
_DIGEST_SIZES = {HashAlgorithm.SHA1: 20, HashAlgorithm.SHA256: 32, HashAlgorithm.SHA512: 64}


def _truncate(digest: bytes) -> int:
    """Dynamic truncation, RFC 4226 section 5.4: a 31-bit integer from the digest."""
    offset = digest[-1] & 0x0F
    return int.from_bytes(digest[offset : offset + 4], "big") & 0x7FFFFFFF


def truncated_value(
    *, key: bytes, counter: int, algorithm: HashAlgorithm = HashAlgorithm.SHA1
) -> int:
    """The 31-bit integer of sections 5.3 and 5.4 before it is reduced to digits (Steam Guard and
    other encoders turn this number into characters of their own)."""
    if counter < 0 or counter >= 1 << 64:
        raise ValueError("counter must fit in 8 unsigned bytes")
    return _truncate(hmac.new(key, counter.to_bytes(8, "big"), _HASHES[algorithm]).digest())


def hotp(
    *, key: bytes, counter: int, digits: int = 6, algorithm: HashAlgorithm = HashAlgorithm.SHA1
) -> str:
    """The HOTP value for ``counter`` (RFC 4226 section 5.3), zero-padded to ``digits``."""
    return _hotp(hmac.new(key, digestmod=_HASHES[algorithm]), counter, digits)


def _hotp(keyed: hmac.HMAC, counter: int, digits: int) -> str:
    """HOTP from an HMAC already keyed (copying it skips the key schedule for each counter)."""
    if not MIN_DIGITS <= digits <= MAX_DIGITS:
        raise ValueError(f"digits must be between {MIN_DIGITS} and {MAX_DIGITS}")
    if counter < 0 or counter >= 1 << 64:
        raise ValueError("counter must fit in 8 unsigned bytes")
    mac = keyed.copy()
    mac.update(counter.to_bytes(8, "big"))
    return str(_truncate(mac.digest()) % 10**digits).zfill(digits)


def match_counter(
    *,
    key: bytes,
    code: str,
    counters: Iterable[int],
    digits: int,
    algorithm: HashAlgorithm,
) -> int | None:
    """The first counter among ``counters`` whose HOTP value equals ``code``, or None.

    Every candidate is computed and compared in constant time, so how long this takes does not
    depend on which candidate (if any) matched.
    """
    encoded = code.encode("ascii", "replace")
    keyed = hmac.new(key, digestmod=_HASHES[algorithm])
    found: int | None = None
    for counter in counters:
        candidate = _hotp(keyed, counter, digits)
        if hmac.compare_digest(candidate.encode("ascii"), encoded) and found is None:
            found = counter
    return found
