"""Bitwarden's vault export as CSV (also written by Bitwarden Authenticator on Android).

Columns ``folder,favorite,type,name,notes,fields,login_uri,login_username,login_password,
login_totp`` (Bitwarden's export documentation; Aegis' ``BitwardenImporter`` reads the same).
``login_totp`` is read as in the JSON export (:mod:`.bitwarden`): an ``otpauth://`` URI, a bare
Base32 key or ``steam://BASE32``; rows without one are not accounts.
"""

from __future__ import annotations

import csv
import io

from sparekey.protocols.formats import FormatError, ImportResult, Skipped
from sparekey.protocols.formats.bitwarden import item_token
from sparekey.protocols.formats.otpauth_list import decode_text, one_line
from sparekey.protocols.tokens import Token

__all__ = ["NAME", "parse", "sniff"]

NAME = "bitwarden-csv"

_REQUIRED = ("name", "login_username", "login_totp")


def _header(text: str) -> list[str]:
    first = text.split("\n", 1)[0]
    return [column.strip().strip('"').lower() for column in first.split(",")]


def sniff(data: bytes) -> bool:
    """Whether the first line of ``data`` is a Bitwarden CSV header (with ``login_totp``)."""
    text = data[:4096].decode("utf-8", errors="replace").lstrip("\ufeff")
    columns = _header(text)
    return all(column in columns for column in _REQUIRED)


def parse(data: bytes, *, password: str | None = None) -> ImportResult:
    """The accounts of a Bitwarden CSV export; ``password`` is not used."""
    del password
    text = decode_text(data, what="this Bitwarden CSV export")
    reader = csv.reader(io.StringIO(text, newline=""), strict=True)
    tokens: list[Token] = []
    skipped: list[Skipped] = []
    try:
        columns = [column.strip().lower() for column in next(reader, [])]
        if not all(column in columns for column in _REQUIRED):
            raise FormatError(
                "this is not a Bitwarden CSV export (the first line must name the columns, "
                "with name, login_username and login_totp)"
            )
        where = {column: columns.index(column) for column in _REQUIRED}
        for row in reader:
            cells = {
                column: row[index].strip() if index < len(row) else ""
                for column, index in where.items()
            }
            if not cells["login_totp"]:
                continue
            try:
                found = item_token(
                    totp=cells["login_totp"], name=cells["name"], username=cells["login_username"]
                )
            except FormatError as exc:
                raise FormatError(f"line {reader.line_num}: {exc}") from exc
            if isinstance(found, Skipped):
                skipped.append(found)
            else:
                tokens.append(found)
    except csv.Error as exc:
        raise FormatError(f"line {reader.line_num}: {one_line(str(exc))}") from exc
    if not tokens and not skipped:
        raise FormatError("no accounts found in this Bitwarden export (no row has a TOTP key)")
    return ImportResult(format=NAME, tokens=tuple(tokens), skipped=tuple(skipped))
