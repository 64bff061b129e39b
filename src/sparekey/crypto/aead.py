"""AES-256-GCM with associated data (NIST SP 800-38D), the one cipher Sparekey stores secrets with.

A sealed blob is ``nonce (12 bytes) || ciphertext || tag (16 bytes)``. The associated data binds a
ciphertext to where it belongs (its table, row and owner): moved anywhere else, it fails to open.
"""

from __future__ import annotations

import os

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

__all__ = ["KEY_SIZE", "DecryptionError", "open_sealed", "seal"]

KEY_SIZE = 32
_NONCE_SIZE = 12


class DecryptionError(Exception):
    """A sealed blob did not authenticate: wrong key, wrong associated data, or tampered."""


def seal(key: bytes, plaintext: bytes, *, aad: bytes) -> bytes:
    nonce = os.urandom(_NONCE_SIZE)
    return nonce + AESGCM(key).encrypt(nonce, plaintext, aad)


def open_sealed(key: bytes, blob: bytes, *, aad: bytes) -> bytes:
    if len(blob) < _NONCE_SIZE + 16:
        raise DecryptionError("sealed blob too short")
    try:
        return AESGCM(key).decrypt(blob[:_NONCE_SIZE], blob[_NONCE_SIZE:], aad)
    except InvalidTag as exc:
        raise DecryptionError("sealed blob did not authenticate") from exc
