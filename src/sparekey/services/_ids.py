"""Identifiers for rows Sparekey names itself."""

from __future__ import annotations

import base64
import os


def new_id(prefix: str, *, nbytes: int = 10) -> str:
    """``prefix_`` followed by random lowercase base32 (80 bits by default)."""
    return f"{prefix}_{base64.b32encode(os.urandom(nbytes)).decode('ascii').rstrip('=').lower()}"
