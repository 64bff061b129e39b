"""``sparekey keys``: the key hierarchy's status, rotations, and retiring old KEKs."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from sparekey.cli.common import OPERATOR, DataDir, friendly_errors, open_sparekey
from sparekey.crypto.keyring import KeyPurpose

__all__ = ["keys_app"]

keys_app = typer.Typer(help="The key hierarchy: status and rotation.", no_args_is_help=True)


@keys_app.command("status")
@friendly_errors
def keys_status(data_dir: DataDir = None) -> None:
    """Each data key: its purpose, state, how many records it protects, and the KEK wrapping it."""
    sparekey = open_sparekey(data_dir)
    try:
        keys = sparekey.keys.status()
        keks = sparekey.keys.keks_in_use()
        current = sparekey.keyring.wrapping_provider.kek_id
    finally:
        sparekey.close()
    typer.echo(f"{'ID':>4}  {'PURPOSE':<11} {'STATE':<11} {'RECORDS':>9}  KEK")
    for key in keys:
        kek = key.kek_id if key.state != "public-only" else "-"
        line = f"{key.id:>4}  {key.purpose.value:<11} {key.state:<11} {key.records:>9}  {kek}"
        typer.echo(line)
    typer.echo("")
    for kek_id, count in sorted(keks.items()):
        marker = " (current)" if kek_id == current else ""
        typer.echo(f"KEK {kek_id}{marker} wraps {count} data keys")


@keys_app.command("rotate-kek")
@friendly_errors
def rotate_kek(
    data_dir: DataDir = None,
    to: Annotated[
        str | None,
        typer.Option(help="Move to another provider: file, pkcs11 or aws-kms [the current one]"),
    ] = None,
    pkcs11_key_label: Annotated[
        str, typer.Option(help="Label of the new key in the token [<pkcs11_key_label>-<time>]")
    ] = "",
    aws_kms_key_id: Annotated[
        str, typer.Option(help="The KMS key to move to (create it in AWS first)")
    ] = "",
) -> None:
    """Rewrap every data key under a new key-encryption key, in one transaction.

    The new KEK is a new key in the same place unless --to names another provider (whose
    settings, such as pkcs11_token_label, come from the usual settings). The old KEK is kept,
    retired: backups taken before now still need it. Remove it with `keys destroy-kek`.
    """
    sparekey = open_sparekey(data_dir)
    try:
        new = sparekey.new_kek(to, label=pkcs11_key_label, key_id=aws_kms_key_id)
        rotation = sparekey.keys.rotate_kek(new, caller=OPERATOR)
    finally:
        sparekey.close()
    typer.echo(
        f"{rotation.data_keys} data keys are now wrapped by {rotation.current} "
        f"(before: {', '.join(rotation.previous)})."
    )
    typer.echo(
        "The previous KEK is retired but kept: backups taken before now need it to restore. "
        "Remove it with `sparekey keys destroy-kek ID` once no such backup is kept.",
        err=True,
    )
    kind = rotation.current.partition(":")[0]
    if any(not kek.startswith(kind + ":") for kek in rotation.previous):
        typer.echo(
            f"Set key_provider = {kind!r} (and its settings) on every node, so that a new "
            "deployment made from these settings uses it too.",
            err=True,
        )


@keys_app.command("destroy-kek")
@friendly_errors
def destroy_kek(
    kek_id: Annotated[str, typer.Argument(help="The retired KEK, as `keys status` names it")],
    data_dir: DataDir = None,
    yes: Annotated[bool, typer.Option("--yes", help="Do not ask for confirmation")] = False,
) -> None:
    """Destroy a retired KEK. Backups taken while it was current can no longer be restored."""
    if not yes:
        typer.confirm(
            f"Destroy {kek_id}? Backups taken while it was current become unrecoverable",
            abort=True,
        )
    sparekey = open_sparekey(data_dir)
    try:
        sparekey.destroy_kek(kek_id, caller=OPERATOR)
    finally:
        sparekey.close()
    typer.echo(f"Destroyed {kek_id}.")


@keys_app.command("rotate-dek")
@friendly_errors
def rotate_dek(
    data_dir: DataDir = None,
    purpose: Annotated[
        KeyPurpose, typer.Option(help="Which data key: encryption, mac or signing")
    ] = KeyPurpose.ENCRYPTION,
    batch_size: Annotated[int, typer.Option(min=1, help="Records per transaction")] = 500,
    pause: Annotated[
        float, typer.Option(min=0.0, help="Seconds to rest between batches, to spare the database")
    ] = 0.0,
) -> None:
    """Make a new data key active at once, then re-encrypt existing secrets in batches while the
    server keeps serving. Safe to interrupt: running it again resumes where it stopped. Old keys
    are destroyed once no record uses them (MAC keys: when their hashes are used up or replaced;
    signing keys keep their public half for `audit verify`)."""
    sparekey = open_sparekey(data_dir)
    try:
        with Progress(
            TextColumn("re-encrypting"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeRemainingColumn(),
            console=None,
            transient=False,
            disable=purpose is not KeyPurpose.ENCRYPTION,
        ) as bar:
            task = bar.add_task("re-encrypting", total=None)

            def progress(done: int, total: int) -> None:
                bar.update(task, completed=done, total=total)

            rotation = sparekey.keys.rotate_dek(
                purpose,
                caller=OPERATOR,
                batch_size=batch_size,
                pause_seconds=pause,
                progress=progress,
            )
    finally:
        sparekey.close()
    verb = "Resumed the rotation to" if rotation.resumed else "New"
    typer.echo(f"{verb} {purpose.value} key {rotation.key_id} is active.")
    if purpose is KeyPurpose.ENCRYPTION:
        typer.echo(f"Re-encrypted {rotation.reencrypted} secrets.")
    if rotation.retired:
        typer.echo(f"Retired keys: {', '.join(str(k) for k in rotation.retired)}.")
