"""Plain text of ``otpauth://`` URIs, one a line: what Aegis, Ente, FreeOTP+ and others export.

The URIs follow Google Authenticator's "Key Uri Format" wiki page (see
:mod:`sparekey.protocols.otpauth`). Blank lines and lines starting with ``#`` are ignored. Ente
Auth's importer also separates URIs with commas (its exports write commas inside a URI as ``%2C``),
so a comma followed by another URI separates two entries here too; Ente's ``codeDisplay`` parameter
(URL-encoded JSON) is ignored except for its ``note``. An unencoded ``#`` inside a URI is read as
``%23``, as Ente does.

Kinds that no code here computes (``otpauth://yandex``, ``otpauth://motp``, ``motp://``, the MD5
algorithm) are reported as skipped rather than failing the file.

This module also holds what the other text and JSON formats share: :func:`parse_totp_field` (a
Bitwarden-style TOTP field: an otpauth URI, ``steam://BASE32`` or a bare Base32 key),
:func:`decode_text`, :func:`load_json` and :func:`one_line`.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from urllib.parse import parse_qs, unquote, urlsplit

from sparekey.protocols.formats import FormatError, ImportResult, Skipped
from sparekey.protocols.otpauth import OtpauthError, b32decode
from sparekey.protocols.otpauth import parse as parse_uri
from sparekey.protocols.tokens import Token, TokenError, TokenKind

__all__ = [
    "NAME",
    "decode_text",
    "load_json",
    "one_line",
    "parse",
    "parse_text",
    "parse_totp_field",
    "sniff",
]

NAME = "otpauth"

_SNIFF_BYTES = 64 * 1024
# A comma followed by the next URI's scheme starts another entry (a comma inside a URI does not).
_ENTRY_SEPARATOR = re.compile(r"\s*,\s*(?=(?:otpauth|motp|steam)://)", re.IGNORECASE)
_UNSUPPORTED_TYPES = {"yandex": "Yandex", "motp": "mOTP"}
_TYPE_NAME = re.compile(r"[a-z0-9-]{1,20}")


def one_line(text: str, *, limit: int = 60) -> str:
    """``text`` fit for a one-line message: control characters become spaces, long text is cut."""
    cleaned = " ".join("".join(" " if not ch.isprintable() else ch for ch in text).split())
    return cleaned if len(cleaned) <= limit else cleaned[: limit - 1] + "…"


def decode_text(data: bytes, *, what: str) -> str:
    """UTF-8 text (a leading byte-order mark is dropped); ``what`` names the file in the error."""
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise FormatError(f"{what} is not UTF-8 text") from exc


def load_json(data: bytes, *, what: str) -> object:
    """The JSON document in ``data``; any failure is a :class:`FormatError` naming ``what``."""
    text = decode_text(data, what=what)
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise FormatError(f"{what} is not valid JSON (line {exc.lineno}: {exc.msg})") from exc
    except RecursionError as exc:
        raise FormatError(f"{what} is JSON nested too deeply") from exc
    except ValueError as exc:  # a number longer than Python's int limit
        raise FormatError(f"{what} is not valid JSON (a number is too long)") from exc


def _label_of(uri: str) -> str:
    """``issuer: account`` from a URI's label, for messages and skipped entries."""
    try:
        path = unquote(urlsplit(uri).path.lstrip("/"))
    except ValueError:
        return "(unnamed)"
    issuer, sep, account = path.partition(":")
    label = f"{issuer.strip()}: {account.strip()}" if sep else path.strip()
    return one_line(label) or "(unnamed)"


def _unsupported(uri: str) -> str | None:
    """Why an otpauth-style URI is a kind we cannot compute, or None if it may be one we can."""
    try:
        parts = urlsplit(uri)
    except ValueError:
        return None
    scheme = parts.scheme.lower()
    if scheme == "motp":
        return "mOTP tokens are not supported"
    kind = parts.netloc.lower()
    if kind in _UNSUPPORTED_TYPES:
        return f"{_UNSUPPORTED_TYPES[kind]} tokens are not supported"
    if kind not in {"totp", "hotp", "steam"} and _TYPE_NAME.fullmatch(kind):
        return f"the token type {kind!r} is not supported"
    algorithms = parse_qs(parts.query).get("algorithm", [])
    if algorithms and algorithms[0].upper().removeprefix("ALGORITHM.") == "MD5":
        return "the MD5 algorithm is not supported"
    return None


def _note(uri: str) -> str:
    """The note in Ente's ``codeDisplay`` parameter, if any (anything malformed is ignored)."""
    try:
        values = parse_qs(urlsplit(uri).query).get("codeDisplay", [])
        display = json.loads(values[0]) if values else None
    except (ValueError, RecursionError):
        return ""
    note = display.get("note") if isinstance(display, dict) else None
    return note.strip() if isinstance(note, str) else ""


def _from_uri(uri: str) -> Token | Skipped:
    uri = uri.strip().replace("#", "%23")
    reason = _unsupported(uri)
    if reason is not None:
        return Skipped(label=_label_of(uri), reason=reason)
    try:
        return Token.from_otpauth(parse_uri(uri), note=_note(uri))
    except ValueError as exc:  # OtpauthError, TokenError, or an int() the URI parser let through
        raise FormatError(_reason(exc, fallback="the URI is not a valid otpauth:// URI")) from exc


def _reason(exc: ValueError, *, fallback: str) -> str:
    """The message of our own errors (already one line for a person), else ``fallback``."""
    return str(exc) if isinstance(exc, OtpauthError | TokenError | FormatError) else fallback


def parse_totp_field(text: str) -> Token | Skipped:
    """A TOTP field as password managers store it: an ``otpauth://`` URI, ``steam://BASE32``
    (Bitwarden's Steam Guard form), or a bare Base32 key meaning TOTP with SHA1, 6 digits, 30 s.

    Kinds we cannot compute come back as :class:`Skipped`; anything unreadable raises
    :class:`FormatError`. A ``steam://`` or bare key carries no names: the caller adds them.
    """
    field = text.strip()
    lowered = field.lower()
    try:
        if lowered.startswith("steam://"):
            return Token.steam(secret=b32decode(field[len("steam://") :]), issuer="")
        if "://" in field:
            return _from_uri(field)
        return Token(kind=TokenKind.TOTP, secret=b32decode(field))
    except FormatError:
        raise
    except ValueError as exc:
        raise FormatError(_reason(exc, fallback="the TOTP key is not valid")) from exc


def _entries(text: str) -> Iterator[tuple[int, str]]:
    """``(line number, entry)`` for every entry: lines, and comma-separated URIs within a line."""
    for number, line in enumerate(text.splitlines(), start=1):
        stripped = line.strip().strip(",").strip()
        if not stripped or stripped.startswith("#"):
            continue
        for entry in _ENTRY_SEPARATOR.split(stripped):
            if entry:
                yield number, entry


def parse_text(text: str, *, format_name: str = NAME, what: str = "this file") -> ImportResult:
    """Tokens from text of otpauth URIs (see the module docstring); ``format_name`` is recorded in
    the result and ``what`` names the file in the "no accounts" message."""
    tokens: list[Token] = []
    skipped: list[Skipped] = []
    for number, entry in _entries(text):
        if not entry.lower().startswith(("otpauth://", "motp://")):
            raise FormatError(f"line {number}: not an otpauth:// URI")
        try:
            found = _from_uri(entry)
        except FormatError as exc:
            raise FormatError(f"line {number}: {exc}") from exc
        if isinstance(found, Skipped):
            skipped.append(found)
        else:
            tokens.append(found)
    if not tokens and not skipped:
        raise FormatError(f"no accounts found in {what}")
    return ImportResult(format=format_name, tokens=tuple(tokens), skipped=tuple(skipped))


def sniff(data: bytes) -> bool:
    """Whether the first entry of ``data`` (after blank and ``#`` lines) is an otpauth URI."""
    text = data[:_SNIFF_BYTES].decode("utf-8", errors="replace").lstrip("\ufeff")
    for line in text.splitlines():
        stripped = line.strip()
        if stripped and not stripped.startswith("#"):
            return stripped.lower().startswith(("otpauth://", "motp://"))
    return False


def parse(data: bytes, *, password: str | None = None) -> ImportResult:
    """Tokens from a text file of otpauth URIs; ``password`` is not used (the format is plain)."""
    del password
    return parse_text(decode_text(data, what="this file"), what="this file")
