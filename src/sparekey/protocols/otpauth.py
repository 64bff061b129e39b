"""The ``otpauth://`` Key URI format (Google Authenticator's "Key Uri Format" wiki page).

``otpauth://TYPE/LABEL?PARAMETERS`` where TYPE is ``totp`` or ``hotp`` (and, as a de-facto
extension written by Aegis, 2FAS and Ente, ``steam``; KeePassXC writes ``totp`` with
``encoder=steam`` instead); LABEL is ``issuer:account``
(percent-encoded, the colon literal or ``%3A``); PARAMETERS are ``secret`` (base32, no padding),
``issuer`` (should equal the label's prefix), ``algorithm``, ``digits``, ``period`` (TOTP) and
``counter`` (required for HOTP).
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass, field
from enum import StrEnum
from urllib.parse import parse_qs, quote, unquote, urlsplit

from sparekey.protocols.rfc4226 import MAX_DIGITS, MIN_DIGITS, HashAlgorithm

__all__ = ["OtpType", "OtpauthError", "OtpauthUri", "b32decode", "b32encode", "parse"]


class OtpType(StrEnum):
    TOTP = "totp"
    HOTP = "hotp"
    STEAM = "steam"


class OtpauthError(ValueError):
    """An ``otpauth://`` URI that cannot be used; the message says why in one line."""


def b32encode(secret: bytes) -> str:
    """Base32 without padding, as authenticator apps expect it."""
    return base64.b32encode(secret).decode("ascii").rstrip("=")


def b32decode(text: str) -> bytes:
    """Base32 as people type it: any case, spaces and dashes ignored, padding optional."""
    cleaned = "".join(text.split()).replace("-", "").upper().rstrip("=")
    if not cleaned:
        raise OtpauthError("the secret is empty")
    try:
        return base64.b32decode(cleaned + "=" * (-len(cleaned) % 8))
    except (binascii.Error, ValueError) as exc:
        raise OtpauthError("the secret is not valid base32") from exc


@dataclass(frozen=True, kw_only=True)
class OtpauthUri:
    type: OtpType
    secret: bytes = field(repr=False)
    account: str
    issuer: str | None = None
    algorithm: HashAlgorithm = HashAlgorithm.SHA1
    digits: int = 6
    period: int = 30
    counter: int = 0

    def to_uri(self) -> str:
        label = quote(self.account, safe="@")
        if self.issuer:
            label = f"{quote(self.issuer, safe='')}:{label}"
        params = [f"secret={b32encode(self.secret)}"]
        if self.issuer:
            params.append(f"issuer={quote(self.issuer, safe='')}")
        params += [f"algorithm={self.algorithm.value}", f"digits={self.digits}"]
        if self.type is not OtpType.HOTP:
            params.append(f"period={self.period}")
        else:
            params.append(f"counter={self.counter}")
        return f"otpauth://{self.type.value}/{label}?{'&'.join(params)}"


def _int_param(params: dict[str, list[str]], name: str, default: int, low: int, high: int) -> int:
    values = params.get(name)
    if not values:
        return default
    text = values[0].strip()
    if not (text.isascii() and text.isdigit()) or not low <= int(text) <= high:
        raise OtpauthError(f"{name} must be a whole number from {low} to {high}")
    return int(text)


def _split_label(raw: str) -> tuple[str, str]:
    """Split ``issuer:account`` on the first separator (a literal colon, else ``%3A``)."""
    index = raw.find(":")
    width = 1
    if index < 0:
        index = raw.upper().find("%3A")
        width = 3
    if index < 0:
        return "", unquote(raw)
    return unquote(raw[:index]), unquote(raw[index + width :])


def parse(uri: str) -> OtpauthUri:
    """Parse an ``otpauth://`` URI; raises :class:`OtpauthError` with a one-line reason."""
    try:
        parts = urlsplit(uri.strip())
    except ValueError as exc:
        raise OtpauthError("not a valid URI") from exc
    if parts.scheme.lower() != "otpauth":
        raise OtpauthError("not an otpauth:// URI")
    try:
        otp_type = OtpType(parts.netloc.lower())
    except ValueError as exc:
        raise OtpauthError("the type must be totp, hotp or steam") from exc
    params = parse_qs(parts.query, keep_blank_values=True)
    if otp_type is OtpType.TOTP and params.get("encoder", [""])[0].lower() == "steam":
        otp_type = OtpType.STEAM
    issuer_in_label, account = _split_label(parts.path.lstrip("/"))
    issuer = params.get("issuer", [issuer_in_label])[0].strip() or issuer_in_label.strip() or None
    secret_values = params.get("secret")
    if not secret_values:
        raise OtpauthError("the secret parameter is missing")
    secret = b32decode(secret_values[0])
    algorithm_text = params.get("algorithm", ["SHA1"])[0].upper().replace("-", "")
    algorithm_text = algorithm_text.removeprefix("ALGORITHM.")  # Ente's older exports
    try:
        algorithm = HashAlgorithm(algorithm_text)
    except ValueError as exc:
        raise OtpauthError("algorithm must be SHA1, SHA256 or SHA512") from exc
    if otp_type is OtpType.HOTP and "counter" not in params:
        raise OtpauthError("an hotp URI needs a counter parameter")
    if otp_type is OtpType.STEAM:
        algorithm = HashAlgorithm.SHA1
    return OtpauthUri(
        type=otp_type,
        secret=secret,
        account=account.strip(),
        issuer=issuer,
        algorithm=algorithm,
        digits=5
        if otp_type is OtpType.STEAM
        else _int_param(params, "digits", 6, MIN_DIGITS, MAX_DIGITS),
        # a period means nothing to HOTP and a counter nothing to TOTP: what to_uri() leaves out
        period=_int_param(params, "period", 30, 1, 86_400) if otp_type is not OtpType.HOTP else 30,
        counter=_int_param(params, "counter", 0, 0, (1 << 64) - 1)
        if otp_type is OtpType.HOTP
        else 0,
    )
