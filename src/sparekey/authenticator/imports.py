"""Reading export files and QR images into tokens: the format registry and auto-detection.

``read_files`` takes what the user named on the command line: export files of any supported app,
text files of ``otpauth://`` or ``otpauth-migration://`` URIs, and images of QR codes. Images are
decoded to their text first. Google Authenticator exports may span several QR codes (a batch):
every Google part given in one call is combined, and a missing part is reported by number. Other
files are read one by one, each in its own format (named, or detected from its content).
A Sparekey backup (``export sparekey``: a vault file, ``sparekey``) opens with the vault's password
or its recovery key, either given as the import password.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

from sparekey.authenticator.qr import is_image, read_qr_texts
from sparekey.authenticator.vault import FORMAT as VAULT_FORMAT
from sparekey.authenticator.vault import (
    Vault,
    VaultError,
    WrongCredentialError,
)
from sparekey.protocols.formats import (
    FormatError,
    ImportResult,
    PasswordRequiredError,
    Skipped,
    WrongPasswordError,
    aegis,
    andotp,
    bitwarden,
    bitwarden_csv,
    ente,
    freeotp_plus,
    google_migration,
    otpauth_list,
    twofas,
)
from sparekey.protocols.tokens import Token

__all__ = ["FORMAT_NAMES", "detect", "read_files", "read_texts"]


@dataclass(frozen=True)
class _Format:
    name: str
    sniff: Callable[[bytes], bool]
    parse: Callable[..., ImportResult]


def _format(module: ModuleType) -> _Format:
    return _Format(module.NAME, module.sniff, module.parse)


SPAREKEY = "sparekey"


def _sniff_sparekey(data: bytes) -> bool:
    if VAULT_FORMAT.encode() not in data[: 64 * 1024]:
        return False
    try:
        document = json.loads(data)
    except (ValueError, RecursionError):
        return False
    return isinstance(document, dict) and document.get("format") == VAULT_FORMAT


def _parse_sparekey(data: bytes, *, password: str | None = None) -> ImportResult:
    """The accounts of a Sparekey vault file, opened with its password or recovery key."""
    if password is None:
        raise PasswordRequiredError("this Sparekey backup is encrypted: its password is needed")
    try:
        try:  # the recovery key first: it costs no Argon2id run when the text is not one
            opened = Vault.unlock(data, recovery_key=password)
        except WrongCredentialError:
            opened = Vault.unlock(data, password=password)
    except WrongCredentialError:
        raise WrongPasswordError(
            "the password (or recovery key) does not open this Sparekey backup"
        ) from None
    except VaultError as exc:  # damaged or altered
        raise FormatError(f"this Sparekey backup cannot be read: {exc}") from exc
    return ImportResult(format=SPAREKEY, tokens=tuple(entry.token for entry in opened.entries))


# Most specific first: auto-detection takes the first whose sniff() says yes.
_FORMATS: tuple[_Format, ...] = (
    _Format(SPAREKEY, _sniff_sparekey, _parse_sparekey),
    _format(aegis),
    _format(twofas),
    _format(andotp),
    _format(bitwarden),
    _format(freeotp_plus),
    _Format(ente.ENCRYPTED_NAME, ente.sniff_encrypted, ente.parse_encrypted),
    _format(ente),
    _format(google_migration),
    _format(bitwarden_csv),
    _format(otpauth_list),
)
_BY_NAME: dict[str, _Format] = {f.name: f for f in _FORMATS}
FORMAT_NAMES: tuple[str, ...] = tuple(sorted(_BY_NAME))


def detect(data: bytes) -> str:
    """The name of the format ``data`` is in, or :class:`FormatError`."""
    for candidate in _FORMATS:
        if candidate.sniff(data):
            return candidate.name
    if andotp.sniff_encrypted(data):
        return str(andotp.NAME)
    raise FormatError("the file is not an export this app knows (give --format to say which)")


def read_texts(texts: Sequence[str], *, format: str) -> ImportResult:
    """Tokens from decoded QR texts: Google migration URIs (one batch) or otpauth URIs."""
    if format == google_migration.NAME:
        return google_migration.parse_payloads(texts)
    return otpauth_list.parse("\n".join(texts).encode())


def read_files(
    paths: Sequence[Path],
    *,
    format: str = "auto",
    password: str | None = None,
    ask_password: Callable[[], str] | None = None,
) -> ImportResult:
    """Every token in the given files; see the module docstring."""
    if format != "auto" and format not in _BY_NAME:
        raise FormatError(f"unknown format {format!r}; one of: {', '.join(FORMAT_NAMES)}")
    google_texts: list[str] = []
    results: list[ImportResult] = []
    for path in paths:
        data = _read(path)
        if is_image(data):
            texts = read_qr_texts(data)
            if any(t.lower().startswith("otpauth-migration:") for t in texts):
                google_texts.extend(texts)
            else:
                results.append(otpauth_list.parse("\n".join(texts).encode()))
            continue
        name = detect(data) if format == "auto" else format
        if name == google_migration.NAME:
            google_texts.append(_text(data))
            continue
        results.append(_parse(name, data, password=password, ask_password=ask_password))
    if google_texts:
        results.append(google_migration.parse_payloads(google_texts))
    return _merge(results)


def _parse(
    name: str,
    data: bytes,
    *,
    password: str | None,
    ask_password: Callable[[], str] | None,
) -> ImportResult:
    parser = _BY_NAME[name].parse
    try:
        return parser(data, password=password)
    except PasswordRequiredError:
        if ask_password is None:
            raise FormatError(
                "this export is encrypted: give its password with --import-password-file"
            ) from None
    return parser(data, password=ask_password())


def _merge(results: Sequence[ImportResult]) -> ImportResult:
    if not results:
        raise FormatError("no files to import")
    tokens: list[Token] = []
    skipped: list[Skipped] = []
    for result in results:
        tokens.extend(result.tokens)
        skipped.extend(result.skipped)
    names = sorted({r.format for r in results})
    return ImportResult(format=" + ".join(names), tokens=tuple(tokens), skipped=tuple(skipped))


def _read(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise FormatError(f"cannot read {path}: {exc.strerror}") from exc


def _text(data: bytes) -> str:
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise FormatError("the file is not UTF-8 text") from exc
