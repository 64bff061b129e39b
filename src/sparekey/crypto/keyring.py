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

import hmac
import os
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Protocol

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from sparekey.crypto.aead import KEY_SIZE, open_sealed, seal
from sparekey.crypto.providers import KeyProvider, KeyProviderError

__all__ = [
    "KekResolver",
    "KeyPurpose",
    "KeyStore",
    "Keyring",
    "NewKey",
    "StoredKey",
    "UnknownKeyError",
    "data_key_aad",
]


class KeyPurpose(StrEnum):
    ENCRYPTION = "encryption"
    MAC = "mac"
    SIGNING = "signing"  # an Ed25519 private key (its 32-byte seed) that signs audit checkpoints


@dataclass(frozen=True, kw_only=True)
class StoredKey:
    id: int
    purpose: KeyPurpose
    wrapped: bytes | None  # None once the key is retired and only its public half is kept
    kek_id: str
    active: bool
    public_key: bytes | None = None  # signing keys: the raw Ed25519 public key


@dataclass(frozen=True, kw_only=True)
class NewKey:
    """A data key made but not stored yet: the store inserts it, then wraps it under its row id."""

    purpose: KeyPurpose
    kek_id: str
    wrap: WrapFunction
    public_key: bytes | None
    material: bytes = field(repr=False)


class KeyStore(Protocol):
    """Where wrapped data keys are kept (the database)."""

    def list_keys(self) -> Sequence[StoredKey]: ...

    def add_key(self, key: NewKey) -> StoredKey:
        """Insert ``key`` as the active key of its purpose; returns it as stored."""
        ...


class WrapFunction(Protocol):
    def __call__(self, key_id: int) -> bytes: ...


KekResolver = Callable[[str], KeyProvider]
"""Opens the provider holding the KEK with a given id (raises KeyProviderError if unreachable)."""


class UnknownKeyError(Exception):
    """A record names a data key that neither this process nor the database knows."""


def data_key_aad(purpose: KeyPurpose, key_id: int) -> bytes:
    return f"sparekey/data-key/v1|{purpose.value}|{key_id}".encode()


@dataclass(frozen=True)
class _Entry:
    purpose: KeyPurpose
    material: bytes | None = field(repr=False)  # None: retired, public half only
    public_key: bytes | None = None


class Keyring:
    """Data keys, unwrapped once per process.

    ``provider`` (needed only by a new deployment) wraps its first keys; after that the KEK
    that wrapped the newest data key wraps new ones, and ``resolve`` opens any other KEK a
    stored key names (after a KEK rotation, or a move from one provider to another). Every
    ``refresh_seconds`` the keyring re-reads which keys are active, so a rotation started on one
    node reaches all of them.
    """

    def __init__(
        self,
        *,
        store: KeyStore,
        provider: KeyProvider | None = None,
        resolve: KekResolver | None = None,
        refresh_seconds: float = 5.0,
    ) -> None:
        self._default = provider
        self._store = store
        self._resolve = resolve
        self._refresh_seconds = refresh_seconds
        self._lock = threading.RLock()
        self._providers: dict[str, KeyProvider] = {}
        if provider is not None:
            self._providers[provider.kek_id] = provider
        self._keys: dict[int, _Entry] = {}
        self._active: dict[KeyPurpose, int] = {}
        self._wrapping_kek = provider.kek_id if provider is not None else None
        self._loaded_at = 0.0
        self.reload()

    def reload(self) -> None:
        """Read the stored keys; unwrap the ones not cached yet, forget the ones destroyed."""
        stored = self._store.list_keys()
        with self._lock:
            keys: dict[int, _Entry] = {}
            active: dict[KeyPurpose, int] = {}
            wrapping = self._default.kek_id if self._default is not None else None
            for key in stored:
                cached = self._keys.get(key.id)
                if key.wrapped is None:
                    keys[key.id] = _Entry(key.purpose, None, key.public_key)
                elif cached is not None and cached.material is not None:
                    keys[key.id] = cached
                else:
                    material = self.provider_for(key.kek_id).unwrap(
                        key.wrapped, aad=data_key_aad(key.purpose, key.id)
                    )
                    keys[key.id] = _Entry(key.purpose, material, key.public_key)
                if key.wrapped is not None:
                    wrapping = key.kek_id  # stored in id order: the newest key's KEK wins
                if key.active:
                    active[key.purpose] = key.id
            self._keys, self._active, self._wrapping_kek = keys, active, wrapping
            self._loaded_at = time.monotonic()

    def provider_for(self, kek_id: str) -> KeyProvider:
        """The provider of the KEK named ``kek_id``, opened once."""
        with self._lock:
            provider = self._providers.get(kek_id)
            if provider is None:
                if self._resolve is None:
                    raise KeyProviderError(
                        f"the key-encryption key {kek_id} is not reachable with these settings"
                    )
                provider = self._resolve(kek_id)
                self._providers[kek_id] = provider
            return provider

    def adopt(self, provider: KeyProvider) -> None:
        """Make ``provider`` reachable by its KEK id (a KEK this process has just created)."""
        with self._lock:
            self._providers[provider.kek_id] = provider

    @property
    def refresh_seconds(self) -> float:
        return self._refresh_seconds

    @property
    def wrapping_provider(self) -> KeyProvider:
        """The provider of the current KEK: it wraps every new data key."""
        if self._wrapping_kek is None:
            raise KeyProviderError("no key-encryption key is configured")
        return self.provider_for(self._wrapping_kek)

    def stored_keys(self) -> Sequence[StoredKey]:
        """The wrapped keys as the store holds them (ids, purposes, KEK ids; no key material)."""
        return self._store.list_keys()

    def ensure_keys(self) -> list[int]:
        """Create the first key of each purpose if there is none (at ``sparekey init``)."""
        return [self.add_key(p) for p in KeyPurpose if p not in self._active]

    def new_key(self, purpose: KeyPurpose) -> NewKey:
        """Make a data key under the current KEK, for :meth:`KeyStore.add_key` to insert."""
        material = os.urandom(KEY_SIZE)
        provider = self.wrapping_provider
        public = None
        if purpose is KeyPurpose.SIGNING:
            public = _raw_public(Ed25519PrivateKey.from_private_bytes(material).public_key())
        return NewKey(
            purpose=purpose,
            kek_id=provider.kek_id,
            wrap=lambda key_id: provider.wrap(material, aad=data_key_aad(purpose, key_id)),
            public_key=public,
            material=material,
        )

    def add_key(self, purpose: KeyPurpose) -> int:
        """Make and store a new active key of ``purpose``; new records use it from now on."""
        stored = self._store.add_key(self.new_key(purpose))
        self.reload()
        return stored.id

    def rewrap(self, provider: KeyProvider) -> dict[int, bytes]:
        """Every data key that still has its material, wrapped under ``provider``'s KEK."""
        self.reload()
        with self._lock:
            return {
                key_id: provider.wrap(entry.material, aad=data_key_aad(entry.purpose, key_id))
                for key_id, entry in self._keys.items()
                if entry.material is not None
            }

    def _key(self, key_id: int, purpose: KeyPurpose) -> bytes:
        entry = self._keys.get(key_id)
        if entry is None:
            self.reload()
            entry = self._keys.get(key_id)
        if entry is None or entry.purpose is not purpose or entry.material is None:
            raise UnknownKeyError(f"no {purpose.value} key with id {key_id}")
        return entry.material

    def _active_id(self, purpose: KeyPurpose) -> int:
        if time.monotonic() - self._loaded_at > self._refresh_seconds:
            self.reload()
        try:
            return self._active[purpose]
        except KeyError:
            raise UnknownKeyError(f"no active {purpose.value} key; run `sparekey init`") from None

    def active_id(self, purpose: KeyPurpose) -> int:
        """The id of the key new records of ``purpose`` use."""
        return self._active_id(purpose)

    # -- secrets kept outside the database (backups) --------------------------------------------

    def wrap_with_kek(self, secret: bytes, *, aad: bytes) -> tuple[str, bytes]:
        """Wrap ``secret`` directly under the current KEK; returns (KEK id, wrapped bytes)."""
        provider = self.wrapping_provider
        return provider.kek_id, provider.wrap(secret, aad=aad)

    def unwrap_with_kek(self, kek_id: str, wrapped: bytes, *, aad: bytes) -> bytes:
        """Unwrap what :meth:`wrap_with_kek` wrapped, with the KEK named ``kek_id``."""
        return self.provider_for(kek_id).unwrap(wrapped, aad=aad)

    # -- encryption ---------------------------------------------------------------------------

    def encrypt(self, plaintext: bytes, *, aad: bytes) -> tuple[int, bytes]:
        """Seal with the newest encryption key; returns (key id, blob)."""
        key_id = self._active_id(KeyPurpose.ENCRYPTION)
        return key_id, seal(self._key(key_id, KeyPurpose.ENCRYPTION), plaintext, aad=aad)

    def encrypt_with(self, key_id: int, plaintext: bytes, *, aad: bytes) -> bytes:
        """Seal with a given encryption key (re-encryption during a rotation)."""
        return seal(self._key(key_id, KeyPurpose.ENCRYPTION), plaintext, aad=aad)

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
        return hmac.digest(key, label.encode() + b"\x00" + data, "sha256")  # OpenSSL's one-shot

    def mac_key_ids(self) -> list[int]:
        return sorted(k for k, entry in self._keys.items() if entry.purpose is KeyPurpose.MAC)

    # -- signatures -----------------------------------------------------------------------------

    def sign(self, data: bytes) -> tuple[int, bytes]:
        """Ed25519 signature with the newest signing key; returns (key id, signature)."""
        key_id = self._active_id(KeyPurpose.SIGNING)
        return key_id, self._private(key_id).sign(data)

    def public_key(self, key_id: int) -> Ed25519PublicKey:
        """The public half of any signing key, retired ones included."""
        entry = self._keys.get(key_id)
        if entry is None:
            self.reload()
            entry = self._keys.get(key_id)
        if entry is None or entry.purpose is not KeyPurpose.SIGNING:
            raise UnknownKeyError(f"no signing key with id {key_id}")
        if entry.public_key is not None:
            return Ed25519PublicKey.from_public_bytes(entry.public_key)
        return self._private(key_id).public_key()

    def public_bytes(self, key_id: int) -> bytes:
        return _raw_public(self.public_key(key_id))

    def _private(self, key_id: int) -> Ed25519PrivateKey:
        return Ed25519PrivateKey.from_private_bytes(self._key(key_id, KeyPurpose.SIGNING))


def _raw_public(key: Ed25519PublicKey) -> bytes:
    return key.public_bytes(Encoding.Raw, PublicFormat.Raw)
