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

__all__ = ["FileKeyProvider", "KeyFile", "KeyFileError", "KeyProvider", "KeyProviderError"]


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
    """A 256-bit KEK from a local key file (mode 0600)."""

    def __init__(self, key: bytes) -> None:
        if len(key) != KEY_SIZE:
            raise KeyFileError("the key file must hold a 256-bit key")
        self._key = key
        self._kek_id = "file:" + hashlib.sha256(b"sparekey kek id|" + key).hexdigest()[:16]

    @classmethod
    def create(cls, path: Path) -> FileKeyProvider:
        """Write a new key file; refuses to overwrite one that exists."""
        if path.exists():
            raise FileExistsError(f"key file {path} already exists")
        return KeyFile(path).add()

    @classmethod
    def load(cls, path: Path) -> FileKeyProvider:
        """The newest KEK in the key file."""
        return KeyFile(path).load()[0]

    @property
    def kek_id(self) -> str:
        return self._kek_id

    def wrap(self, key: bytes, *, aad: bytes) -> bytes:
        return seal(self._key, key, aad=aad)

    def unwrap(self, wrapped: bytes, *, aad: bytes) -> bytes:
        return open_sealed(self._key, wrapped, aad=aad)

    def line(self) -> str:
        return f"{_HEADER} {base64.urlsafe_b64encode(self._key).decode('ascii')}"


class KeyFile:
    """The key file: one KEK per line, the newest first.

    A KEK rotation adds a line; the KEK it replaced stays (retired) so that backups taken before
    the rotation can still be restored, until ``sparekey keys destroy-kek`` removes it. Every
    change rewrites the file atomically (temporary file, fsync, rename), mode 0600.
    """

    def __init__(self, path: Path) -> None:
        self.path = path

    def load(self) -> list[FileKeyProvider]:
        path = self.path
        try:
            mode = path.stat().st_mode
            text = path.read_text(encoding="ascii")
        except FileNotFoundError as exc:
            raise KeyFileError(f"key file {path} does not exist") from exc
        except (OSError, UnicodeDecodeError) as exc:
            raise KeyFileError(f"key file {path} cannot be read: {exc}") from exc
        if mode & (stat.S_IRWXG | stat.S_IRWXO):
            raise KeyFileError(f"key file {path} is readable by others; chmod 600 it")
        providers = []
        for line in text.splitlines():
            if not line.strip():
                continue
            header, _, encoded = line.strip().partition(" ")
            if header != _HEADER:
                raise KeyFileError(f"key file {path} is not a Sparekey key file")
            try:
                key = base64.urlsafe_b64decode(encoded.encode("ascii"))
            except ValueError as exc:
                raise KeyFileError(f"key file {path} is damaged") from exc
            providers.append(FileKeyProvider(key))
        if not providers:
            raise KeyFileError(f"key file {path} holds no key")
        return providers

    def find(self, kek_id: str) -> FileKeyProvider | None:
        return next((p for p in self.load() if p.kek_id == kek_id), None)

    def add(self) -> FileKeyProvider:
        """Generate a KEK and put it first (creating the file if there is none)."""
        provider = FileKeyProvider(os.urandom(KEY_SIZE))
        existing = self.load() if self.path.exists() else []
        self._write([provider, *existing])
        return provider

    def remove(self, kek_id: str) -> None:
        """Drop one KEK; the file goes when its last KEK does (after a move to an HSM or KMS)."""
        remaining = [p for p in self.load() if p.kek_id != kek_id]
        if remaining:
            self._write(remaining)
        else:
            self.path.unlink()

    def _write(self, providers: list[FileKeyProvider]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        temporary = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            with os.fdopen(fd, "w", encoding="ascii") as handle:
                handle.write("".join(p.line() + "\n" for p in providers))
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(temporary, self.path)
        except BaseException:
            temporary.unlink(missing_ok=True)
            raise
        directory = os.open(self.path.parent, os.O_RDONLY)
        try:
            os.fsync(directory)
        finally:
            os.close(directory)
