"""Reading the fields of JSON exports (Aegis, 2FAS, andOTP) the same way everywhere: each
wrong shape is a one-line :class:`FormatError` naming the entry, each unsupported kind or hash a
:class:`Skipped`, and a token is made from what the fields say in one place."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import TypeGuard

from sparekey.protocols.formats import FormatError, ImportResult, Skipped
from sparekey.protocols.otpauth import OtpauthError, b32decode
from sparekey.protocols.rfc4226 import HashAlgorithm
from sparekey.protocols.tokens import Token, TokenError, TokenKind

__all__ = ["as_object", "collect", "is_int", "label", "make_token", "show", "text", "whole"]


def is_int(value: object) -> TypeGuard[int]:
    return isinstance(value, int) and not isinstance(value, bool)


def show(value: object) -> str:
    """A value from the file for a one-line message: short, with control characters escaped."""
    shown = repr(value)
    return shown if len(shown) <= 40 else shown[:39] + "…"


def label(issuer: str, account: str) -> str:
    if issuer and account:
        return f"{issuer}: {account}"
    return issuer or account or "(unnamed)"


def as_object(value: object, message: str) -> dict[str, object]:
    if not isinstance(value, dict):
        raise FormatError(message)
    return value


def text(fields: Mapping[str, object], key: str, *, where: str) -> str:
    value = fields.get(key)
    if value is None:
        return ""
    if not isinstance(value, str):
        raise FormatError(f"{where}: {key} must be text")
    return value.strip()


def whole(fields: Mapping[str, object], key: str, *, where: str, default: int | None = None) -> int:
    value = fields.get(key)
    if value is None and default is not None:
        return default
    if not is_int(value):
        raise FormatError(f"{where}: {key} must be a whole number")
    return value


def make_token(
    *,
    where: str,
    kind: TokenKind,
    algorithm_name: str,
    secret: str,
    issuer: str,
    account: str,
    digits: int,
    period: int,
    counter: int,
    note: str = "",
) -> Token | Skipped:
    """The token the fields describe; an unknown hash is skipped, bad values are a FormatError."""
    algorithm_name = algorithm_name.upper().replace("-", "") or "SHA1"
    try:
        algorithm = HashAlgorithm(algorithm_name)
    except ValueError:
        return Skipped(
            label=label(issuer, account),
            reason=f"the {show(algorithm_name)} algorithm is not supported",
        )
    try:
        key = b32decode(secret)
    except OtpauthError as exc:
        raise FormatError(f"{where}: {exc}") from None
    try:
        if kind is TokenKind.STEAM:
            return Token(
                kind=kind,
                secret=key,
                issuer=issuer,
                account=account,
                digits=5,
                period=period,
                note=note,
            )
        return Token(
            kind=kind,
            secret=key,
            issuer=issuer,
            account=account,
            algorithm=algorithm,
            digits=digits,
            period=period if kind is TokenKind.TOTP else 30,
            counter=counter if kind is TokenKind.HOTP else 0,
            note=note,
        )
    except TokenError as exc:
        raise FormatError(f"{where}: {exc}") from None


def collect(outcomes: Iterable[Token | Skipped], *, format_name: str, what: str) -> ImportResult:
    tokens: list[Token] = []
    skipped: list[Skipped] = []
    for outcome in outcomes:
        if isinstance(outcome, Token):
            tokens.append(outcome)
        else:
            skipped.append(outcome)
    if not tokens and not skipped:
        raise FormatError(f"no accounts found in {what}")
    return ImportResult(format=format_name, tokens=tuple(tokens), skipped=tuple(skipped))
