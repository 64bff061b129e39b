"""The key hierarchy in memory: data keys unwrapped once, then used for every record.

::

    KEK (key file / HSM / KMS, never leaves its provider)
     └── wraps data keys, stored in the ``data_keys`` table, each with an id and a purpose:
          ├── "encryption": AES-256-GCM keys that seal factor secrets (the newest active one seals)
          ├── "mac":        HMAC-SHA-256 keys for keyed hashes (backup codes, API keys, audit)
          └── "signing":    Ed25519 keys that sign audit checkpoints

Every record names the key id that protects it, so keys can be rotated without rewriting history:
new records use the newest key, old ones keep theirs until they are re-encrypted or used up.
Unwrapped keys are cached here so that no verification calls the provider.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Protocol

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from sparekey.crypto.aead import KEY_SIZE, open_sealed, seal
from sparekey.crypto.providers import KeyProvider, KeyProviderError

__all__ = ["KeyPurpose", "KeyStore", "Keyring", "StoredKey", "UnknownKeyError"]


class KeyPurpose(StrEnum):
    ENCRYPTION = "encryption"
    MAC = "mac"
    SIGNING = "signing"  # an Ed25519 private key (its 32-byte seed) that signs audit checkpoints


@dataclass(frozen=True, kw_only=True)
class StoredKey:
    id: int
    purpose: KeyPurpose
    wrapped: bytes
    kek_id: str
    active: bool


class KeyStore(Protocol):
    """Where wrapped data keys are kept (the database)."""

    def list_keys(self) -> Sequence[StoredKey]: ...

    def add_key(self, *, purpose: KeyPurpose, kek_id: str, wrap: WrapFunction) -> StoredKey:
        """Insert a new active key; ``wrap(key_id)`` returns the wrapped bytes for its id."""
        ...


class WrapFunction(Protocol):
    def __call__(self, key_id: int) -> bytes: ...


class UnknownKeyError(Exception):
    """A record names a data key that neither this process nor the database knows."""


def _aad(purpose: KeyPurpose, key_id: int) -> bytes:
    return f"sparekey/data-key/v1|{purpose.value}|{key_id}".encode()


class Keyring:
    def __init__(self, *, provider: KeyProvider, store: KeyStore) -> None:
        self._provider = provider
        self._store = store
        self._lock = threading.Lock()
        self._keys: dict[int, tuple[KeyPurpose, bytes]] = {}
        self._active: dict[KeyPurpose, int] = {}
        self.reload()

    def reload(self) -> None:
        """Read the wrapped keys from the store and unwrap the ones not cached yet."""
        with self._lock:
            for stored in self._store.list_keys():
                if stored.id not in self._keys:
                    key = self._provider.unwrap(stored.wrapped, aad=_aad(stored.purpose, stored.id))
                    self._keys[stored.id] = (stored.purpose, key)
                if stored.active and stored.id >= self._active.get(stored.purpose, -1):
                    self._active[stored.purpose] = stored.id

    def stored_keys(self) -> Sequence[StoredKey]:
        """The wrapped keys as the store holds them (ids, purposes, KEK ids; no key material)."""
        return self._store.list_keys()

    def ensure_keys(self) -> None:
        """Create the first key of each purpose if there is none (at ``sparekey init``)."""
        for purpose in KeyPurpose:
            if purpose not in self._active:
                self._add(purpose)

    def _add(self, purpose: KeyPurpose) -> int:
        key = os.urandom(KEY_SIZE)
        stored = self._store.add_key(
            purpose=purpose,
            kek_id=self._provider.kek_id,
            wrap=lambda key_id: self._provider.wrap(key, aad=_aad(purpose, key_id)),
        )
        with self._lock:
            self._keys[stored.id] = (purpose, key)
            self._active[purpose] = stored.id
        return stored.id

    def _key(self, key_id: int, purpose: KeyPurpose) -> bytes:
        entry = self._keys.get(key_id)
        if entry is None:
            self.reload()
            entry = self._keys.get(key_id)
        if entry is None or entry[0] is not purpose:
            raise UnknownKeyError(f"no {purpose.value} key with id {key_id}")
        return entry[1]

    def _active_id(self, purpose: KeyPurpose) -> int:
        try:
            return self._active[purpose]
        except KeyError:
            raise UnknownKeyError(f"no active {purpose.value} key; run `sparekey init`") from None

    # -- secrets kept outside the database (backups) --------------------------------------------

    def wrap_with_kek(self, secret: bytes, *, aad: bytes) -> tuple[str, bytes]:
        """Wrap ``secret`` directly under the current KEK; returns (KEK id, wrapped bytes)."""
        return self._provider.kek_id, self._provider.wrap(secret, aad=aad)

    def unwrap_with_kek(self, kek_id: str, wrapped: bytes, *, aad: bytes) -> bytes:
        """Unwrap what :meth:`wrap_with_kek` wrapped, with the KEK named ``kek_id``."""
        if kek_id != self._provider.kek_id:
            raise KeyProviderError(f"the key-encryption key {kek_id} is not reachable here")
        return self._provider.unwrap(wrapped, aad=aad)

    # -- encryption ---------------------------------------------------------------------------

    def encrypt(self, plaintext: bytes, *, aad: bytes) -> tuple[int, bytes]:
        """Seal with the newest encryption key; returns (key id, blob)."""
        key_id = self._active_id(KeyPurpose.ENCRYPTION)
        return key_id, seal(self._key(key_id, KeyPurpose.ENCRYPTION), plaintext, aad=aad)

    def decrypt(self, key_id: int, blob: bytes, *, aad: bytes) -> bytes:
        """Raises :class:`~sparekey.crypto.aead.DecryptionError` if the blob is not for ``aad``."""
        return open_sealed(self._key(key_id, KeyPurpose.ENCRYPTION), blob, aad=aad)

    # -- keyed hashes -------------------------------------------------------------------------

    def mac(self, label: str, data: bytes) -> tuple[int, bytes]:
        """HMAC-SHA-256 with the newest MAC key, domain-separated by ``label``."""
        key_id = self._active_id(KeyPurpose.MAC)
        return key_id, self.mac_with(key_id, label, data)

    def mac_with(self, key_id: int, label: str, data: bytes) -> bytes:
        key = self._key(key_id, KeyPurpose.MAC)
        return hmac.new(key, label.encode() + b"\x00" + data, hashlib.sha256).digest()

    def mac_key_ids(self) -> list[int]:
        return sorted(k for k, (purpose, _) in self._keys.items() if purpose is KeyPurpose.MAC)

    # -- signatures -----------------------------------------------------------------------------

    def sign(self, data: bytes) -> tuple[int, bytes]:
        """Ed25519 signature with the newest signing key; returns (key id, signature)."""
        key_id = self._active_id(KeyPurpose.SIGNING)
        private = Ed25519PrivateKey.from_private_bytes(self._key(key_id, KeyPurpose.SIGNING))
        return key_id, private.sign(data)

    def public_key(self, key_id: int) -> Ed25519PublicKey:
        """The public half of any signing key, retired ones included."""
        private = Ed25519PrivateKey.from_private_bytes(self._key(key_id, KeyPurpose.SIGNING))
        return private.public_key()
