"""Ente Auth exports: plain text (``ente``) and the encrypted JSON (``ente-encrypted``).

The plain export is one ``otpauth://`` URI a line with Ente's ``codeDisplay`` parameter, read by
:mod:`.otpauth_list`. The encrypted export (Ente's ``docs/docs/auth/migration/export.md`` and
``cli/pkg/authenticator/decrypt.go``) is::

    {"version": 1, "kdfParams": {"memLimit": <bytes>, "opsLimit": <n>, "salt": "<b64, 16 B>"},
     "encryptedData": "<b64>", "encryptionNonce": "<b64, 24 B>"}

The key is Argon2id v1.3 (libsodium ``crypto_pwhash``, 32 bytes) of the password; the data is one
``crypto_secretstream_xchacha20poly1305`` message whose 24-byte header is ``encryptionNonce`` (it
is not an AEAD nonce), with tag MESSAGE or FINAL; the plaintext is the plain export. Parameters
beyond what Ente writes (memory over 1 GiB, more than 20 passes, a salt not of 16 bytes) are
refused before any key is derived.

Two format names: ``ente`` (:data:`NAME`; :func:`sniff` and :func:`parse` take either kind,
opening an encrypted export with the password) and ``ente-encrypted`` (:data:`ENCRYPTED_NAME`,
:func:`sniff_encrypted`, :func:`parse_encrypted`); :data:`PARSERS` maps both names to parsers.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Callable
from dataclasses import dataclass

import nacl.bindings
import nacl.exceptions
from nacl.pwhash import argon2id

from sparekey.protocols.formats import (
    FormatError,
    ImportResult,
    PasswordRequiredError,
    WrongPasswordError,
)
from sparekey.protocols.formats.otpauth_list import decode_text, load_json, parse_text
from sparekey.protocols.formats.otpauth_list import sniff as sniff_otpauth

__all__ = [
    "ENCRYPTED_NAME",
    "MAX_MEM_LIMIT",
    "MAX_OPS_LIMIT",
    "NAME",
    "PARSERS",
    "EncryptedExport",
    "KdfParams",
    "decrypt",
    "decrypt_stream",
    "derive_key",
    "parse",
    "parse_encrypted",
    "read_encrypted",
    "sniff",
    "sniff_encrypted",
]

NAME = "ente"
ENCRYPTED_NAME = "ente-encrypted"

MAX_MEM_LIMIT = 1 << 30
MAX_OPS_LIMIT = 20
SALT_BYTES = 16
KEY_BYTES = 32
HEADER_BYTES = nacl.bindings.crypto_secretstream_xchacha20poly1305_HEADERBYTES
_TAGS = (
    nacl.bindings.crypto_secretstream_xchacha20poly1305_TAG_MESSAGE,
    nacl.bindings.crypto_secretstream_xchacha20poly1305_TAG_FINAL,
)
_SNIFF_BYTES = 64 * 1024
_BASE64 = re.compile(r"[A-Za-z0-9+/]*={0,2}")
_WHAT = "this Ente export"


@dataclass(frozen=True, kw_only=True)
class KdfParams:
    mem_limit: int
    ops_limit: int
    salt: bytes


@dataclass(frozen=True, kw_only=True)
class EncryptedExport:
    kdf: KdfParams
    header: bytes
    ciphertext: bytes


def _b64(value: object, *, field: str) -> bytes:
    if not isinstance(value, str):
        raise FormatError(f"{_WHAT} has no {field} text")
    text = "".join(value.split()).rstrip("=")
    text += "=" * (-len(text) % 4)
    if not _BASE64.fullmatch(text):
        raise FormatError(f"the {field} of {_WHAT} is not valid Base64")
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise FormatError(f"the {field} of {_WHAT} is not valid Base64") from exc


def _whole(value: object, *, field: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise FormatError(f"the {field} of {_WHAT} is not a whole number")
    return value


def read_encrypted(data: bytes) -> EncryptedExport:
    """The parts of an encrypted Ente export, checked (including the KDF limits) but not opened."""
    document = load_json(data, what=_WHAT)
    if not isinstance(document, dict) or "encryptedData" not in document:
        raise FormatError("this is not an encrypted Ente export (no encryptedData)")
    version = document.get("version")
    if version != 1 or isinstance(version, bool):
        raise FormatError(f"{_WHAT} has a version this program does not know (only 1)")
    params = document.get("kdfParams")
    if not isinstance(params, dict):
        raise FormatError(f"{_WHAT} has no kdfParams")
    mem_limit = _whole(params.get("memLimit"), field="memLimit")
    ops_limit = _whole(params.get("opsLimit"), field="opsLimit")
    if not argon2id.MEMLIMIT_MIN <= mem_limit <= MAX_MEM_LIMIT:
        raise FormatError(
            f"the memLimit of {_WHAT} is out of range ({argon2id.MEMLIMIT_MIN} bytes to 1 GiB)"
        )
    if not argon2id.OPSLIMIT_MIN <= ops_limit <= MAX_OPS_LIMIT:
        raise FormatError(f"the opsLimit of {_WHAT} is out of range (1 to {MAX_OPS_LIMIT})")
    salt = _b64(params.get("salt"), field="salt")
    if len(salt) != SALT_BYTES:
        raise FormatError(f"the salt of {_WHAT} is not {SALT_BYTES} bytes")
    header = _b64(document.get("encryptionNonce"), field="encryptionNonce")
    if len(header) != HEADER_BYTES:
        raise FormatError(f"the encryptionNonce of {_WHAT} is not {HEADER_BYTES} bytes")
    return EncryptedExport(
        kdf=KdfParams(mem_limit=mem_limit, ops_limit=ops_limit, salt=salt),
        header=header,
        ciphertext=_b64(document.get("encryptedData"), field="encryptedData"),
    )


def derive_key(*, password: str, kdf: KdfParams) -> bytes:
    """Argon2id (libsodium ``crypto_pwhash``, 32 bytes) of ``password`` with Ente's parameters."""
    try:
        return argon2id.kdf(
            KEY_BYTES,
            password.encode("utf-8"),
            kdf.salt,
            opslimit=kdf.ops_limit,
            memlimit=kdf.mem_limit,
        )
    except (nacl.exceptions.CryptoError, UnicodeEncodeError) as exc:
        raise FormatError(f"cannot derive the key of {_WHAT} with its parameters") from exc


def decrypt_stream(*, key: bytes, header: bytes, ciphertext: bytes) -> bytes:
    """The one message of a libsodium secretstream (XChaCha20-Poly1305); :class:`WrongPasswordError`
    if it does not authenticate under ``key``."""
    if len(key) != KEY_BYTES or len(header) != HEADER_BYTES:
        raise FormatError("the key or the header of the encrypted data has the wrong length")
    state = nacl.bindings.crypto_secretstream_xchacha20poly1305_state()
    try:
        nacl.bindings.crypto_secretstream_xchacha20poly1305_init_pull(state, header, key)
        message, tag = nacl.bindings.crypto_secretstream_xchacha20poly1305_pull(
            state, ciphertext, None
        )
    except (nacl.exceptions.CryptoError, ValueError, TypeError) as exc:
        raise WrongPasswordError(f"the password does not open {_WHAT} (or it is damaged)") from exc
    if tag not in _TAGS:
        raise FormatError(f"{_WHAT} holds more than one encrypted message")
    return bytes(message)


def decrypt(data: bytes, *, password: str | None) -> str:
    """The plain export text inside an encrypted Ente export."""
    export = read_encrypted(data)
    if password is None:
        raise PasswordRequiredError(f"{_WHAT} is encrypted: give its password")
    key = derive_key(password=password, kdf=export.kdf)
    plain = decrypt_stream(key=key, header=export.header, ciphertext=export.ciphertext)
    return decode_text(plain, what="the decrypted Ente export")


def sniff_encrypted(data: bytes) -> bool:
    """Whether ``data`` looks like an encrypted Ente export (JSON with kdfParams and
    encryptedData)."""
    head = data[:_SNIFF_BYTES].lstrip(b"\xef\xbb\xbf \t\r\n")
    return head.startswith(b"{") and b'"kdfParams"' in head and b'"encryptedData"' in head


def parse_encrypted(data: bytes, *, password: str | None = None) -> ImportResult:
    """The accounts of an encrypted Ente export (:class:`PasswordRequiredError` without a password,
    :class:`WrongPasswordError` if it does not open it)."""
    text = decrypt(data, password=password)
    return parse_text(text, format_name=ENCRYPTED_NAME, what=_WHAT)


def sniff(data: bytes) -> bool:
    """Whether ``data`` is an Ente export: encrypted, or a text of otpauth URIs with Ente's
    ``codeDisplay`` parameter (other otpauth texts are left to the ``otpauth`` format)."""
    if sniff_encrypted(data):
        return True
    return sniff_otpauth(data) and b"codeDisplay=" in data[:_SNIFF_BYTES]


def parse(data: bytes, *, password: str | None = None) -> ImportResult:
    """The accounts of an Ente export, plain or encrypted (then opened with ``password``)."""
    if sniff_encrypted(data):
        return parse_encrypted(data, password=password)
    return parse_text(decode_text(data, what=_WHAT), format_name=NAME, what=_WHAT)


PARSERS: dict[str, Callable[..., ImportResult]] = {NAME: parse, ENCRYPTED_NAME: parse_encrypted}
