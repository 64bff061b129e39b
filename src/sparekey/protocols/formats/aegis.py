"""Aegis Authenticator vaults and exports, plain and encrypted: reading and writing.

The format is Aegis' ``docs/vault.md`` (beemdevelopment/Aegis)::

    {"version": 1,
     "header": {"slots": [...] | null, "params": {"nonce": hex, "tag": hex} | null},
     "db": {...} (plain) | "<base64 of the AES-256-GCM ciphertext>" (encrypted)}

An encrypted vault has a random 256-bit master key, wrapped by each slot with AES-GCM (``key``,
``key_params.nonce``, ``key_params.tag``, all hex). Password slots (type 1) derive the slot key
with scrypt(UTF-8 password, ``salt``, ``n``, ``r``, ``p``, 32 bytes); other slot types (raw,
biometric) need the phone that made them. The database is AES-256-GCM under the master key with
``header.params`` as nonce and tag, no associated data. Scrypt parameters beyond what Aegis uses
(it writes N=2**15, r=8, p=1) by more than a margin are refused before any key is derived.

The database (versions 1 to 3) holds ``entries``: ``type`` (totp, hotp, steam; motp and yandex
are reported as skipped), ``name`` (the account), ``issuer``, ``note`` and ``info`` {``secret``
(Base32), ``algo``, ``digits``, ``period`` or ``counter``}. Groups and icons are not read.

:func:`encode` writes a vault Aegis can import: version 1, database version 3, and, with a password,
one password slot (scrypt N=32768, r=8, p=1 by default) over a random master key.
"""

from __future__ import annotations

import base64
import binascii
import json
import os
import uuid
from collections.abc import Iterable
from dataclasses import dataclass

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.scrypt import Scrypt

from sparekey.protocols.formats import (
    FormatError,
    ImportResult,
    PasswordRequiredError,
    Skipped,
    WrongPasswordError,
    _fields,
)
from sparekey.protocols.formats.otpauth_list import load_json
from sparekey.protocols.otpauth import b32encode
from sparekey.protocols.tokens import Token, TokenKind

__all__ = [
    "MAX_SCRYPT_MEMORY",
    "MAX_SCRYPT_N",
    "MAX_SCRYPT_WORK",
    "NAME",
    "check_scrypt_params",
    "encode",
    "parse",
    "sniff",
]

NAME = "aegis"

MAX_SCRYPT_N = 1 << 20
MAX_SCRYPT_MEMORY = 1 << 28  # scrypt needs 128 * r * N bytes; Aegis' own parameters need 32 MiB
MAX_SCRYPT_WORK = 1 << 23  # N * r * p; Aegis' own parameters make 2**18
VAULT_VERSION = 1
DB_VERSIONS = range(1, 4)
KEY_BYTES = 32
NONCE_BYTES = 12
TAG_BYTES = 16
SALT_BYTES = 32
PASSWORD_SLOT = 1

_SNIFF_BYTES = 64 * 1024
_WHAT = "this Aegis vault"
_TYPES = {"totp": TokenKind.TOTP, "hotp": TokenKind.HOTP, "steam": TokenKind.STEAM}
_UNSUPPORTED_TYPES = {"motp": "mOTP", "yandex": "Yandex"}


# --- reading --------------------------------------------------------------------------------


def sniff(data: bytes) -> bool:
    """Whether ``data`` looks like an Aegis vault: a JSON object with ``header`` and ``db``."""
    if not data[:_SNIFF_BYTES].lstrip(b"\xef\xbb\xbf \t\r\n").startswith(b"{"):
        return False
    try:
        document = load_json(data, what=_WHAT)
    except FormatError:
        return False
    return isinstance(document, dict) and "header" in document and "db" in document


def parse(data: bytes, *, password: str | None = None) -> ImportResult:
    """Every entry of an Aegis vault or export; ``password`` opens an encrypted one."""
    document = _fields.as_object(load_json(data, what=_WHAT), f"{_WHAT} is not a JSON object")
    version = document.get("version")
    if not _fields.is_int(version) or version != VAULT_VERSION:
        raise FormatError(f"Aegis vault version {_fields.show(version)} is not supported (only 1)")
    db = document.get("db")
    if isinstance(db, dict):
        content: dict[str, object] = db
    elif isinstance(db, str):
        header = _fields.as_object(document.get("header"), "the Aegis vault has no header")
        content = _decrypt(header, db, password=password)
    else:
        raise FormatError("not an Aegis vault: db is neither an object nor encrypted text")
    return _read_db(content)


def check_scrypt_params(*, n: int, r: int, p: int) -> None:
    """Refuse scrypt parameters that would take far more memory or time than Aegis ever asks."""
    if not 2 <= n <= MAX_SCRYPT_N or n & (n - 1):
        raise FormatError(f"scrypt N must be a power of two from 2 to 2**20, not {_fields.show(n)}")
    if r < 1 or p < 1:
        raise FormatError("scrypt r and p must be at least 1")
    if 128 * r * n > MAX_SCRYPT_MEMORY or n * r * p > MAX_SCRYPT_WORK:
        raise FormatError(
            f"the scrypt parameters (N={_fields.show(n)}, r={_fields.show(r)}, "
            f"p={_fields.show(p)}) ask for far more memory or time than an Aegis vault uses"
        )


@dataclass(frozen=True, kw_only=True)
class _Sealed:
    """AES-GCM ciphertext with its nonce and tag kept apart, as Aegis stores them."""

    ciphertext: bytes
    nonce: bytes
    tag: bytes

    def open(self, key: bytes) -> bytes:
        """The plaintext, or :class:`InvalidTag` when the key or the data is wrong."""
        return AESGCM(key).decrypt(self.nonce, self.ciphertext + self.tag, None)


@dataclass(frozen=True, kw_only=True)
class _PasswordSlot:
    salt: bytes
    n: int
    r: int
    p: int
    wrapped: _Sealed


def _decrypt(header: dict[str, object], db: str, *, password: str | None) -> dict[str, object]:
    """The database of an encrypted vault. Every field is checked before any key is derived."""
    slots = header.get("slots")
    if not isinstance(slots, list):
        raise FormatError("the encrypted Aegis vault has no key slots")
    params = _fields.as_object(
        header.get("params"), "the encrypted Aegis vault has no nonce and tag"
    )
    sealed_db = _Sealed(
        ciphertext=_base64(db, what="the encrypted database"),
        nonce=_hex(params, "nonce", size=NONCE_BYTES, what="the database"),
        tag=_hex(params, "tag", size=TAG_BYTES, what="the database"),
    )
    password_slots = [
        _password_slot(slot, number=number)
        for number, slot in enumerate(slots, start=1)
        if isinstance(slot, dict)
        and _fields.is_int(slot.get("type"))
        and slot["type"] == PASSWORD_SLOT
    ]
    if not password_slots:
        raise FormatError(
            "this Aegis vault has no password slot: only the phone that made it can open it"
        )
    if password is None:
        raise PasswordRequiredError("this Aegis vault is encrypted: its password is needed")
    master_key = _unlock(password_slots, password=password)
    try:
        plaintext = sealed_db.open(master_key)
    except InvalidTag:
        raise FormatError(
            "the Aegis vault is damaged: the password is right but the database fails its check"
        ) from None
    return _fields.as_object(load_json(plaintext, what="the decrypted Aegis database"), _NOT_A_DB)


def _password_slot(slot: dict[str, object], *, number: int) -> _PasswordSlot:
    where = f"key slot {number}"
    n, r, p = (_fields.whole(slot, name, where=where) for name in ("n", "r", "p"))
    check_scrypt_params(n=n, r=r, p=p)
    key_params = _fields.as_object(slot.get("key_params"), f"{where} has no key_params")
    return _PasswordSlot(
        salt=_hex(slot, "salt", size=None, what=where),
        n=n,
        r=r,
        p=p,
        wrapped=_Sealed(
            ciphertext=_hex(slot, "key", size=KEY_BYTES, what=where),
            nonce=_hex(key_params, "nonce", size=NONCE_BYTES, what=where),
            tag=_hex(key_params, "tag", size=TAG_BYTES, what=where),
        ),
    )


def _unlock(slots: list[_PasswordSlot], *, password: str) -> bytes:
    """The master key from the first password slot the password opens."""
    secret = password.encode("utf-8", "surrogatepass")
    for slot in slots:
        slot_key = _scrypt(secret, salt=slot.salt, n=slot.n, r=slot.r, p=slot.p)
        try:
            return slot.wrapped.open(slot_key)
        except InvalidTag:
            continue
    raise WrongPasswordError("the password does not open this Aegis vault")


def _scrypt(password: bytes, *, salt: bytes, n: int, r: int, p: int) -> bytes:
    try:
        return Scrypt(salt=salt, length=KEY_BYTES, n=n, r=r, p=p).derive(password)
    except (MemoryError, ValueError) as exc:  # OpenSSL refuses some (N, r) pairs as "memory"
        raise FormatError(f"scrypt cannot run with N={n}, r={r}, p={p}") from exc


_NOT_A_DB = "the Aegis database is not a JSON object"


def _read_db(content: dict[str, object]) -> ImportResult:
    version = content.get("version")
    if not _fields.is_int(version) or version not in DB_VERSIONS:
        raise FormatError(
            f"Aegis database version {_fields.show(version)} is not supported "
            f"(1 to {DB_VERSIONS[-1]})"
        )
    entries = content.get("entries")
    if not isinstance(entries, list):
        raise FormatError("the Aegis database has no list of entries")
    return _fields.collect(
        (_entry(raw, where=f"entry {number}") for number, raw in enumerate(entries, start=1)),
        format_name=NAME,
        what=_WHAT,
    )


def _entry(raw: object, *, where: str) -> Token | Skipped:
    entry = _fields.as_object(raw, f"{where} is not a JSON object")
    type_name = _fields.text(entry, "type", where=where).lower()
    issuer = _fields.text(entry, "issuer", where=where)
    account = _fields.text(entry, "name", where=where)
    label = _fields.label(issuer, account)
    if type_name in _UNSUPPORTED_TYPES:
        return Skipped(
            label=label, reason=f"{_UNSUPPORTED_TYPES[type_name]} tokens are not supported"
        )
    kind = _TYPES.get(type_name)
    if kind is None:
        return Skipped(label=label, reason=f"unknown token type {_fields.show(type_name)}")
    info = _fields.as_object(entry.get("info"), f"{where} has no info")
    return _fields.make_token(
        where=where,
        kind=kind,
        algorithm_name=_fields.text(info, "algo", where=where),
        secret=_fields.text(info, "secret", where=where),
        issuer=issuer,
        account=account,
        digits=_fields.whole(info, "digits", where=where, default=6),
        period=_fields.whole(info, "period", where=where, default=30),
        counter=_fields.whole(info, "counter", where=where, default=0)
        if kind is TokenKind.HOTP
        else 0,
        note=_fields.text(entry, "note", where=where),
    )


# --- writing --------------------------------------------------------------------------------


def encode(
    tokens: Iterable[Token],
    *,
    password: str | None,
    scrypt_n: int = 32768,
    scrypt_r: int = 8,
    scrypt_p: int = 1,
) -> bytes:
    """An Aegis vault (version 1, database version 3) of ``tokens``: encrypted under a password
    slot when ``password`` is given, plain when it is None. Keys, nonces and UUIDs are random."""
    db = {"version": 3, "entries": [_encode_entry(token) for token in tokens], "groups": []}
    if password is None:
        vault: dict[str, object] = {
            "version": VAULT_VERSION,
            "header": {"slots": None, "params": None},
            "db": db,
        }
    else:
        check_scrypt_params(n=scrypt_n, r=scrypt_r, p=scrypt_p)
        master_key = AESGCM.generate_key(bit_length=256)
        salt = os.urandom(SALT_BYTES)
        slot_key = _scrypt(
            password.encode("utf-8", "surrogatepass"), salt=salt, n=scrypt_n, r=scrypt_r, p=scrypt_p
        )
        wrapped = _seal(slot_key, master_key)
        sealed_db = _seal(master_key, json.dumps(db, ensure_ascii=False).encode())
        slot = {
            "type": PASSWORD_SLOT,
            "uuid": str(uuid.uuid4()),
            "key": wrapped.ciphertext.hex(),
            "key_params": {"nonce": wrapped.nonce.hex(), "tag": wrapped.tag.hex()},
            "n": scrypt_n,
            "r": scrypt_r,
            "p": scrypt_p,
            "salt": salt.hex(),
            "repaired": True,
            "is_backup": False,
        }
        vault = {
            "version": VAULT_VERSION,
            "header": {
                "slots": [slot],
                "params": {"nonce": sealed_db.nonce.hex(), "tag": sealed_db.tag.hex()},
            },
            "db": base64.b64encode(sealed_db.ciphertext).decode("ascii"),
        }
    return json.dumps(vault, indent=4, ensure_ascii=False).encode("utf-8")


def _seal(key: bytes, plaintext: bytes) -> _Sealed:
    nonce = os.urandom(NONCE_BYTES)
    sealed = AESGCM(key).encrypt(nonce, plaintext, None)
    return _Sealed(ciphertext=sealed[:-TAG_BYTES], nonce=nonce, tag=sealed[-TAG_BYTES:])


def _encode_entry(token: Token) -> dict[str, object]:
    info: dict[str, object] = {
        "secret": b32encode(token.secret),
        "algo": token.algorithm.value,
        "digits": token.digits,
    }
    if token.kind is TokenKind.HOTP:
        info["counter"] = token.counter
    else:
        info["period"] = token.period
    return {
        "type": token.kind.value,
        "uuid": str(uuid.uuid4()),
        "name": token.account,
        "issuer": token.issuer,
        "note": token.note,
        "favorite": False,
        "icon": None,
        "icon_mime": None,
        "icon_hash": None,
        "info": info,
        "groups": [],
    }


# --- fields ---------------------------------------------------------------------------------


def _hex(fields: dict[str, object], key: str, *, size: int | None, what: str) -> bytes:
    value = fields.get(key)
    try:
        raw = bytes.fromhex(value) if isinstance(value, str) else None
    except ValueError:
        raw = None
    if raw is None or (size is not None and len(raw) != size):
        length = f" of {size} bytes" if size is not None else ""
        raise FormatError(f"{what}: {key} must be hexadecimal{length}")
    return raw


def _base64(value: str, *, what: str) -> bytes:
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise FormatError(f"{what} is not valid base64") from None
