"""``sparekey backup create|verify|restore``: encrypted disaster-recovery backups.

A backup is useless without the KEK it names (the key file, the HSM token, the KMS key): keep the
two apart, and both safe. ``verify`` and ``restore`` need that KEK and nothing else.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
)
from rich.progress import Progress as ProgressBar

from sparekey.cli.common import OPERATOR, DataDir, friendly_errors, open_sparekey
from sparekey.domain.ports import SystemClock
from sparekey.runtime import kek_resolver, open_database
from sparekey.services.backup import (
    Manifest,
    Progress,
    create_backup,
    kek_keyring,
    restore_backup,
    verify_backup,
)
from sparekey.settings import Settings, SettingsError, load_settings

__all__ = ["backup_app"]

backup_app = typer.Typer(
    help="Encrypted backups: create one while the server runs, verify it, restore it.",
    no_args_is_help=True,
)

BackupFile = Annotated[Path, typer.Argument(help="The backup file", show_default=False)]


@backup_app.command("create")
@friendly_errors
def backup_create(file: BackupFile, data_dir: DataDir = None) -> None:
    """Write a consistent, encrypted snapshot to FILE (a new file, mode 0600) while serving."""
    sparekey = open_sparekey(data_dir)
    try:
        with _progress() as progress:
            manifest = create_backup(
                file,
                db=sparekey.db,
                keyring=sparekey.keyring,
                auditor=sparekey.audit,
                clock=sparekey.clock,
                caller=OPERATOR,
                progress=progress,
            )
    finally:
        sparekey.close()
    typer.echo(
        f"Backed up {manifest.rows} rows to {file}, encrypted under {manifest.kek_id}; "
        "keep it apart from that key: one is useless without the other",
        err=True,
    )


@backup_app.command("verify")
@friendly_errors
def backup_verify(file: BackupFile, data_dir: DataDir = None) -> None:
    """Decrypt and check all of FILE with this deployment's KEK; print what it holds."""
    settings = load_settings(data_dir)
    _require_kek(settings, "verify")
    with _progress() as progress:
        manifest = verify_backup(
            file, keyring=kek_keyring(kek_resolver(settings)), progress=progress
        )
    typer.echo(f"Backup verified: {file}")
    _describe(manifest)


@backup_app.command("restore")
@friendly_errors
def backup_restore(file: BackupFile, data_dir: DataDir = None) -> None:
    """Restore FILE into a fresh data directory or an empty database.

    The KEK must be reachable first: copy the key file from where you keep it into the data
    directory (or configure the HSM or KMS settings) before restoring.
    """
    settings = load_settings(data_dir)
    _require_kek(settings, "restore")
    db = open_database(settings)
    try:
        with _progress() as progress:
            manifest = restore_backup(
                file,
                db=db,
                resolve_kek=kek_resolver(settings),
                clock=SystemClock(),
                caller=OPERATOR,
                progress=progress,
            )
    finally:
        db.dispose()
    os.chmod(settings.data_dir, 0o700)
    typer.echo(
        f"Restored {manifest.rows} rows from the backup of {manifest.created_at:%Y-%m-%d %H:%M} "
        f"UTC into {settings.data_dir}; start it with `sparekey serve`",
        err=True,
    )


def _require_kek(settings: Settings, action: str) -> None:
    if settings.key_provider == "file" and not settings.resolved_key_file.exists():
        path = settings.resolved_key_file
        raise SettingsError(
            f"no key file at {path}; to {action} a backup, copy the key file it was made with "
            f"(from where you keep it, apart from the backups) to {path}"
        )


def _describe(manifest: Manifest) -> None:
    typer.echo(
        f"made {manifest.created_at:%Y-%m-%d %H:%M:%S} UTC by Sparekey {manifest.sparekey_version}"
        f" from {manifest.dialect} (schema {manifest.schema_revision}); key wrapped by "
        f"{manifest.kek_id}"
    )
    typer.echo(f"{'TABLE':<20} {'ROWS':>10}")
    for name, rows in sorted(manifest.tables.items()):
        typer.echo(f"{name:<20} {rows:>10}")
    typer.echo(f"{'total':<20} {manifest.rows:>10}")


@contextmanager
def _progress() -> Iterator[Progress | None]:
    """A progress bar on stderr when it is a terminal; nothing otherwise."""
    console = Console(stderr=True)
    if not console.is_terminal:
        yield None
        return
    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
    )
    with ProgressBar(*columns, console=console, transient=True) as bar:
        tasks: dict[str, TaskID] = {}

        def update(phase: str, done: int, total: int) -> None:
            if phase not in tasks:
                tasks[phase] = bar.add_task(phase, total=total)
            bar.update(tasks[phase], completed=done)

        yield update
