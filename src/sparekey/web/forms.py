"""Pieces both web areas (the portal and the console) use to read forms and show factors."""

from __future__ import annotations

import re
from typing import Any

import segno
from starlette.datastructures import FormData
from starlette.requests import Request

from sparekey.domain.models import Factor, FactorType

__all__ = ["factor_kind", "field", "grouped", "has_control_characters", "json_body", "qr_png"]

_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def field(form: FormData, name: str, *, max_length: int = 256, lines: bool = False) -> str | None:
    """A text field, stripped; None when it is missing, too long or holds control characters
    (line breaks allowed where ``lines``)."""
    value = form.get(name)
    if not isinstance(value, str):
        return None
    value = value.strip()
    checked = re.sub(r"[\r\n\t]", " ", value) if lines else value
    if len(value) > max_length or _CONTROL.search(checked):
        return None
    return value


def has_control_characters(text: str) -> bool:
    return _CONTROL.search(text) is not None


def qr_png(uri: str) -> str:
    qr = segno.make(uri, error="m")
    data_uri: str = qr.png_data_uri(scale=6, border=4, dark="#111827")
    return data_uri


def grouped(secret: str) -> str:
    return " ".join(secret[i : i + 4] for i in range(0, len(secret), 4))


def factor_kind(factor: Factor) -> str:
    if factor.type is FactorType.WEBAUTHN:
        info = factor.webauthn
        return "Passkey" if info is not None and info.backup_eligible else "Security key"
    if factor.type is FactorType.SMS:
        return "Text-message codes"
    if factor.type is FactorType.EMAIL:
        return "Email codes"
    return "Authenticator app" if factor.type is FactorType.TOTP else "Counter-based code (HOTP)"


async def json_body(request: Request) -> dict[str, Any] | None:
    try:
        body = await request.json()
    except ValueError:
        return None
    return body if isinstance(body, dict) else None
