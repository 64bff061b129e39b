"""Backup codes (NIST SP 800-63B section 5.1.2, "look-up secrets").

Each code is 16 characters from Crockford's base32 alphabet (no I, L, O or U), 80 bits of entropy,
shown in four groups of four: ``7KQF-M2XD-9RWP-HTNC``. Input is accepted in any case, with any
whitespace and ASCII dashes, and with the letters people confuse for digits (O for 0, I and L for
1). Anything else is not a code: no other character is mapped to a letter (Unicode case mapping
would turn a dotless i into ``I``, a sharp s into ``SS``).
"""

from __future__ import annotations

import secrets

__all__ = ["ALPHABET", "CODE_LENGTH", "ENTROPY_BITS", "format_code", "generate", "normalize"]

ALPHABET = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
CODE_LENGTH = 16
ENTROPY_BITS = CODE_LENGTH * 5
_CONFUSABLE = str.maketrans({"O": "0", "I": "1", "L": "1"})
_ALLOWED = frozenset(ALPHABET)


def generate(length: int = CODE_LENGTH) -> str:
    """A fresh code in canonical (normalized, ungrouped) form, 5 bits per character."""
    return "".join(secrets.choice(ALPHABET) for _ in range(length))


def format_code(code: str) -> str:
    """Group a canonical code for display: ``XXXX-XXXX-XXXX-XXXX``."""
    return "-".join(code[i : i + 4] for i in range(0, len(code), 4))


def normalize(text: str, *, length: int = CODE_LENGTH) -> str | None:
    """The canonical form of what a person typed, or None when it cannot be a code of
    ``length`` characters (a backup code by default)."""
    cleaned = "".join(text.split()).replace("-", "")
    if len(cleaned) != length or not cleaned.isascii():
        return None
    cleaned = cleaned.upper().translate(_CONFUSABLE)
    if not _ALLOWED.issuperset(cleaned):
        return None
    return cleaned
