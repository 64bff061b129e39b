"""The vault file format: entries encrypted under a random master key, the key wrapped in slots.

Layout (JSON, UTF-8; every binary field base64)::

    {"format": "sparekey-authenticator-vault", "version": 1, "vault_id": UUID,
     "cipher": "AES-256-GCM",
     "slots": [{"id": UUID, "type": "password", "kdf": {"name": "argon2id", "version": 19,
                "time_cost": 3, "memory_cost": 65536, "parallelism": 4, "salt": B64},
                "nonce": B64, "wrapped_key": B64},
               {"id": UUID, "type": "recovery", "kdf": {"name": "hkdf-sha256", "salt": B64}, ...},
               {"id": UUID, "type": "keyring", "kdf": {"name": "keyring",
                "service": "sparekey-authenticator"}, ...}],
     "nonce": B64, "data": B64}

``data`` is AES-256-GCM under the master key of a JSON document holding the entries; its
associated data binds it to the format version and the vault id. Each slot's ``wrapped_key`` is the
master key sealed (AES-256-GCM) under a key derived from what the slot holds — the password
(Argon2id, RFC 9106, with the parameters written in the slot), the printable recovery key (160
random bits, HKDF-SHA256 is enough), or a random key kept in the operating system's keyring — with
the slot's own description (everything but its nonce and wrapped key) as associated data. Changing
the password rewraps one slot; the entries are not re-encrypted. Decision record 0013 says why.

Nothing here touches the disk: :mod:`sparekey.authenticator.store` reads and writes files.
"""

from __future__ import annotations

import base64
import binascii
import json
import os
import uuid
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from argon2.exceptions import HashingError
from argon2.low_level import Type, hash_secret_raw
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from sparekey.protocols import backup_codes
from sparekey.protocols.otpauth import OtpauthError, b32decode, b32encode
from sparekey.protocols.rfc4226 import HashAlgorithm
from sparekey.protocols.tokens import Token, TokenError, TokenKind

__all__ = [
    "FORMAT",
    "Entry",
    "Header",
    "KdfParams",
    "Vault",
    "VaultCorruptError",
    "VaultError",
    "WrongCredentialError",
    "format_recovery_key",
    "new_recovery_key",
    "read_header",
]

FORMAT = "sparekey-authenticator-vault"
VERSION = 1
KEYRING_SERVICE = "sparekey-authenticator"
RECOVERY_KEY_LENGTH = 32  # characters of Crockford base32: 160 bits
_KEY = 32
_NONCE = 12


class VaultError(Exception):
    """A vault that cannot be used as asked; the message is one line for a person."""


class WrongCredentialError(VaultError):
    """The password, recovery key or keyring key does not open this vault."""


class VaultCorruptError(VaultError):
    """The file is not a vault, or it was damaged or tampered with."""


@dataclass(frozen=True, kw_only=True)
class KdfParams:
    """Argon2id parameters (RFC 9106 section 4). The default is the RFC's second recommended
    option (64 MiB, 3 passes, 4 lanes); the floor is OWASP's minimum (19 MiB, 2 passes)."""

    time_cost: int = 3
    memory_cost: int = 65_536  # KiB
    parallelism: int = 4

    MIN_TIME = 2
    MIN_MEMORY = 19_456
    MAX_TIME = 64
    MAX_MEMORY = 4 * 1024 * 1024
    MAX_PARALLELISM = 64

    def check_creatable(self) -> None:
        if self.time_cost < self.MIN_TIME or self.memory_cost < self.MIN_MEMORY:
            raise VaultError(
                f"Argon2id needs at least {self.MIN_TIME} passes and {self.MIN_MEMORY} KiB"
            )
        self.check_readable()

    def check_readable(self) -> None:
        """Refuse parameters no vault of ours has, before spending memory and time on them."""
        if not (
            1 <= self.time_cost <= self.MAX_TIME
            and 1 <= self.parallelism <= self.MAX_PARALLELISM
            and 8 * self.parallelism <= self.memory_cost <= self.MAX_MEMORY
        ):
            raise VaultCorruptError("the vault's Argon2id parameters are out of range")


@dataclass(frozen=True, kw_only=True)
class Entry:
    """One account in the vault: a token and its bookkeeping."""

    id: str
    token: Token
    created_at: float
    updated_at: float

    @property
    def label(self) -> str:
        return self.token.label


@dataclass(frozen=True, kw_only=True)
class _Slot:
    id: str
    type: str
    kdf: Mapping[str, Any]
    nonce: bytes
    wrapped_key: bytes

    def aad(self, vault_id: str) -> bytes:
        described = {"vault_id": vault_id, "id": self.id, "type": self.type, "kdf": self.kdf}
        return json.dumps(described, sort_keys=True, separators=(",", ":")).encode()

    def as_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "type": self.type,
            "kdf": dict(self.kdf),
            "nonce": _b64(self.nonce),
            "wrapped_key": _b64(self.wrapped_key),
        }


@dataclass(kw_only=True)
class Vault:
    """An unlocked vault in memory: the master key, the slots, the entries.

    Methods that change it return nothing and mark it changed; the store writes it back.
    """

    vault_id: str
    master_key: bytes
    slots: list[_Slot]
    entries: list[Entry] = field(default_factory=list)
    revision: int = 0
    removed: dict[str, float] = field(default_factory=dict)  # entry id -> when it was removed
    sync: dict[str, Any] = field(default_factory=dict)  # where backups go, and the last seen

    # creation and unlocking ----------------------------------------------------------------

    @classmethod
    def create(cls, *, password: str, kdf: KdfParams | None = None) -> tuple[Vault, str]:
        """A new empty vault with a password slot and a recovery-key slot; returns the vault
        and the recovery key (to be shown once)."""
        params = kdf or KdfParams()
        params.check_creatable()
        _check_password(password)
        vault = cls(vault_id=str(uuid.uuid4()), master_key=AESGCM.generate_key(256), slots=[])
        vault.set_password(password, kdf=params)
        recovery_key = vault.new_recovery_key()
        return vault, recovery_key

    @classmethod
    def unlock(
        cls,
        document: bytes,
        *,
        password: str | None = None,
        recovery_key: str | None = None,
        keyring_key: bytes | None = None,
    ) -> Vault:
        """Open a vault file's bytes with one of its credentials."""
        header = _parse_document(document)
        vault_id: str = header["vault_id"]
        slots = [_parse_slot(raw) for raw in header["slots"]]
        master_key = None
        if password is not None:
            master_key = _open_slots(slots, "password", vault_id, _password_key(password))
        elif recovery_key is not None:
            raw = normalize_recovery_key(recovery_key)
            master_key = _open_slots(slots, "recovery", vault_id, _recovery_slot_key(raw))
        elif keyring_key is not None:
            master_key = _open_slots(slots, "keyring", vault_id, lambda _kdf: keyring_key)
        else:
            raise WrongCredentialError("no password, recovery key or keyring key was given")
        return cls.decrypt(document, master_key=master_key)

    @classmethod
    def decrypt(cls, document: bytes, *, master_key: bytes) -> Vault:
        """Read a vault file's bytes with a master key already known (a reload)."""
        header = _parse_document(document)
        vault_id = header["vault_id"]
        try:
            plaintext = AESGCM(master_key).decrypt(
                _unb64(header.get("nonce")), _unb64(header.get("data")), _data_aad(vault_id)
            )
        except (InvalidTag, ValueError) as exc:  # ValueError: a nonce of an impossible size
            raise VaultCorruptError(
                "the vault's contents do not authenticate (damaged or altered)"
            ) from exc
        try:
            body = json.loads(plaintext)
            entries = [_entry_from_json(raw) for raw in body["entries"]]
            revision = int(body["revision"])
            removed = {str(k): float(v) for k, v in body.get("removed", {}).items()}
            sync = dict(body.get("sync", {}))
        except (ValueError, KeyError, TypeError, AttributeError, TokenError, OtpauthError) as exc:
            raise VaultCorruptError("the vault's contents are not readable") from exc
        return cls(
            vault_id=vault_id,
            master_key=master_key,
            slots=[_parse_slot(raw) for raw in header["slots"]],
            entries=entries,
            revision=revision,
            removed=removed,
            sync=sync,
        )

    # slots ---------------------------------------------------------------------------------

    def slot_types(self) -> list[str]:
        return [slot.type for slot in self.slots]

    def set_password(self, password: str, *, kdf: KdfParams | None = None) -> None:
        """Wrap the master key under a new password, replacing the password slot."""
        _check_password(password)
        params = kdf or self._current_kdf() or KdfParams()
        params.check_creatable()
        description = {
            "name": "argon2id",
            "version": 19,
            "time_cost": params.time_cost,
            "memory_cost": params.memory_cost,
            "parallelism": params.parallelism,
            "salt": _b64(os.urandom(16)),
        }
        self._replace_slot("password", description, _password_key(password)(description))

    def new_recovery_key(self) -> str:
        """A fresh recovery key replacing the old one (which stops working); shown once."""
        raw = backup_codes.generate(RECOVERY_KEY_LENGTH)
        description = {"name": "hkdf-sha256", "salt": _b64(os.urandom(16))}
        self._replace_slot("recovery", description, _recovery_slot_key(raw)(description))
        return format_recovery_key(raw)

    def add_keyring_slot(self) -> bytes:
        """A keyring slot; returns the random key the caller stores in the OS keyring."""
        key = os.urandom(_KEY)
        self._replace_slot("keyring", {"name": "keyring", "service": KEYRING_SERVICE}, key)
        return key

    def remove_slot(self, slot_type: str) -> None:
        if slot_type == "password":
            raise VaultError("the password slot cannot be removed")
        self.slots = [slot for slot in self.slots if slot.type != slot_type]

    def _current_kdf(self) -> KdfParams | None:
        for slot in self.slots:
            if slot.type == "password":
                return _kdf_params(slot.kdf)
        return None

    def _replace_slot(self, slot_type: str, description: dict[str, Any], slot_key: bytes) -> None:
        slot = _Slot(
            id=str(uuid.uuid4()),
            type=slot_type,
            kdf=description,
            nonce=os.urandom(_NONCE),
            wrapped_key=b"",
        )
        wrapped = AESGCM(slot_key).encrypt(slot.nonce, self.master_key, slot.aad(self.vault_id))
        self.slots = [s for s in self.slots if s.type != slot_type]
        self.slots.append(replace(slot, wrapped_key=wrapped))

    # entries -------------------------------------------------------------------------------

    def add(self, token: Token, *, now: float) -> Entry:
        entry = Entry(id=str(uuid.uuid4()), token=token, created_at=now, updated_at=now)
        self.entries.append(entry)
        return entry

    def duplicate_of(self, token: Token) -> Entry | None:
        """The entry that already holds this token's secret, if any."""
        return next((e for e in self.entries if e.token.same_secret(token)), None)

    def replace_token(self, entry_id: str, token: Token, *, now: float) -> Entry:
        for index, entry in enumerate(self.entries):
            if entry.id == entry_id:
                updated = replace(entry, token=token, updated_at=now)
                self.entries[index] = updated
                return updated
        raise VaultError("that entry is no longer in the vault")

    def remove(self, entry_id: str, *, now: float) -> None:
        before = len(self.entries)
        self.entries = [e for e in self.entries if e.id != entry_id]
        if len(self.entries) == before:
            raise VaultError("that entry is no longer in the vault")
        self.removed[entry_id] = now  # so a merge with an older copy does not bring it back

    def merge(self, other: Vault) -> int:
        """Take in another copy of this vault (a backup pushed from another computer): entries
        from either side, the later edit of an entry edited on both, the higher HOTP counter,
        removals from either side. Returns how many entries changed here."""
        if other.vault_id != self.vault_id:
            raise VaultError("that backup is of another vault")
        removed = dict(self.removed)
        for entry_id, when in other.removed.items():
            removed[entry_id] = max(when, removed.get(entry_id, when))
        mine = {e.id: e for e in self.entries}
        merged: dict[str, Entry] = dict(mine)
        for theirs in other.entries:
            ours = mine.get(theirs.id)
            if ours is None:
                merged[theirs.id] = theirs
                continue
            newer = theirs if theirs.updated_at > ours.updated_at else ours
            if newer.token.kind is TokenKind.HOTP:
                counter = max(ours.token.counter, theirs.token.counter)
                newer = replace(newer, token=replace(newer.token, counter=counter))
            merged[theirs.id] = newer
        kept = [e for e in merged.values() if removed.get(e.id, float("-inf")) < e.updated_at]
        order = {e.id: i for i, e in enumerate(self.entries)}
        kept.sort(key=lambda e: (order.get(e.id, len(order)), e.created_at))
        changed = sum(1 for e in kept if mine.get(e.id) != e) + sum(
            1 for e in self.entries if e.id not in {k.id for k in kept}
        )
        self.entries, self.removed = kept, removed
        return changed

    def entry(self, entry_id: str) -> Entry | None:
        return next((e for e in self.entries if e.id == entry_id), None)

    # serialisation -------------------------------------------------------------------------

    def to_document(self) -> bytes:
        """The file's bytes, with the entries encrypted under a fresh nonce."""
        self.revision += 1
        body = {
            "revision": self.revision,
            "entries": [_entry_to_json(e) for e in self.entries],
            "removed": self.removed,
            "sync": self.sync,
        }
        nonce = os.urandom(_NONCE)
        data = AESGCM(self.master_key).encrypt(
            nonce, json.dumps(body, separators=(",", ":")).encode(), _data_aad(self.vault_id)
        )
        document = {
            "format": FORMAT,
            "version": VERSION,
            "vault_id": self.vault_id,
            "cipher": "AES-256-GCM",
            "slots": [slot.as_json() for slot in self.slots],
            "nonce": _b64(nonce),
            "data": _b64(data),
        }
        return (json.dumps(document, indent=2) + "\n").encode()


@dataclass(frozen=True, kw_only=True)
class Header:
    """What a vault file says about itself without being unlocked."""

    vault_id: str
    slot_types: tuple[str, ...]


def read_header(document: bytes) -> Header:
    header = _parse_document(document)
    return Header(
        vault_id=header["vault_id"],
        slot_types=tuple(_parse_slot(raw).type for raw in header["slots"]),
    )


# recovery keys --------------------------------------------------------------------------------


def format_recovery_key(raw: str) -> str:
    return "-".join(raw[i : i + 4] for i in range(0, len(raw), 4))


def normalize_recovery_key(text: str) -> str:
    raw = backup_codes.normalize(text, length=RECOVERY_KEY_LENGTH)
    if raw is None:
        raise WrongCredentialError("that is not a recovery key (32 letters and digits)")
    return raw


def new_recovery_key() -> str:
    return format_recovery_key(backup_codes.generate(RECOVERY_KEY_LENGTH))


# helpers ------------------------------------------------------------------------------------


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _unb64(text: object) -> bytes:
    if not isinstance(text, str):
        raise VaultCorruptError("the vault file is damaged (a field is not text)")
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise VaultCorruptError("the vault file is damaged (bad base64)") from exc


def _data_aad(vault_id: str) -> bytes:
    return f"{FORMAT}/{VERSION}/data/{vault_id}".encode()


def _check_password(password: str) -> None:
    if not password:
        raise VaultError("the vault password must not be empty")


def _parse_document(document: bytes) -> dict[str, Any]:
    try:
        header = json.loads(document)
    except (ValueError, UnicodeDecodeError) as exc:
        raise VaultCorruptError("this file is not a Sparekey vault (not JSON)") from exc
    if not isinstance(header, dict) or header.get("format") != FORMAT:
        raise VaultCorruptError("this file is not a Sparekey vault")
    if header.get("version") != VERSION:
        raise VaultCorruptError(
            f"vault version {header.get('version')!r} is not one this app reads"
        )
    if not isinstance(header.get("vault_id"), str) or not isinstance(header.get("slots"), list):
        raise VaultCorruptError("the vault file is damaged (no id or slots)")
    return header


def _parse_slot(raw: object) -> _Slot:
    if not isinstance(raw, dict) or not isinstance(raw.get("kdf"), dict):
        raise VaultCorruptError("the vault file is damaged (a slot is malformed)")
    slot_id, slot_type = raw.get("id"), raw.get("type")
    if not isinstance(slot_id, str) or not isinstance(slot_type, str):
        raise VaultCorruptError("the vault file is damaged (a slot is malformed)")
    return _Slot(
        id=slot_id,
        type=slot_type,
        kdf=raw["kdf"],
        nonce=_unb64(raw.get("nonce")),
        wrapped_key=_unb64(raw.get("wrapped_key")),
    )


def _kdf_params(description: Mapping[str, Any]) -> KdfParams:
    try:
        params = KdfParams(
            time_cost=int(description["time_cost"]),
            memory_cost=int(description["memory_cost"]),
            parallelism=int(description["parallelism"]),
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise VaultCorruptError("the vault's Argon2id parameters are missing") from exc
    params.check_readable()
    return params


def _password_key(password: str) -> Callable[[Mapping[str, Any]], bytes]:
    def derive(description: Mapping[str, Any]) -> bytes:
        if description.get("name") != "argon2id" or description.get("version") != 19:
            raise VaultCorruptError(
                "the password slot uses a key derivation this app does not know"
            )
        params = _kdf_params(description)
        try:
            return hash_secret_raw(
                password.encode("utf-8"),
                _unb64(description.get("salt")),
                time_cost=params.time_cost,
                memory_cost=params.memory_cost,
                parallelism=params.parallelism,
                hash_len=_KEY,
                type=Type.ID,
                version=19,
            )
        except HashingError as exc:
            raise VaultCorruptError("the password slot's parameters are not usable") from exc

    return derive


def _recovery_slot_key(raw: str) -> Callable[[Mapping[str, Any]], bytes]:
    def derive(description: Mapping[str, Any]) -> bytes:
        return HKDF(
            algorithm=hashes.SHA256(),
            length=_KEY,
            salt=_unb64(description.get("salt")),
            info=b"sparekey-authenticator recovery slot",
        ).derive(raw.encode("ascii"))

    return derive


def _open_slots(
    slots: Iterable[_Slot],
    slot_type: str,
    vault_id: str,
    derive: Callable[[Mapping[str, Any]], bytes],
) -> bytes:
    candidates = [slot for slot in slots if slot.type == slot_type]
    if not candidates:
        raise WrongCredentialError(f"this vault has no {slot_type} slot")
    for slot in candidates:
        try:
            key = AESGCM(derive(slot.kdf)).decrypt(slot.nonce, slot.wrapped_key, slot.aad(vault_id))
        except (InvalidTag, ValueError):
            continue
        if len(key) == _KEY:
            return key
    raise WrongCredentialError(f"the {_CREDENTIAL_NAMES[slot_type]} does not open this vault")


_CREDENTIAL_NAMES = {"password": "password", "recovery": "recovery key", "keyring": "keyring key"}


def _entry_to_json(entry: Entry) -> dict[str, Any]:
    token = entry.token
    return {
        "id": entry.id,
        "kind": token.kind.value,
        "issuer": token.issuer,
        "account": token.account,
        "secret": b32encode(token.secret),
        "algorithm": token.algorithm.value,
        "digits": token.digits,
        "period": token.period,
        "counter": token.counter,
        "note": token.note,
        "created_at": entry.created_at,
        "updated_at": entry.updated_at,
    }


def _entry_from_json(raw: Mapping[str, Any]) -> Entry:
    token = Token(
        kind=TokenKind(raw["kind"]),
        secret=b32decode(raw["secret"]),
        issuer=str(raw["issuer"]),
        account=str(raw["account"]),
        algorithm=HashAlgorithm(raw["algorithm"]),
        digits=int(raw["digits"]),
        period=int(raw["period"]),
        counter=int(raw["counter"]),
        note=str(raw.get("note", "")),
    )
    return Entry(
        id=str(raw["id"]),
        token=token,
        created_at=float(raw["created_at"]),
        updated_at=float(raw["updated_at"]),
    )
