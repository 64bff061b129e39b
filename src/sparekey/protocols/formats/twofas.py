"""2FAS Authenticator backups (``.2fas``), plain and encrypted, schema versions 1 to 4.

The format is what 2FAS writes (twofas-android ``BackupContent``; Aegis' ``TwoFASImporter``)::

    {"schemaVersion": 1..4, "services": [...], "groups": [...], "appOrigin": ..., ...,
     "servicesEncrypted": "<b64(ciphertext || tag)>:<b64(salt)>:<b64(iv)>",   (encrypted only)
     "reference": "<the same layout>"}                                       (encrypted only)

An encrypted backup has ``services: []``; its services are AES-256-GCM (12-byte IV, 16-byte tag
appended) under PBKDF2-HMAC-SHA256(UTF-8 password, salt, 10,000 iterations, 32 bytes). The
``reference`` is a fixed text encrypted the same way (same salt, another IV): when it opens, the
password is right, so a services part that then fails its tag is damage, not a wrong password.

A service: ``name``, ``secret`` (Base32) and ``otp`` {``issuer``, ``account``, ``label``,
``digits``, ``period``, ``algorithm``, ``counter``, ``tokenType`` (TOTP, HOTP, STEAM)}. Schema 1
has no digits, period or algorithm and schema 2 no tokenType: what is missing takes TOTP's
defaults (SHA1, 6 digits, 30 seconds).
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass

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

__all__ = ["MAX_SCHEMA_VERSION", "NAME", "PBKDF2_ITERATIONS", "parse", "sniff"]

NAME = "2fas"

MAX_SCHEMA_VERSION = 4
PBKDF2_ITERATIONS = 10_000
KEY_BYTES = 32
IV_BYTES = 12
TAG_BYTES = 16
MAX_SALT_BYTES = 1024  # 2FAS writes 256

_SNIFF_BYTES = 64 * 1024
_WHAT = "this 2FAS backup"
_TYPES = {"TOTP": TokenKind.TOTP, "HOTP": TokenKind.HOTP, "STEAM": TokenKind.STEAM}


def sniff(data: bytes) -> bool:
    """Whether ``data`` looks like a 2FAS backup: a JSON object with ``schemaVersion`` and
    ``services`` or ``servicesEncrypted``."""
    if not data[:_SNIFF_BYTES].lstrip(b"\xef\xbb\xbf \t\r\n").startswith(b"{"):
        return False
    try:
        document = load_json(data, what=_WHAT)
    except FormatError:
        return False
    return (
        isinstance(document, dict)
        and "schemaVersion" in document
        and ("services" in document or "servicesEncrypted" in document)
    )


def parse(data: bytes, *, password: str | None = None) -> ImportResult:
    """Every service of a 2FAS backup; ``password`` opens an encrypted one."""
    document = load_json(data, what=_WHAT)
    if not isinstance(document, dict):
        raise FormatError(f"{_WHAT} is not a JSON object")
    version = document.get("schemaVersion")
    if not _fields.is_int(version):
        raise FormatError("not a 2FAS backup: it has no schemaVersion")
    if version > MAX_SCHEMA_VERSION:
        raise FormatError(
            f"2FAS schema version {_fields.show(version)} is newer than this version of "
            f"Sparekey reads (1 to {MAX_SCHEMA_VERSION})"
        )
    if version < 1:
        raise FormatError(f"2FAS schema version {_fields.show(version)} does not exist")
    encrypted = document.get("servicesEncrypted")
    if encrypted is None or encrypted == "":
        services = document.get("services")
    elif isinstance(encrypted, str):
        services = _decrypt(encrypted, document.get("reference"), password=password)
    else:
        raise FormatError("servicesEncrypted must be text")
    if not isinstance(services, list):
        raise FormatError(f"{_WHAT} has no list of services")
    return _read_services(services)


@dataclass(frozen=True, kw_only=True)
class _Sealed:
    """One ``ciphertext:salt:iv`` field."""

    ciphertext: bytes
    salt: bytes
    iv: bytes

    def open(self, key: bytes) -> bytes:
        """The plaintext, or :class:`InvalidTag` when the key or the data is wrong."""
        return AESGCM(key).decrypt(self.iv, self.ciphertext, None)


def _sealed(text: str, *, field: str) -> _Sealed:
    parts = text.strip().split(":")
    if len(parts) != 3:
        raise FormatError(f"{field} must be three base64 parts separated by colons")
    try:
        ciphertext, salt, iv = (base64.b64decode(part, validate=True) for part in parts)
    except (binascii.Error, ValueError):
        raise FormatError(f"{field} is not valid base64") from None
    if len(iv) != IV_BYTES or len(ciphertext) < TAG_BYTES or not 1 <= len(salt) <= MAX_SALT_BYTES:
        raise FormatError(f"{field} has an IV, salt or ciphertext of the wrong length")
    return _Sealed(ciphertext=ciphertext, salt=salt, iv=iv)


def _decrypt(encrypted: str, reference: object, *, password: str | None) -> object:
    """The services list of an encrypted backup; all fields are checked before the KDF runs."""
    services = _sealed(encrypted, field="servicesEncrypted")
    if reference is None or (isinstance(reference, str) and not reference.strip()):
        check = None
    elif isinstance(reference, str):
        check = _sealed(reference, field="reference")
    else:
        raise FormatError("reference must be text")
    if password is None:
        raise PasswordRequiredError(f"{_WHAT} is encrypted: its password is needed")
    secret = password.encode("utf-8", "surrogatepass")
    key = _pbkdf2(secret, salt=services.salt)
    if check is not None:
        check_key = key if check.salt == services.salt else _pbkdf2(secret, salt=check.salt)
        try:
            check.open(check_key)
        except InvalidTag:
            raise WrongPasswordError(f"the password does not open {_WHAT}") from None
    try:
        plaintext = services.open(key)
    except InvalidTag:
        if check is None:
            raise WrongPasswordError(f"the password does not open {_WHAT}") from None
        raise FormatError(
            f"{_WHAT} is damaged: the password is right but the services fail their check"
        ) from None
    return load_json(plaintext, what="the decrypted 2FAS services")


def _pbkdf2(password: bytes, *, salt: bytes) -> bytes:
    kdf = PBKDF2HMAC(
        algorithm=hashes.SHA256(), length=KEY_BYTES, salt=salt, iterations=PBKDF2_ITERATIONS
    )
    return kdf.derive(password)


def _read_services(services: list[object]) -> ImportResult:
    return _fields.collect(
        (_service(raw, where=f"entry {number}") for number, raw in enumerate(services, start=1)),
        format_name=NAME,
        what=_WHAT,
    )


def _service(raw: object, *, where: str) -> Token | Skipped:
    service = _fields.as_object(raw, f"{where} is not a JSON object")
    otp = _fields.as_object(service.get("otp") or {}, f"{where}: otp is not a JSON object")
    issuer = _fields.text(otp, "issuer", where=where) or _fields.text(service, "name", where=where)
    account = _fields.text(otp, "account", where=where)
    if not account:
        label = _fields.text(otp, "label", where=where)
        account = label.removeprefix(f"{issuer}:").strip() if issuer else label
    label = _fields.label(issuer, account)
    type_name = _fields.text(otp, "tokenType", where=where).upper() or "TOTP"
    kind = _TYPES.get(type_name)
    if kind is None:
        return Skipped(label=label, reason=f"{_fields.show(type_name)} tokens are not supported")
    return _fields.make_token(
        where=where,
        kind=kind,
        algorithm_name=_fields.text(otp, "algorithm", where=where),
        secret=_fields.text(service, "secret", where=where),
        issuer=issuer,
        account=account,
        digits=_fields.whole(otp, "digits", where=where, default=6),
        period=_fields.whole(otp, "period", where=where, default=30),
        counter=_fields.whole(otp, "counter", where=where, default=0)
        if kind is TokenKind.HOTP
        else 0,
    )
