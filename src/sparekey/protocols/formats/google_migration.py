"""Google Authenticator's "Transfer accounts" export: ``otpauth-migration://offline?data=...``.

The ``data`` parameter is the percent-encoded standard Base64 of a ``MigrationPayload`` protocol
buffer (proto3), as Aegis (``app/src/main/proto/google_auth.proto``) and 2fas-android read it::

    message MigrationPayload {
      enum Algorithm { ALGORITHM_UNSPECIFIED=0; SHA1=1; SHA256=2; SHA512=3; MD5=4; }
      enum DigitCount { DIGIT_COUNT_UNSPECIFIED=0; SIX=1; EIGHT=2; }
      enum OtpType { OTP_TYPE_UNSPECIFIED=0; HOTP=1; TOTP=2; }
      message OtpParameters { bytes secret=1; string name=2; string issuer=3; Algorithm algorithm=4;
                              DigitCount digits=5; OtpType type=6; int64 counter=7; }
      repeated OtpParameters otp_parameters=1; int32 version=2; int32 batch_size=3;
      int32 batch_index=4; int32 batch_id=5;
    }

Only percent-decoding is applied (not form decoding): real exports carry raw ``+``, ``/`` and
``=`` in ``data``. The secret is raw bytes; TOTP always has a 30-second period. Unspecified enums
mean SHA1, 6 digits and TOTP; MD5 entries are skipped. ``name`` may hold ``Issuer:account`` even
when ``issuer`` is set (the prefix is dropped when it is the issuer; split when issuer is empty).

A large export is several QR codes, one batch: each part carries the same ``batch_id``, the
``batch_size`` and its 0-based ``batch_index``. :func:`decode_uri` reads one part,
:func:`combine` checks that every batch is complete and :func:`parse_payloads` does both for
several files or QR texts; :func:`encode` writes tokens as such a batch.
"""

from __future__ import annotations

import base64
import binascii
import re
import secrets
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, unquote, urlsplit

from google.protobuf import descriptor_pb2, descriptor_pool, message_factory
from google.protobuf.message import DecodeError

from sparekey.protocols.formats import FormatError, ImportResult, Skipped
from sparekey.protocols.formats.otpauth_list import decode_text, one_line
from sparekey.protocols.rfc4226 import HashAlgorithm
from sparekey.protocols.tokens import Token, TokenError, TokenKind

__all__ = [
    "NAME",
    "MigrationPart",
    "combine",
    "decode_uri",
    "encode",
    "missing_parts",
    "parse",
    "parse_payloads",
    "sniff",
]

NAME = "google"

_SCHEME = "otpauth-migration://"
_SNIFF_BYTES = 64 * 1024
_VERSION = 1
_INT32 = 1 << 31
_MAX_PARTS = 1000  # QR codes in one batch (Google writes about ten accounts in each)
_LISTED = 5  # missing part numbers named in an error; the rest are counted
_BASE64 = re.compile(r"[A-Za-z0-9+/]*={0,2}")

_PERIOD = 30  # the only period Google's format knows
_ALGORITHMS = {
    0: HashAlgorithm.SHA1,
    1: HashAlgorithm.SHA1,
    2: HashAlgorithm.SHA256,
    3: HashAlgorithm.SHA512,
}
_ALGORITHM_MD5 = 4
_DIGITS = {0: 6, 1: 6, 2: 8}
_KINDS = {0: TokenKind.TOTP, 1: TokenKind.HOTP, 2: TokenKind.TOTP}
_ALGORITHM_CODES = {HashAlgorithm.SHA1: 1, HashAlgorithm.SHA256: 2, HashAlgorithm.SHA512: 3}
_DIGIT_CODES = {6: 1, 8: 2}
_KIND_CODES = {TokenKind.HOTP: 1, TokenKind.TOTP: 2}


def _payload_class() -> Any:
    """The ``MigrationPayload`` message class, built from a descriptor (no protoc step)."""
    fdp = descriptor_pb2.FileDescriptorProto(
        name="sparekey/google_auth_migration.proto", package="sparekey.googleauth", syntax="proto3"
    )
    payload = fdp.message_type.add(name="MigrationPayload")
    for enum_name, values in (
        ("Algorithm", ("UNSPECIFIED", "SHA1", "SHA256", "SHA512", "MD5")),
        ("DigitCount", ("UNSPECIFIED", "SIX", "EIGHT")),
        ("OtpType", ("UNSPECIFIED", "HOTP", "TOTP")),
    ):
        enum = payload.enum_type.add(name=enum_name)
        prefix = re.sub(r"(?<!^)([A-Z])", r"_\1", enum_name).upper()
        for number, value in enumerate(values):
            enum.value.add(name=f"{prefix}_{value}", number=number)
    field = descriptor_pb2.FieldDescriptorProto
    optional, repeated = field.LABEL_OPTIONAL, field.LABEL_REPEATED
    params = payload.nested_type.add(name="OtpParameters")
    enum_type = ".sparekey.googleauth.MigrationPayload."
    for number, (name, kind, type_name) in enumerate(
        (
            ("secret", field.TYPE_BYTES, ""),
            ("name", field.TYPE_STRING, ""),
            ("issuer", field.TYPE_STRING, ""),
            ("algorithm", field.TYPE_ENUM, enum_type + "Algorithm"),
            ("digits", field.TYPE_ENUM, enum_type + "DigitCount"),
            ("type", field.TYPE_ENUM, enum_type + "OtpType"),
            ("counter", field.TYPE_INT64, ""),
        ),
        start=1,
    ):
        added = params.field.add(name=name, number=number, type=kind, label=optional)
        if type_name:
            added.type_name = type_name
    payload.field.add(
        name="otp_parameters",
        number=1,
        type=field.TYPE_MESSAGE,
        label=repeated,
        type_name=enum_type + "OtpParameters",
    )
    for number, name in enumerate(("version", "batch_size", "batch_index", "batch_id"), start=2):
        payload.field.add(name=name, number=number, type=field.TYPE_INT32, label=optional)
    pool = descriptor_pool.DescriptorPool()
    pool.Add(fdp)
    return message_factory.GetMessageClass(
        pool.FindMessageTypeByName("sparekey.googleauth.MigrationPayload")
    )


_PAYLOAD = _payload_class()


@dataclass(frozen=True, kw_only=True)
class MigrationPart:
    """One ``otpauth-migration`` URI (one QR code): its accounts and its place in the batch."""

    tokens: tuple[Token, ...]
    skipped: tuple[Skipped, ...]
    version: int
    batch_id: int
    batch_size: int
    batch_index: int


def _names(name: str, issuer: str) -> tuple[str, str]:
    """``(issuer, account)`` from Google's fields (``name`` may start with ``Issuer:``)."""
    name, issuer = name.strip(), issuer.strip()
    if issuer:
        prefix, sep, rest = name.partition(":")
        if sep and prefix.strip().casefold() == issuer.casefold():
            name = rest.strip()
    elif ":" in name:
        issuer, _, name = (part.strip() for part in name.partition(":"))
    return issuer, name


def _entry(params: Any, number: int) -> Token | Skipped:
    issuer, account = _names(params.name, params.issuer)
    named = one_line(f"{issuer}: {account}" if issuer and account else issuer or account)
    label = named or "(unnamed)"
    if params.algorithm == _ALGORITHM_MD5:
        return Skipped(label=label, reason="the MD5 algorithm is not supported")
    for value, table, what in (
        (params.algorithm, _ALGORITHMS, "algorithm"),
        (params.digits, _DIGITS, "digit count"),
        (params.type, _KINDS, "token type"),
    ):
        if value not in table:
            return Skipped(label=label, reason=f"unknown {what} {value}")
    kind = _KINDS[params.type]
    try:
        return Token(
            kind=kind,
            secret=bytes(params.secret),
            issuer=issuer,
            account=account,
            algorithm=_ALGORITHMS[params.algorithm],
            digits=_DIGITS[params.digits],
            counter=params.counter if kind is TokenKind.HOTP else 0,
        )
    except TokenError as exc:
        where = f"account {number} ({named})" if named else f"account {number}"
        raise FormatError(f"{where}: {exc}") from exc


def decode_uri(uri: str) -> MigrationPart:
    """One ``otpauth-migration://offline?data=...`` URI (the text of one QR code)."""
    uri = uri.strip()
    if not uri.lower().startswith(_SCHEME):
        raise FormatError("not an otpauth-migration:// URI")
    try:
        query = urlsplit(uri).query
    except ValueError as exc:
        raise FormatError("not a valid otpauth-migration:// URI") from exc
    values = [part[5:] for part in query.split("&") if part.startswith("data=")]
    if not values or not values[0]:
        raise FormatError("the otpauth-migration:// URI has no data parameter")
    # Percent-decoding only; a space can only be a '+' that someone form-decoded.
    text = "".join(unquote(values[0]).replace(" ", "+").split())
    text = text.replace("-", "+").replace("_", "/").rstrip("=")
    text += "=" * (-len(text) % 4)
    if not _BASE64.fullmatch(text):
        raise FormatError("the data parameter is not valid Base64")
    try:
        raw = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise FormatError("the data parameter is not valid Base64") from exc
    try:
        payload = _PAYLOAD.FromString(raw)
    except (DecodeError, ValueError) as exc:
        raise FormatError("the data parameter is not a Google Authenticator export") from exc
    tokens: list[Token] = []
    skipped: list[Skipped] = []
    for number, params in enumerate(payload.otp_parameters, start=1):
        found = _entry(params, number)
        if isinstance(found, Skipped):
            skipped.append(found)
        else:
            tokens.append(found)
    return MigrationPart(
        tokens=tuple(tokens),
        skipped=tuple(skipped),
        version=payload.version,
        batch_id=payload.batch_id,
        batch_size=payload.batch_size,
        batch_index=payload.batch_index,
    )


def _batches(parts: Iterable[MigrationPart]) -> dict[tuple[int, int], dict[int, MigrationPart]]:
    """Parts grouped by batch (in order of first appearance), each by its index; a part read
    twice (the same QR code scanned again) counts once."""
    batches: dict[tuple[int, int], dict[int, MigrationPart]] = {}
    for part in parts:
        size = max(part.batch_size, 1)
        if size > _MAX_PARTS:  # counting the missing parts of 2**31 would never end
            raise FormatError(
                f"this Google Authenticator export claims {size} parts; at most {_MAX_PARTS} "
                "are read"
            )
        if not 0 <= part.batch_index < size:
            raise FormatError(
                f"part {part.batch_index + 1} of {size} of this Google Authenticator export "
                "does not exist"
            )
        batches.setdefault((part.batch_id, size), {}).setdefault(part.batch_index, part)
    return batches


def _missing(
    batches: dict[tuple[int, int], dict[int, MigrationPart]],
) -> list[tuple[int, list[int]]]:
    """``(batch size, missing part numbers from 1)`` for each incomplete batch."""
    incomplete = []
    for (_, size), found in batches.items():
        numbers = [index + 1 for index in range(size) if index not in found]
        if numbers:
            incomplete.append((size, numbers))
    return incomplete


def missing_parts(parts: Iterable[MigrationPart]) -> tuple[tuple[int, int], ...]:
    """``(part number, batch size)`` of every part not yet read, part numbers counted from 1 as
    people do; empty when every batch is complete (for a scanner showing "2 of 3 read")."""
    return tuple(
        (number, size) for size, numbers in _missing(_batches(parts)) for number in numbers
    )


def combine(parts: Iterable[MigrationPart]) -> ImportResult:
    """The accounts of complete batches, in batch order; :class:`FormatError` names a missing
    part ("part 2 of 3 of this Google Authenticator export is missing")."""
    batches = _batches(parts)
    incomplete = _missing(batches)
    if incomplete:
        size, missing = incomplete[0]
        numbers = [str(number) for number in missing]
        if len(numbers) > _LISTED:
            numbers[_LISTED - 1 :] = [f"{len(numbers) - _LISTED + 1} more"]
        which = (
            f"part {numbers[0]}"
            if len(numbers) == 1
            else f"parts {', '.join(numbers[:-1])} and {numbers[-1]}"
        )
        verb = "is" if len(numbers) == 1 else "are"
        raise FormatError(f"{which} of {size} of this Google Authenticator export {verb} missing")
    ordered = [found[index] for found in batches.values() for index in sorted(found)]
    tokens = tuple(token for part in ordered for token in part.tokens)
    skipped = tuple(entry for part in ordered for entry in part.skipped)
    if not tokens and not skipped:
        raise FormatError("no accounts found in this Google Authenticator export")
    return ImportResult(format=NAME, tokens=tokens, skipped=skipped)


def _uris(text: str) -> list[tuple[int, str]]:
    found: list[tuple[int, str]] = []
    for number, line in enumerate(text.splitlines(), start=1):
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        if not stripped.lower().startswith(_SCHEME):
            raise FormatError(f"line {number}: not an otpauth-migration:// URI")
        found.append((number, stripped))
    return found


def parse_payloads(texts: Iterable[str]) -> ImportResult:
    """The accounts in several texts (files or QR codes, each with one or more
    ``otpauth-migration`` URIs, ``#`` comments allowed) that together form whole batches."""
    sources = list(texts)
    parts: list[MigrationPart] = []
    for source, text in enumerate(sources, start=1):
        for number, uri in _uris(text):
            try:
                parts.append(decode_uri(uri))
            except FormatError as exc:
                where = f"line {number}" if len(sources) == 1 else f"input {source}, line {number}"
                raise FormatError(f"{where}: {exc}") from exc
    if not parts:
        raise FormatError("no otpauth-migration:// URI found")
    return combine(parts)


def sniff(data: bytes) -> bool:
    """Whether ``data`` holds an ``otpauth-migration://`` URI near its start."""
    return _SCHEME.encode() in data[:_SNIFF_BYTES].lower()


def parse(data: bytes, *, password: str | None = None) -> ImportResult:
    """The accounts in one file of ``otpauth-migration`` URIs (a whole batch); ``password`` is not
    used (the format is plain)."""
    del password
    return parse_payloads([decode_text(data, what="this file")])


def _unrepresentable(token: Token) -> str | None:
    if token.kind is TokenKind.STEAM:
        return "Steam"
    problems = []
    if token.digits not in _DIGIT_CODES:
        problems.append(f"{token.digits} digits")
    if token.kind is TokenKind.TOTP and token.period != _PERIOD:
        problems.append(f"a {token.period}-second period")
    return ", ".join(problems) or None


def encode(
    tokens: Sequence[Token], *, batch_size_limit: int = 10, batch_id: int | None = None
) -> list[str]:
    """``otpauth-migration`` URIs (one per QR code) holding ``tokens``, at most
    ``batch_size_limit`` in each, all in one batch (``batch_id`` random unless given).

    Google's format has no Steam tokens, only 6 or 8 digits and only 30-second periods: tokens
    it cannot hold raise :class:`FormatError` naming them (and notes are not carried).
    """
    if batch_size_limit < 1:
        raise FormatError("a Google Authenticator export needs room for at least one account")
    if not tokens:
        raise FormatError("there are no accounts to export")
    refused = [
        f"{token.label} ({why})" for token in tokens if (why := _unrepresentable(token)) is not None
    ]
    if refused:
        raise FormatError(
            "Google Authenticator cannot hold " + one_line("; ".join(refused), limit=200)
        )
    if batch_id is None:
        batch_id = secrets.randbelow(2 * _INT32) - _INT32
    if not -_INT32 <= batch_id < _INT32:
        raise FormatError("the batch id must fit in 32 bits")
    chunks = [tokens[i : i + batch_size_limit] for i in range(0, len(tokens), batch_size_limit)]
    uris = []
    for index, chunk in enumerate(chunks):
        payload = _PAYLOAD(
            version=_VERSION, batch_size=len(chunks), batch_index=index, batch_id=batch_id
        )
        for token in chunk:
            payload.otp_parameters.add(
                secret=token.secret,
                name=token.account,
                issuer=token.issuer,
                algorithm=_ALGORITHM_CODES[token.algorithm],
                digits=_DIGIT_CODES[token.digits],
                type=_KIND_CODES[token.kind],
                counter=token.counter if token.kind is TokenKind.HOTP else 0,
            )
        data = base64.b64encode(payload.SerializeToString()).decode("ascii")
        uris.append(f"{_SCHEME}offline?data={quote(data, safe='')}")
    return uris
