"""``sparekey device-token``: device tokens of users' desktop authenticators (vault backups).

The operator at the server's command line acts directly, so creating a token asks for no
step-up; it is recorded as the command line's administrative override (``assurance.overridden``)
and as ``device_token.created`` by ``operator:cli``, and the user is notified as on the API.
"""

from __future__ import annotations

from typing import Annotated

import typer

from sparekey.cli.common import OPERATOR, DataDir, friendly_errors, open_sparekey
from sparekey.services.assurance import Assurance

__all__ = ["device_token_app"]

device_token_app = typer.Typer(
    help="Device tokens: desktop authenticators' access to their user's vault backups.",
    no_args_is_help=True,
)

UserId = Annotated[str, typer.Argument(help="The user's id")]
_DIRECT = Assurance(override=True, reason="sparekey command line: the operator acts directly")


@device_token_app.command("create")
@friendly_errors
def device_token_create(
    user_id: UserId,
    name: Annotated[str, typer.Option(help="Which computer will hold it")] = "Desktop",
    data_dir: DataDir = None,
) -> None:
    """Create a device token for USER. The token is printed once, alone on the last line."""
    sparekey = open_sparekey(data_dir)
    try:
        made = sparekey.device_tokens.create(user_id, name=name, caller=OPERATOR, assurance=_DIRECT)
        server = sparekey.settings.resolved_public_url
    finally:
        sparekey.close()
    token = made.device_token
    typer.echo(
        f"Created device token {token.id} ({token.name}) for user {user_id}; the user was "
        "notified. On their computer: skauth backup restore --server "
        f"{server} --user {user_id} --token-file FILE. The token is shown only this once:",
        err=True,
    )
    typer.echo(made.token)


@device_token_app.command("list")
@friendly_errors
def device_token_list(user_id: UserId, data_dir: DataDir = None) -> None:
    """List USER's device tokens (never the tokens themselves)."""
    sparekey = open_sparekey(data_dir)
    try:
        tokens = sparekey.device_tokens.list(user_id)
    finally:
        sparekey.close()
    typer.echo(f"{'ID':<22} {'NAME':<24} {'CREATED':<17} {'LAST USED':<17} REVOKED")
    for t in tokens:
        created = t.created_at.strftime("%Y-%m-%d %H:%M")
        used = t.last_used_at.strftime("%Y-%m-%d %H:%M") if t.last_used_at else "-"
        revoked = t.revoked_at.strftime("%Y-%m-%d %H:%M") if t.revoked_at else "-"
        typer.echo(f"{t.id:<22} {t.name:<24} {created:<17} {used:<17} {revoked}")


@device_token_app.command("revoke")
@friendly_errors
def device_token_revoke(
    user_id: UserId,
    token_id: Annotated[str, typer.Argument(help="The id shown by `sparekey device-token list`")],
    data_dir: DataDir = None,
) -> None:
    """Revoke a device token: it stops working at once; the user is notified."""
    sparekey = open_sparekey(data_dir)
    try:
        token = sparekey.device_tokens.revoke(user_id, token_id, caller=OPERATOR)
    finally:
        sparekey.close()
    typer.echo(f"Revoked device token {token.id} ({token.name}) of user {user_id}", err=True)
