"""``sparekey-authenticator backup``: zero-knowledge backups on the user's Sparekey server.

``setup`` names the server, the user and the device token (kept inside the encrypted vault);
``push`` uploads the vault (If-Match, so two computers never overwrite each other unseen); ``pull``
merges the server's copy into this vault; ``restore`` puts a backup in place on a new computer,
opened with the password or the recovery key; ``status`` lists the versions the server keeps.
See :mod:`sparekey.authenticator.sync`.
"""

from __future__ import annotations

import getpass
import json
import os
from pathlib import Path
from typing import Annotated

import typer

from sparekey.authenticator import core
from sparekey.authenticator.cli import AppContext, _ctx, _first_line, _interactive
from sparekey.authenticator.sync import (
    BackupClient,
    ConflictError,
    SyncError,
    Target,
    upload_document,
)
from sparekey.authenticator.vault import Vault, VaultError, read_header

__all__ = ["backup_app"]

TOKEN_ENV = "SPAREKEY_DEVICE_TOKEN"  # noqa: S105 - the variable's name

backup_app: typer.Typer = typer.Typer(
    help="Encrypted backups of the vault on your Sparekey server (it never sees a key).",
    no_args_is_help=True,
)

Server = Annotated[str, typer.Option("--server", help="The Sparekey server's URL.")]
User = Annotated[str, typer.Option("--user", help="Your user id on that server.")]
TokenFile = Annotated[
    Path | None,
    typer.Option(help=f"A file holding the device token (or set ${TOKEN_ENV})."),
]


def _token(token_file: Path | None) -> str:
    if token_file is not None:
        return _first_line(token_file, "device token file")
    if os.environ.get(TOKEN_ENV):
        return os.environ[TOKEN_ENV]
    if _interactive():
        return getpass.getpass("Device token: ").strip()
    raise VaultError(f"give the device token with --token-file or ${TOKEN_ENV}")


@backup_app.command("setup")
def setup(ctx: typer.Context, server: Server, user: User, token_file: TokenFile = None) -> None:
    """Send this vault's backups to SERVER for USER, with a device token from that server."""
    context = _ctx(ctx)
    vault = context.open()
    target = Target(server=server, user=user, token=_token(token_file))
    with BackupClient(target) as client:
        client.versions()  # the token works, for this user
    core.update(context.store, vault, target.remember)
    typer.echo(f"Backups of this vault go to {server} (user {user}).", err=True)


@backup_app.command("push")
def push(
    ctx: typer.Context,
    force: Annotated[
        bool, typer.Option(help="Replace a newer backup from another computer.")
    ] = False,
) -> None:
    """Upload the vault as a new backup version."""
    context = _ctx(ctx)
    vault = context.open()
    target = Target.from_vault(vault)
    etag = vault.sync.get("etag")
    document = upload_document(context.store.read())
    with BackupClient(target) as client:
        try:
            info = client.upload(document, etag=etag if isinstance(etag, str) else None)
        except ConflictError:
            if not force:
                raise
            info = client.upload(document, etag=_latest_etag(client))
    core.update(
        context.store, vault, lambda fresh: fresh.sync.update(etag=info.etag, version=info.version)
    )
    typer.echo(
        f"Pushed backup version {info.version} ({info.size:,} bytes, encrypted) to "
        f"{target.server}.",
        err=True,
    )


@backup_app.command("pull")
def pull(ctx: typer.Context) -> None:
    """Merge the server's latest backup into this vault (entries added or edited elsewhere)."""
    context = _ctx(ctx)
    vault = context.open()
    target = Target.from_vault(vault)
    with BackupClient(target) as client:
        data, info = client.download()
    seen = vault.sync.get("version")
    if isinstance(seen, int) and info.version < seen:
        raise SyncError(
            f"the server offers backup version {info.version}, older than version {seen} this "
            "computer has already seen: refusing to go back"
        )
    if read_header(data).vault_id != vault.vault_id:
        raise SyncError("the server's backup is of another vault (use 'backup restore' instead)")
    other = Vault.decrypt(data, master_key=vault.master_key)
    changed: list[int] = []

    def merge(fresh: Vault) -> None:
        changed.append(fresh.merge(other))
        fresh.sync.update(etag=info.etag, version=info.version)

    core.update(context.store, vault, merge)
    typer.echo(
        f"Pulled backup version {info.version}: {changed[0]} entries changed here, "
        f"{len(vault.entries)} in the vault.",
        err=True,
    )


@backup_app.command("restore")
def restore(
    ctx: typer.Context,
    server: Server,
    user: User,
    token_file: TokenFile = None,
    version: Annotated[int | None, typer.Option(help="A version other than the latest.")] = None,
    force: Annotated[
        bool, typer.Option(help="Replace the vault here (it is kept as an earlier version).")
    ] = False,
) -> None:
    """Put a backup in place on this computer; it opens with the password or the recovery key."""
    context = _ctx(ctx)
    store = context.store
    if store.exists() and not force:
        raise VaultError(
            f"a vault already exists at {store.path}: restore into another --vault, or --force"
        )
    target = Target(server=server, user=user, token=_token(token_file))
    with BackupClient(target) as client:
        data, info = client.download(version)
    read_header(data)
    vault = _unlock_backup(context, data)
    target.remember(vault)
    vault.sync.update(etag=info.etag, version=info.version)
    with store.locked():
        store.write(vault)
    typer.echo(
        f"Restored {len(vault.entries)} accounts from backup version {info.version} "
        f"to {store.path}.",
        err=True,
    )
    if context.recovery_key_file is not None:
        typer.echo("Opened with the recovery key: set a new password with 'passwd'.", err=True)


@backup_app.command("status")
def status(
    ctx: typer.Context,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object on stdout.")] = False,
) -> None:
    """The server, and the backup versions it keeps."""
    context = _ctx(ctx)
    vault = context.open()
    target = Target.from_vault(vault)
    with BackupClient(target) as client:
        versions = client.versions()
    if as_json:
        typer.echo(
            json.dumps(
                {
                    "server": target.server,
                    "user": target.user,
                    "seen_version": vault.sync.get("version"),
                    "backups": versions,
                },
                indent=2,
            )
        )
        return
    typer.echo(
        f"Server {target.server}, user {target.user}; this computer last saw version "
        f"{vault.sync.get('version', 'none')}."
    )
    for backup in versions:
        typer.echo(
            f"  version {backup.get('version')}: {backup.get('size')} bytes, "
            f"{backup.get('created_at')}"
        )


def _latest_etag(client: BackupClient) -> str | None:
    try:
        return client.download()[1].etag
    except SyncError:
        return None  # no backup there any more


def _unlock_backup(context: AppContext, data: bytes) -> Vault:
    if context.recovery_key_file is not None:
        key = _first_line(context.recovery_key_file, "recovery key file")
        return Vault.unlock(data, recovery_key=key)
    password = context.password(prompt="The backup's vault password")
    if password is None:
        raise VaultError(
            "give the backup's password (--password-file or $SPAREKEY_VAULT_PASSWORD) or "
            "--recovery-key-file"
        )
    return Vault.unlock(data, password=password)
