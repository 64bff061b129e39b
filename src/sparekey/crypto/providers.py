"""Key providers: where the key-encryption key (KEK) lives and how it wraps data keys.

A provider never hands out its KEK; it wraps and unwraps the few data keys Sparekey keeps in its
database. The local key file is the default. HSM (PKCS#11) and cloud KMS providers implement
the same
:class:`KeyProvider` protocol.
"""

from __future__ import annotations

import base64
import hashlib
import os
import stat
from pathlib import Path
from typing import Protocol

from sparekey.crypto.aead import KEY_SIZE, open_sealed, seal

__all__ = ["FileKeyProvider", "KeyFileError", "KeyProvider", "KeyProviderError"]


class KeyProvider(Protocol):
    """Holds a key-encryption key and wraps data keys with it."""

    @property
    def kek_id(self) -> str:
        """A stable, non-secret name for the KEK, stored beside every key it wraps."""
        ...

    def wrap(self, key: bytes, *, aad: bytes) -> bytes: ...

    def unwrap(self, wrapped: bytes, *, aad: bytes) -> bytes:
        """Raises :class:`~sparekey.crypto.aead.DecryptionError` when ``wrapped`` is not ours."""
        ...


class KeyProviderError(Exception):
    """The key provider cannot be used (missing, misconfigured, unreachable); one line says why."""


class KeyFileError(KeyProviderError):
    """The key file is missing, unreadable, malformed or too widely readable."""


_HEADER = "sparekey-kek-v1"


class FileKeyProvider:
    """A 256-bit KEK in a local file (mode 0600), created on first use."""

    def __init__(self, key: bytes) -> None:
        if len(key) != KEY_SIZE:
            raise KeyFileError("the key file must hold a 256-bit key")
        self._key = key
        self._kek_id = "file:" + hashlib.sha256(b"sparekey kek id|" + key).hexdigest()[:16]

    @classmethod
    def create(cls, path: Path) -> FileKeyProvider:
        """Write a new key file; refuses to overwrite one that exists."""
        key = os.urandom(KEY_SIZE)
        path.parent.mkdir(parents=True, exist_ok=True)
        text = f"{_HEADER} {base64.urlsafe_b64encode(key).decode('ascii')}\n"
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w", encoding="ascii") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        return cls(key)

    @classmethod
    def load(cls, path: Path) -> FileKeyProvider:
        try:
            mode = path.stat().st_mode
            text = path.read_text(encoding="ascii")
        except FileNotFoundError as exc:
            raise KeyFileError(f"key file {path} does not exist") from exc
        except (OSError, UnicodeDecodeError) as exc:
            raise KeyFileError(f"key file {path} cannot be read: {exc}") from exc
        if mode & (stat.S_IRWXG | stat.S_IRWXO):
            raise KeyFileError(f"key file {path} is readable by others; chmod 600 it")
        header, _, encoded = text.strip().partition(" ")
        if header != _HEADER:
            raise KeyFileError(f"key file {path} is not a Sparekey key file")
        try:
            key = base64.urlsafe_b64decode(encoded.encode("ascii"))
        except ValueError as exc:
            raise KeyFileError(f"key file {path} is damaged") from exc
        return cls(key)

    @property
    def kek_id(self) -> str:
        return self._kek_id

    def wrap(self, key: bytes, *, aad: bytes) -> bytes:
        return seal(self._key, key, aad=aad)

    def unwrap(self, wrapped: bytes, *, aad: bytes) -> bytes:
        return open_sealed(self._key, wrapped, aad=aad)
