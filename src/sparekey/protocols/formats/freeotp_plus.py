"""FreeOTP+ JSON export (``freeotp-backup.json``), as FreeOTP+'s ``TokenPersistence`` writes it
and Aegis' ``FreeOtpPlusImporter`` reads it.

``{"tokenOrder": ["issuer:label", ...], "tokens": [{"algo", "counter", "digits", "issuerExt",
"issuerInt", "label", "period", "secret": [signed bytes], "type": "TOTP"|"HOTP"}]}``.
``counter`` is the last counter used, so an HOTP token continues at ``counter + 1`` (Aegis' test
vectors: counter 49 in the file is 50 in the URI). FreeOTP's MD5 tokens are skipped.
"""

from __future__ import annotations

from sparekey.protocols.formats import FormatError, ImportResult, Skipped
from sparekey.protocols.formats.otpauth_list import load_json, one_line
from sparekey.protocols.rfc4226 import HashAlgorithm
from sparekey.protocols.tokens import Token, TokenError, TokenKind

__all__ = ["NAME", "parse", "sniff"]

NAME = "freeotp-plus"

_SNIFF_BYTES = 64 * 1024
_KINDS = {"TOTP": TokenKind.TOTP, "HOTP": TokenKind.HOTP}


def sniff(data: bytes) -> bool:
    """Whether ``data`` looks like a FreeOTP+ export (a JSON object with ``tokens`` and
    ``tokenOrder`` or FreeOTP's ``issuerExt``)."""
    head = data[:_SNIFF_BYTES].lstrip(b"\xef\xbb\xbf \t\r\n")
    return (
        head.startswith(b"{")
        and b'"tokens"' in head
        and (b'"tokenOrder"' in head or b'"issuerExt"' in head)
    )


def _text(entry: dict[str, object], key: str) -> str:
    value = entry.get(key)
    return value.strip() if isinstance(value, str) else ""


def _number(entry: dict[str, object], key: str, default: int) -> int:
    value = entry.get(key, default)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int):
        raise FormatError(f"{key} must be a whole number")
    return value


def _secret(value: object) -> bytes:
    if not isinstance(value, list) or not all(
        isinstance(b, int) and not isinstance(b, bool) and -128 <= b <= 255 for b in value
    ):
        raise FormatError("the secret must be a list of bytes")
    return bytes(b & 0xFF for b in value)


def _token(entry: dict[str, object]) -> Token | Skipped:
    issuer = _text(entry, "issuerExt") or _text(entry, "issuerInt")
    account = _text(entry, "label")
    label = one_line(f"{issuer}: {account}" if issuer and account else issuer or account)
    label = label or "(unnamed)"
    kind_text = _text(entry, "type").upper() or "TOTP"
    algorithm_text = (_text(entry, "algo") or "SHA1").upper().replace("-", "")
    if algorithm_text == "MD5":
        return Skipped(label=label, reason="the MD5 algorithm is not supported")
    if kind_text not in _KINDS:
        return Skipped(
            label=label, reason=f"the token type {one_line(kind_text, limit=20)!r} is not supported"
        )
    try:
        algorithm = HashAlgorithm(algorithm_text)
    except ValueError as exc:
        raise FormatError("the algorithm must be SHA1, SHA256 or SHA512") from exc
    kind = _KINDS[kind_text]
    try:
        return Token(
            kind=kind,
            secret=_secret(entry.get("secret")),
            issuer=issuer,
            account=account,
            algorithm=algorithm,
            digits=_number(entry, "digits", 6),
            period=_number(entry, "period", 30),
            counter=_number(entry, "counter", 0) + 1 if kind is TokenKind.HOTP else 0,
        )
    except TokenError as exc:
        raise FormatError(str(exc)) from exc


def parse(data: bytes, *, password: str | None = None) -> ImportResult:
    """The accounts of a FreeOTP+ JSON export; ``password`` is not used (the format is plain)."""
    del password
    document = load_json(data, what="this FreeOTP+ export")
    tokens_json = document.get("tokens") if isinstance(document, dict) else None
    if not isinstance(tokens_json, list):
        raise FormatError("this is not a FreeOTP+ export (no tokens list)")
    tokens: list[Token] = []
    skipped: list[Skipped] = []
    for number, entry in enumerate(tokens_json, start=1):
        if not isinstance(entry, dict):
            raise FormatError(f"token {number} is not an object")
        try:
            found = _token(entry)
        except FormatError as exc:
            raise FormatError(f"token {number}: {exc}") from exc
        if isinstance(found, Skipped):
            skipped.append(found)
        else:
            tokens.append(found)
    if not tokens and not skipped:
        raise FormatError("no accounts found in this FreeOTP+ export")
    return ImportResult(format=NAME, tokens=tuple(tokens), skipped=tuple(skipped))
