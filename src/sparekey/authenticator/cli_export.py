"""``sparekey-authenticator export FORMAT OUT``: every account, in a format another app reads.

``otpauth`` (a text file of URIs) and ``google-qr`` (PNG images of Google Authenticator transfer
QR codes) hold the secrets in plain text and say so; ``aegis`` is encrypted under the password in
``--export-password-file`` (plain only with ``--unencrypted``); ``sparekey`` is the vault file
without its keyring slot, opened later with the vault's password or recovery key. Existing files
are replaced only with ``--force``. See :mod:`sparekey.authenticator.exports`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from sparekey.authenticator import exports
from sparekey.authenticator.cli import _ctx, _first_line
from sparekey.authenticator.vault import VaultError
from sparekey.protocols.formats import Skipped

__all__ = ["export"]


def export(
    ctx: typer.Context,
    format: Annotated[
        str, typer.Argument(help=f"One of: {', '.join(exports.FORMATS)}.", show_default=False)
    ],
    out: Annotated[
        Path,
        typer.Argument(
            help="The file to write (google-qr: a name prefix for OUT-1.png ..., or a folder).",
            show_default=False,
        ),
    ],
    export_password_file: Annotated[
        Path | None, typer.Option(help="aegis: encrypt under the password in this file.")
    ] = None,
    unencrypted: Annotated[
        bool, typer.Option("--unencrypted", help="aegis: write a plain (unencrypted) vault.")
    ] = False,
    force: Annotated[bool, typer.Option("--force", help="Replace existing files.")] = False,
) -> None:
    """Export every account: otpauth URIs, an Aegis vault, Google QR codes or a Sparekey backup."""
    context = _ctx(ctx)
    if format not in exports.FORMATS:
        raise VaultError(f"unknown export format {format!r}; one of: {', '.join(exports.FORMATS)}")
    password = _export_password(format, export_password_file, unencrypted=unencrypted)
    if format != "google-qr":
        if out.is_dir():
            raise VaultError(f"{out} is a folder: give a file name")
        if not force:
            exports.refuse_existing([out])
    vault = context.open()
    tokens = [entry.token for entry in vault.entries]
    if not tokens:
        raise VaultError("the vault holds no accounts to export")
    count = len(tokens)
    where = str(out)
    skipped: tuple[Skipped, ...] = ()
    if format == "otpauth":
        files = [(out, exports.otpauth_text(tokens))]
    elif format == "aegis":
        files = [(out, exports.aegis_vault(tokens, password=password))]
    elif format == "sparekey":
        files = [(out, exports.sparekey_backup(vault))]
    else:
        qr = exports.google_qr(tokens)
        skipped = qr.skipped
        paths = exports.google_qr_paths(out, len(qr.images))
        files = list(zip(paths, qr.images, strict=True))
        count = len(qr.exported)
        where = str(paths[0]) if len(paths) == 1 else f"{paths[0]} … {paths[-1].name}"
    exports.write_new_files(files, force=force)
    for left_out in skipped:
        typer.echo(f"Skipped {left_out.label}: {left_out.reason}", err=True)
    if format in exports.PLAINTEXT_FORMATS or (format == "aegis" and password is None):
        typer.echo(
            f"Warning: {where} holds the secrets in plain text: anyone who reads it can make "
            "your codes. Keep it safe and delete it once used.",
            err=True,
        )
    accounts = "account" if count == 1 else "accounts"
    typer.echo(f"Exported {count} {accounts} to {where} ({format}).", err=True)


def _export_password(format: str, password_file: Path | None, *, unencrypted: bool) -> str | None:
    """The aegis export's password (None: plain); options that do not fit the format fail."""
    if format != "aegis":
        if password_file is not None:
            why = (
                "a sparekey backup keeps the vault's password and recovery key"
                if format == "sparekey"
                else f"a {format} export cannot be encrypted"
            )
            raise VaultError(f"--export-password-file is for aegis exports only ({why})")
        if unencrypted:
            raise VaultError("--unencrypted is for aegis exports only")
        return None
    if password_file is not None and unencrypted:
        raise VaultError("give --export-password-file or --unencrypted, not both")
    if password_file is not None:
        return _first_line(password_file, "export password file")
    if not unencrypted:
        raise VaultError(
            "an Aegis export needs a password: give --export-password-file "
            "(or --unencrypted for a plain file)"
        )
    return None
