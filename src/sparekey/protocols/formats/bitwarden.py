"""Bitwarden's vault export (unencrypted JSON), also written by Bitwarden Authenticator.

``{"encrypted": false, "folders": [...], "items": [{"type": 1, "name", "notes", "login":
{"uris", "username", "password", "totp"}, ...}]}`` as Bitwarden's export documentation and
Aegis' ``BitwardenImporter`` read it. ``login.totp`` is an ``otpauth://`` URI, a bare Base32 key
(TOTP, SHA1, 6 digits, 30 s) or ``steam://BASE32``. The issuer comes from the URI, else the item
name; the account from ``login.username``, else the URI. Items without a TOTP are not accounts.
Encrypted exports (``"encrypted": true``) are refused: export again as unencrypted JSON.
"""

from __future__ import annotations

from dataclasses import replace

from sparekey.protocols.formats import FormatError, ImportResult, Skipped
from sparekey.protocols.formats.otpauth_list import load_json, one_line, parse_totp_field
from sparekey.protocols.tokens import Token

__all__ = ["NAME", "item_token", "parse", "sniff"]

NAME = "bitwarden"

_SNIFF_BYTES = 64 * 1024


def item_token(*, totp: str, name: str, username: str) -> Token | Skipped:
    """The token of one Bitwarden item from its TOTP field, item name and username (what the
    JSON and CSV exports share)."""
    found = parse_totp_field(totp)
    label = one_line(f"{name}: {username}" if name and username else name or username)
    if isinstance(found, Skipped):
        return Skipped(label=label or found.label, reason=found.reason)
    return replace(found, issuer=found.issuer or name, account=username or found.account)


def _text(value: object) -> str:
    return value.strip() if isinstance(value, str) else ""


def sniff(data: bytes) -> bool:
    """Whether ``data`` looks like a Bitwarden JSON export (a JSON object with ``encrypted``
    and ``items``, or an encrypted one's ``encKeyValidation_DO_NOT_EDIT``)."""
    head = data[:_SNIFF_BYTES].lstrip(b"\xef\xbb\xbf \t\r\n")
    return (
        head.startswith(b"{")
        and b'"encrypted"' in head
        and (b'"items"' in head or b'"encKeyValidation_DO_NOT_EDIT"' in head)
    )


def parse(data: bytes, *, password: str | None = None) -> ImportResult:
    """The accounts of an unencrypted Bitwarden JSON export; ``password`` is not used."""
    del password
    document = load_json(data, what="this Bitwarden export")
    if not isinstance(document, dict):
        raise FormatError("this is not a Bitwarden JSON export (no object at the top)")
    if document.get("encrypted") is True:
        raise FormatError(
            "this Bitwarden export is encrypted; export the vault again as .json (unencrypted)"
        )
    items = document.get("items")
    if not isinstance(items, list):
        raise FormatError("this is not a Bitwarden JSON export (no items list)")
    tokens: list[Token] = []
    skipped: list[Skipped] = []
    for number, item in enumerate(items, start=1):
        if not isinstance(item, dict):
            raise FormatError(f"item {number} is not an object")
        login = item.get("login")
        totp = _text(login.get("totp")) if isinstance(login, dict) else ""
        if not totp:
            continue
        name = _text(item.get("name"))
        username = _text(login.get("username")) if isinstance(login, dict) else ""
        try:
            found = item_token(totp=totp, name=name, username=username)
        except FormatError as exc:
            raise FormatError(f"item {number} ({one_line(name) or 'unnamed'}): {exc}") from exc
        if isinstance(found, Skipped):
            skipped.append(found)
        else:
            tokens.append(found)
    if not tokens and not skipped:
        raise FormatError("no accounts found in this Bitwarden export (no item has a TOTP key)")
    return ImportResult(format=NAME, tokens=tuple(tokens), skipped=tuple(skipped))
