"""Exports without lock-in: the vault's accounts in formats other apps (and Sparekey) read back.

===========  =======================================================================  ==========
format       what it is                                                               encrypted
===========  =======================================================================  ==========
otpauth      text, one ``otpauth://`` URI a line (Steam as ``otpauth://steam/``;      no
             HOTP with the next counter to use): Aegis, 2FAS, Ente, FreeOTP+ read it
aegis        an Aegis vault (:mod:`sparekey.protocols.formats.aegis`), scrypt         yes (or an
             password slot                                                            explicit no)
google-qr    Google Authenticator "Transfer accounts" QR codes as PNG images, 10      no
             accounts a code, one batch; accounts Google cannot hold are skipped
sparekey     the vault file without its keyring slot and backup settings: entries     yes
             under the master key, opened with the vault's password or recovery key
===========  =======================================================================  ==========

The functions here turn tokens (or the unlocked vault) into bytes; :func:`write_new_files` is the
one that touches the disk: each file is written to a temporary file in the same folder, fsynced,
made 0600 and renamed into place, and an existing file is replaced only when asked.
"""

from __future__ import annotations

import contextlib
import io
import os
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import segno

from sparekey.authenticator.vault import Vault, VaultError
from sparekey.protocols.formats import FormatError, Skipped, aegis, google_migration
from sparekey.protocols.tokens import Token, TokenKind

__all__ = [
    "FORMATS",
    "PLAINTEXT_FORMATS",
    "GoogleQr",
    "aegis_vault",
    "google_qr",
    "google_qr_paths",
    "otpauth_text",
    "refuse_existing",
    "sparekey_backup",
    "write_new_files",
]

FORMATS: tuple[str, ...] = ("otpauth", "aegis", "google-qr", "sparekey")
PLAINTEXT_FORMATS = frozenset({"otpauth", "google-qr"})
GOOGLE_BATCH = 10  # accounts per QR code, as Google Authenticator's own export makes them
GOOGLE_QR_FOLDER_PREFIX = "google-export"


def otpauth_text(tokens: Sequence[Token]) -> bytes:
    """One ``otpauth://`` URI a line; the stored HOTP counter is the next one to use."""
    return "".join(token.to_otpauth().to_uri() + "\n" for token in tokens).encode("utf-8")


def aegis_vault(tokens: Sequence[Token], *, password: str | None) -> bytes:
    """An Aegis vault: under a password slot, or plain when ``password`` is None."""
    return aegis.encode(tokens, password=password)


@dataclass(frozen=True, kw_only=True)
class GoogleQr:
    """PNG images of the QR codes (in batch order), the accounts in them and those left out."""

    images: tuple[bytes, ...]
    exported: tuple[Token, ...]
    skipped: tuple[Skipped, ...]


def google_qr(
    tokens: Sequence[Token], *, batch_size: int = GOOGLE_BATCH, batch_id: int | None = None
) -> GoogleQr:
    """Google Authenticator migration QR codes; what :func:`google_migration.encode` refuses
    (Steam, digits other than 6 or 8, periods other than 30 s) is skipped, each with its reason.
    :class:`FormatError` when nothing is left."""
    exported: list[Token] = []
    skipped: list[Skipped] = []
    for token in tokens:
        try:
            google_migration.encode([token])
        except FormatError as exc:
            skipped.append(Skipped(label=token.label, reason=_google_refusal(token, exc)))
        else:
            exported.append(token)
    if not exported:
        raise FormatError(
            f"Google Authenticator can hold none of the {len(tokens)} accounts (it takes TOTP "
            "and HOTP with 6 or 8 digits and 30-second periods, no Steam)"
        )
    uris = google_migration.encode(exported, batch_size_limit=batch_size, batch_id=batch_id)
    return GoogleQr(
        images=tuple(_png(uri) for uri in uris), exported=tuple(exported), skipped=tuple(skipped)
    )


def google_qr_paths(out: Path, count: int) -> list[Path]:
    """Where the QR images go: ``OUT-1.png``, ``OUT-2.png`` ... (a ``.png`` ending of OUT is not
    doubled), or ``DIR/google-export-1.png`` ... when OUT is an existing folder."""
    if out.is_dir():
        return [out / f"{GOOGLE_QR_FOLDER_PREFIX}-{n}.png" for n in range(1, count + 1)]
    stem = out.name[: -len(".png")] if out.name.lower().endswith(".png") else out.name
    return [out.with_name(f"{stem}-{n}.png") for n in range(1, count + 1)]


def sparekey_backup(vault: Vault) -> bytes:
    """The vault file for ``vault`` without its keyring slot and without its backup settings
    (the device token is for this computer's pushes, not for a file that leaves it): the same
    master key, password and recovery slots, the entries under a fresh nonce. ``vault`` itself
    is not changed."""
    copy = replace(
        vault,
        slots=[slot for slot in vault.slots if slot.type != "keyring"],
        entries=list(vault.entries),
        removed=dict(vault.removed),
        sync={},
    )
    return copy.to_document()


def write_new_files(files: Sequence[tuple[Path, bytes]], *, force: bool) -> None:
    """Write each file atomically with mode 0600. Without ``force`` nothing is written when any
    of them exists (checked first, and again at the rename, which never replaces a file then)."""
    if not force:
        refuse_existing([path for path, _data in files])
    for path, data in files:
        if path.is_dir():
            raise VaultError(f"{path} is a folder: give a file name")
        _write_atomically(path, data, force=force)


def refuse_existing(paths: Sequence[Path]) -> None:
    """:class:`VaultError` naming the first of ``paths`` that exists."""
    for path in paths:
        if path.exists() or path.is_symlink():
            raise VaultError(f"{path} already exists (--force replaces it)")


def _write_atomically(path: Path, data: bytes, *, force: bool) -> None:
    folder = path.parent
    try:
        fd, temporary = tempfile.mkstemp(dir=folder, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as exc:
        raise VaultError(f"cannot write in {folder}: {exc.strerror}") from exc
    try:
        try:  # mkstemp made it 0600
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
            os.fsync(fd)
        finally:
            os.close(fd)
        _put_in_place(Path(temporary), path, force=force)
    except OSError as exc:
        raise VaultError(f"cannot write {path}: {exc.strerror}") from exc
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temporary)
    _fsync_folder(folder)


def _put_in_place(temporary: Path, path: Path, *, force: bool) -> None:
    if force:
        os.replace(temporary, path)
        return
    try:
        os.link(temporary, path)  # fails when the file appeared meanwhile: never replaced
    except FileExistsError:
        raise VaultError(f"{path} already exists (--force replaces it)") from None
    except OSError:  # a file system without hard links
        refuse_existing([path])
        os.replace(temporary, path)


def _fsync_folder(folder: Path) -> None:
    if sys.platform == "win32":  # pragma: no cover
        return
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _google_refusal(token: Token, error: FormatError) -> str:
    problems = []
    if token.kind is TokenKind.STEAM:
        problems.append("Steam tokens")
    else:
        if token.digits not in (6, 8):
            problems.append(f"{token.digits}-digit codes")
        if token.kind is TokenKind.TOTP and token.period != 30:
            problems.append(f"a {token.period}-second period")
    if not problems:
        return str(error)
    return "Google Authenticator cannot hold " + " or ".join(problems)


def _png(text: str) -> bytes:
    buffer = io.BytesIO()
    segno.make_qr(text, error="m").save(buffer, kind="png", scale=4, border=4)
    return buffer.getvalue()
