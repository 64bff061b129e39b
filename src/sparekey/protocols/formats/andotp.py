"""andOTP backups: the plain JSON list and the two encrypted layouts (``.json.aes``).

The format is what andOTP writes (andOTP ``Tools/BackupHelper``, ``Utilities/EncryptionHelper``;
read the same way by Aegis' ``AndOtpImporter`` and asmw/andOTP-decrypt):

* plain: a JSON array of ``{secret (Base32, padded), issuer, label, digits, type (TOTP, HOTP,
  STEAM, MOTP), algorithm, period | counter, thumbnail, last_used, tags, ...}``. Exports before
  andOTP had an ``issuer`` field name the account ``"Issuer - Issuer:account"`` or
  ``"Issuer:account"`` in ``label`` alone; both are split.
* encrypted, current: ``iterations (uint32 big-endian) | salt (12) | iv (12) | ciphertext | tag
  (16)``, AES-256-GCM under PBKDF2-HMAC-SHA1(UTF-8 password, salt, iterations, 32 bytes). andOTP
  picks 140,000 to 160,000 iterations; more than 10,000,000 is taken as "not this layout", so a
  wrong file cannot stall the import.
* encrypted, old: ``iv (12) | ciphertext | tag (16)``, the key SHA-256(UTF-8 password).

Nothing marks a file as encrypted: :func:`sniff` recognises only the plain list, and
:func:`sniff_encrypted` is a last-resort guess (binary, and long enough). :func:`parse` takes bytes
that are not JSON as encrypted and tries the current layout, then the old one.
"""

from __future__ import annotations

import hashlib
import struct

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.pbkdf2 import PBKDF2HMAC

from sparekey.protocols.formats import (
    FormatError,
    ImportResult,
    PasswordRequiredError,
    Skipped,
    WrongPasswordError,
    _fields,
)
from sparekey.protocols.formats.otpauth_list import load_json
from sparekey.protocols.tokens import Token, TokenKind

__all__ = ["MAX_ITERATIONS", "NAME", "parse", "sniff", "sniff_encrypted"]

NAME = "andotp"

MAX_ITERATIONS = 10_000_000
ITERATIONS_BYTES = 4
SALT_BYTES = 12
IV_BYTES = 12
TAG_BYTES = 16
KEY_BYTES = 32
NEW_HEADER_BYTES = ITERATIONS_BYTES + SALT_BYTES + IV_BYTES
MIN_ENCRYPTED_BYTES = NEW_HEADER_BYTES + TAG_BYTES

_SNIFF_BYTES = 64 * 1024
_WHAT = "this andOTP backup"
_TYPES = {"TOTP": TokenKind.TOTP, "HOTP": TokenKind.HOTP, "STEAM": TokenKind.STEAM}
_UNSUPPORTED_TYPES = {"MOTP": "mOTP"}
_JSON_START = (b"[", b"{")


def _looks_like_json(data: bytes) -> bool:
    return data[:_SNIFF_BYTES].lstrip(b"\xef\xbb\xbf \t\r\n")[:1] in _JSON_START


def sniff(data: bytes) -> bool:
    """Whether ``data`` is a plain andOTP backup: a JSON array of objects with a ``secret``."""
    if not _looks_like_json(data):
        return False
    try:
        document = load_json(data, what=_WHAT)
    except FormatError:
        return False
    return (
        isinstance(document, list)
        and bool(document)
        and all(isinstance(entry, dict) and "secret" in entry for entry in document)
    )


def sniff_encrypted(data: bytes) -> bool:
    """A guess for when nothing else matched: binary data (not UTF-8 text, so not JSON) long
    enough for the current encrypted layout. andOTP's encrypted backups carry no magic, so this is
    never certain."""
    return len(data) >= MIN_ENCRYPTED_BYTES and not _is_text(data)


def parse(data: bytes, *, password: str | None = None) -> ImportResult:
    """Every account of an andOTP backup: plain JSON, or encrypted (opened with ``password``).

    As andOTP and Aegis do, bytes that are not JSON are taken as encrypted; text that is not JSON
    is reported as a damaged plain backup."""
    try:
        document = load_json(data, what=_WHAT)
    except FormatError:
        if _is_text(data):
            raise
    else:
        return _read_entries(document)
    if len(data) < IV_BYTES + TAG_BYTES:
        raise FormatError(f"{_WHAT} is too short to be plain or encrypted")
    if password is None:
        raise PasswordRequiredError(
            "this looks like an encrypted andOTP backup (it is not JSON): its password is needed"
        )
    plaintext = _decrypt(data, password=password.encode("utf-8", "surrogatepass"))
    return _read_entries(load_json(plaintext, what="the decrypted andOTP backup"))


def _is_text(data: bytes) -> bool:
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def _decrypt(data: bytes, *, password: bytes) -> bytes:
    """The plaintext of either encrypted layout, trying the current one first."""
    if len(data) >= MIN_ENCRYPTED_BYTES:
        (iterations,) = struct.unpack_from(">I", data)
        if 1 <= iterations <= MAX_ITERATIONS:
            salt = data[ITERATIONS_BYTES : ITERATIONS_BYTES + SALT_BYTES]
            key = _pbkdf2(password, salt=salt, iterations=iterations)
            iv = data[ITERATIONS_BYTES + SALT_BYTES : NEW_HEADER_BYTES]
            try:
                return AESGCM(key).decrypt(iv, data[NEW_HEADER_BYTES:], None)
            except InvalidTag:
                pass
    old_key = hashlib.sha256(password).digest()
    try:
        return AESGCM(old_key).decrypt(data[:IV_BYTES], data[IV_BYTES:], None)
    except InvalidTag:
        raise WrongPasswordError("the password is wrong, or this is not an andOTP backup") from None


def _pbkdf2(password: bytes, *, salt: bytes, iterations: int) -> bytes:
    sha1 = hashes.SHA1()  # noqa: S303 - andOTP's choice, needed to read its backups
    kdf = PBKDF2HMAC(algorithm=sha1, length=KEY_BYTES, salt=salt, iterations=iterations)
    return kdf.derive(password)


def _read_entries(document: object) -> ImportResult:
    if not isinstance(document, list):
        raise FormatError(f"{_WHAT} is not a JSON list of accounts")
    return _fields.collect(
        (_entry(raw, where=f"entry {number}") for number, raw in enumerate(document, start=1)),
        format_name=NAME,
        what=_WHAT,
    )


def _split_label(label: str) -> tuple[str, str]:
    """``(issuer, account)`` from the label of an entry without an issuer: ``"Issuer - Issuer:acc"``
    (older andOTP exports repeat the issuer), ``"Issuer - acc"``, ``"Issuer:acc"`` or ``"acc"``.
    """
    if " - " in label:
        issuer, account = (part.strip() for part in label.split(" - ", 1))
        prefix = f"{issuer}:"
        return issuer, account[len(prefix) :].strip() if account.startswith(prefix) else account
    if ":" in label:
        issuer, account = (part.strip() for part in label.split(":", 1))
        return issuer, account
    return "", label.strip()


def _entry(raw: object, *, where: str) -> Token | Skipped:
    if not isinstance(raw, dict):
        raise FormatError(f"{where} is not a JSON object")
    label = _fields.text(raw, "label", where=where)
    issuer = _fields.text(raw, "issuer", where=where)
    account = label
    if not issuer:
        issuer, account = _split_label(label)
    shown = _fields.label(issuer, account)
    type_name = _fields.text(raw, "type", where=where).upper() or "TOTP"
    if type_name in _UNSUPPORTED_TYPES:
        return Skipped(
            label=shown, reason=f"{_UNSUPPORTED_TYPES[type_name]} tokens are not supported"
        )
    kind = _TYPES.get(type_name)
    if kind is None:
        return Skipped(label=shown, reason=f"unknown token type {_fields.show(type_name)}")
    return _fields.make_token(
        where=where,
        kind=kind,
        algorithm_name=_fields.text(raw, "algorithm", where=where),
        secret=_fields.text(raw, "secret", where=where),
        issuer=issuer,
        account=account,
        digits=_fields.whole(raw, "digits", where=where, default=6),
        period=_fields.whole(raw, "period", where=where, default=30),
        counter=_fields.whole(raw, "counter", where=where, default=0)
        if kind is TokenKind.HOTP
        else 0,
    )
