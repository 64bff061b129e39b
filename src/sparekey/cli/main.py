"""``sparekey``: set up, run and administer a Sparekey server.

Every command reads the same settings (``--data-dir`` or ``$SPAREKEY_DATA_DIR``, then
``sparekey.toml`` there, then ``SPAREKEY_*`` variables).
Failures print one line to stderr and exit 1.
"""

from __future__ import annotations

import json
import logging
import signal
import threading
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path
from types import FrameType
from typing import Annotated

import typer

from sparekey.cli.backup import backup_app
from sparekey.cli.common import OPERATOR, DataDir, fail, friendly_errors, open_sparekey
from sparekey.cli.device_tokens import device_token_app
from sparekey.cli.keys import keys_app
from sparekey.cli.readiness import readiness
from sparekey.cli.recovery import admin_app, recovery_app
from sparekey.domain.models import AuditRecord, Scope
from sparekey.runtime import InitResult, Sparekey, initialize, migrate_schema, open_database
from sparekey.services.audit import Sealer
from sparekey.settings import Settings, load_settings
from sparekey.storage.database import Checkpointer

app = typer.Typer(
    help="Sparekey: two-factor authentication with backup and recovery built in.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
apikey_app = typer.Typer(help="Create, list and revoke API keys.", no_args_is_help=True)
app.add_typer(apikey_app, name="apikey")
audit_app = typer.Typer(help="Seal, verify and export the audit log.", no_args_is_help=True)
app.add_typer(audit_app, name="audit")
app.add_typer(keys_app, name="keys")
users_app = typer.Typer(help="Personal data of users.", no_args_is_help=True)
app.add_typer(users_app, name="users")
app.add_typer(backup_app, name="backup")
app.add_typer(admin_app, name="admin")
app.add_typer(recovery_app, name="recovery")
app.add_typer(device_token_app, name="device-token")
app.command("readiness")(readiness)


def _announce(result: InitResult, settings: Settings) -> None:
    if result.schema_note:
        typer.echo(f"Note: {result.schema_note}", err=True)
    if result.created:
        typer.echo(f"Created a new Sparekey deployment in {settings.data_dir}", err=True)
    if result.admin_token:
        typer.echo(
            "An admin API key was created. It is shown only this once; store it now:", err=True
        )
        typer.echo(result.admin_token)


@app.command()
@friendly_errors
def init(data_dir: DataDir = None) -> None:
    """Create the data directory, database, key file and a first admin API key. Idempotent."""
    settings = load_settings(data_dir)
    result = initialize(settings)
    _announce(result, settings)
    if not result.created and not result.admin_token:
        typer.echo(f"Sparekey is already set up in {settings.data_dir}; nothing to do.", err=True)


@app.command()
@friendly_errors
def serve(
    data_dir: DataDir = None,
    host: Annotated[str | None, typer.Option(help="Address to listen on [127.0.0.1]")] = None,
    port: Annotated[int | None, typer.Option(help="Port to listen on [8000]")] = None,
) -> None:
    """Run the HTTP API (initializing the data directory on first run)."""
    import uvicorn

    from sparekey.api import create_app

    settings = load_settings(data_dir, host=host, port=port)
    _announce(initialize(settings), settings)
    sparekey = Sparekey.open(settings)
    interval = settings.audit_seal_interval_seconds
    # SQLite seals on the serving loop (see sparekey.api.sealing); PostgreSQL in a thread.
    sealer = None if sparekey.db.is_sqlite else Sealer(sparekey.audit, interval=interval)
    if sealer is not None:
        sealer.start()
    checkpointer = Checkpointer(sparekey.db)
    checkpointer.start()
    delivery = sparekey.delivery if settings.run_worker and sparekey.delivery.enabled else None
    if delivery is not None:
        delivery.start()
    url = settings.resolved_public_url
    typer.echo(f"Sparekey is serving on {url}  (API docs: {url}/docs)", err=True)
    try:
        uvicorn.run(
            create_app(sparekey, seal_interval=interval, freeze_startup_objects=True),
            host=settings.host,
            port=settings.port,
            log_level=settings.log_level,
            access_log=settings.access_log,
            server_header=False,
            timeout_keep_alive=settings.keep_alive_seconds,
            proxy_headers=True,
            forwarded_allow_ips=settings.forwarded_allow_ips,
        )
    finally:
        if delivery is not None:
            delivery.stop()
        if sealer is not None:
            sealer.stop()
        checkpointer.stop()
        sparekey.close()


@app.command()
@friendly_errors
def migrate(
    data_dir: DataDir = None,
    contract: Annotated[
        bool,
        typer.Option(
            "--contract",
            help="Also run contract migrations (drops, renames): only once no node runs an "
            "older release",
        ),
    ] = False,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Say what would run; change nothing")
    ] = False,
) -> None:
    """Bring the database schema up to this release, once, from one place.

    Without --contract only expand migrations run: nodes of the release before keep serving.
    Run it before rolling the nodes; run it with --contract once no older node is left.
    """
    settings = load_settings(data_dir)
    if dry_run:
        db = open_database(settings)
        try:
            status = db.schema_status()
        finally:
            db.dispose()
        refusal = status.refusal()
        if refusal is not None:
            fail(refusal)
        typer.echo(status.describe())
        target = status.upgrade_target(contract=contract)
        for migration in status.pending:
            would = target is not None and status.revisions.index(
                migration.revision
            ) <= status.revisions.index(target)
            verb = "would apply" if would else "waits for --contract:"
            typer.echo(f"  {verb} {migration.revision} ({migration.kind}) {migration.title}")
        return
    upgrade = migrate_schema(settings, contract=contract)
    for migration in upgrade.applied:
        typer.echo(f"Applied {migration.revision} ({migration.kind}): {migration.title}", err=True)
    after = upgrade.after
    if not upgrade.applied:
        typer.echo(f"Nothing to migrate: {after.describe()}", err=True)
    else:
        typer.echo(f"Done: {after.describe()}", err=True)
    note = after.contracts_note()
    if note:
        typer.echo(f"Note: {note}", err=True)


@app.command()
@friendly_errors
def worker(data_dir: DataDir = None) -> None:
    """Deliver security notifications (email, webhooks) until SIGINT or SIGTERM.

    `sparekey serve` delivers them itself unless run_worker is false; any number of workers
    and servers may deliver from one database at once.
    """
    sparekey = open_sparekey(data_dir)
    settings = sparekey.settings
    logging.basicConfig(
        level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    stopping = threading.Event()

    def _stop(signum: int, frame: FrameType | None) -> None:
        stopping.set()

    previous = {sig: signal.signal(sig, _stop) for sig in (signal.SIGINT, signal.SIGTERM)}
    channels = ", ".join(sorted(sparekey.delivery.channels)) or (
        "none configured: set SPAREKEY_SMTP_HOST or SPAREKEY_WEBHOOK_URL"
    )
    typer.echo(f"Sparekey worker delivering notifications ({channels})", err=True)
    sparekey.delivery.start()
    try:
        while not stopping.wait(1.0):
            pass
    finally:
        sparekey.delivery.stop()
        sparekey.close()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    typer.echo("Sparekey worker stopped", err=True)


@apikey_app.command("create")
@friendly_errors
def apikey_create(
    name: Annotated[str, typer.Argument(help="Who or what will use the key")],
    scope: Annotated[
        list[Scope],
        typer.Option(
            "--scope", help="verify, manage or admin; repeat for several", show_default=False
        ),
    ],
    data_dir: DataDir = None,
) -> None:
    """Create an API key. The key is printed once, alone on the last line."""
    sparekey = open_sparekey(data_dir)
    try:
        created = sparekey.api_keys.create(name=name, scopes=scope, caller=OPERATOR)
    finally:
        sparekey.close()
    scopes = ",".join(sorted(s.value for s in created.key.scopes))
    typer.echo(f"Created API key {created.key.id} ({created.key.name}; scopes: {scopes})", err=True)
    typer.echo(created.token)


@apikey_app.command("list")
@friendly_errors
def apikey_list(data_dir: DataDir = None) -> None:
    """List API keys (never their secrets)."""
    sparekey = open_sparekey(data_dir)
    try:
        keys = sparekey.api_keys.list()
    finally:
        sparekey.close()
    typer.echo(f"{'ID':<16} {'NAME':<24} {'SCOPES':<22} {'CREATED':<20} REVOKED")
    for key in keys:
        scopes = ",".join(sorted(s.value for s in key.scopes))
        revoked = key.revoked_at.strftime("%Y-%m-%d %H:%M") if key.revoked_at else "-"
        created = key.created_at.strftime("%Y-%m-%d %H:%M")
        typer.echo(f"{key.id:<16} {key.name:<24} {scopes:<22} {created:<20} {revoked}")


@apikey_app.command("revoke")
@friendly_errors
def apikey_revoke(
    key_id: Annotated[str, typer.Argument(help="The id shown by `sparekey apikey list`")],
    data_dir: DataDir = None,
) -> None:
    """Revoke an API key; it stops working at once on this node, within seconds on others."""
    sparekey = open_sparekey(data_dir)
    try:
        key = sparekey.api_keys.revoke(key_id, caller=OPERATOR)
    finally:
        sparekey.close()
    typer.echo(f"Revoked API key {key.id} ({key.name})", err=True)


@users_app.command("erase")
@friendly_errors
def users_erase(
    user_id: Annotated[str, typer.Argument(help="A deleted user's id")],
    data_dir: DataDir = None,
) -> None:
    """Blank a deleted user's id, IP and user agent in the audit log (the chain still verifies)."""
    sparekey = open_sparekey(data_dir)
    try:
        erased = sparekey.audit.erase_user(user_id, caller=OPERATOR)
    finally:
        sparekey.close()
    typer.echo(f"Erased personal data from {erased} audit records", err=True)


@audit_app.command("seal")
@friendly_errors
def audit_seal(data_dir: DataDir = None) -> None:
    """Chain and sign every record not sealed yet (the server does this every second)."""
    sparekey = open_sparekey(data_dir)
    try:
        sealed = sparekey.audit.seal_all()
    finally:
        sparekey.close()
    typer.echo(f"Sealed {sealed} audit records", err=True)


@audit_app.command("verify")
@friendly_errors
def audit_verify(
    data_dir: DataDir = None,
    seal: Annotated[bool, typer.Option(help="Seal pending records first")] = True,
) -> None:
    """Check every record, the chain and the signed checkpoints; exit 1 at the first bad record."""
    sparekey = open_sparekey(data_dir)
    try:
        if seal:
            sparekey.audit.seal_all()
        report = sparekey.audit.verify()
    finally:
        sparekey.close()
    if not report.ok:
        fail(f"audit log does not verify: {report.problem}")
    typer.echo(
        f"Audit log verified: {report.sealed} sealed records, {report.unsealed} unsealed, "
        f"{report.checkpoints} signed checkpoints"
    )


@audit_app.command("export")
@friendly_errors
def audit_export(
    data_dir: DataDir = None,
    output_format: Annotated[str, typer.Option("--format", help="jsonl")] = "jsonl",
    user: Annotated[str | None, typer.Option(help="Only this user's records")] = None,
    since: Annotated[datetime | None, typer.Option(help="From this time (UTC)")] = None,
    until: Annotated[datetime | None, typer.Option(help="Until this time (UTC)")] = None,
) -> None:
    """Stream audit records, oldest first, one JSON object per line."""
    if output_format != "jsonl":
        fail(f"unknown format {output_format!r}; the one format is jsonl")
    sparekey = open_sparekey(data_dir)
    try:
        records = sparekey.audit.export(user_id=user, since=_utc(since), until=_utc(until))
        for record in records:
            typer.echo(_jsonl(record))
    finally:
        sparekey.close()


@audit_app.command("prune")
@friendly_errors
def audit_prune(
    before: Annotated[datetime, typer.Option(help="Delete sealed records older than this (UTC)")],
    archive: Annotated[
        Path | None, typer.Option(help="Write the records to this JSONL file first")
    ] = None,
    data_dir: DataDir = None,
) -> None:
    """Archive and delete old records in batches; a signed checkpoint anchors what remains."""
    cutoff = _utc(before)
    assert cutoff is not None
    sparekey = open_sparekey(data_dir)
    try:
        if archive is not None:
            with archive.open("x", encoding="utf-8") as out:
                for record in sparekey.audit.export(until=cutoff):
                    if record.seq is not None:
                        out.write(_jsonl(record) + "\n")
        result = sparekey.audit.prune(before=cutoff)
    finally:
        sparekey.close()
    anchor = f"; the chain now starts after seq {result.anchor_seq}" if result.anchor_seq else ""
    typer.echo(f"Pruned {result.deleted} audit records{anchor}", err=True)


def _jsonl(record: AuditRecord) -> str:
    line = {**asdict(record), "occurred_at": record.occurred_at.isoformat()}
    return json.dumps(line, separators=(",", ":"))


def _utc(moment: datetime | None) -> datetime | None:
    if moment is None or moment.tzinfo is not None:
        return moment
    return moment.replace(tzinfo=UTC)


def main() -> None:
    app(prog_name="sparekey")


if __name__ == "__main__":
    main()
