"""``sparekey admin`` (operators) and ``sparekey recovery`` (cases, and breaking the glass).

Operators act through their personal token on the API; on the command line, with access to the
server, ``--operator NAME`` says who is at the keyboard, and the audit log records it came from
the command line. Four-eyes rules hold here exactly as on the API.
"""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path
from typing import Annotated

import typer

from sparekey.cli.common import OPERATOR, DataDir, fail, friendly_errors, open_sparekey
from sparekey.domain.models import CaseState, OperatorRole, RecoveryCase

__all__ = ["admin_app", "recovery_app"]

admin_app = typer.Typer(help="Operators: admins, helpdesk and auditors.", no_args_is_help=True)
recovery_app = typer.Typer(help="Recovery cases of locked-out users.", no_args_is_help=True)

OperatorName = Annotated[
    str, typer.Option("--operator", help="The operator doing this (see `sparekey admin list`)")
]


@admin_app.command("create")
@friendly_errors
def admin_create(
    name: Annotated[str, typer.Argument(help="Lowercase login name, e.g. alice")],
    role: Annotated[OperatorRole, typer.Option(help="admin, helpdesk or auditor")],
    user: Annotated[
        str | None, typer.Option(help="An existing user holding their factors [a new one]")
    ] = None,
    data_dir: DataDir = None,
) -> None:
    """Create an operator and their personal API token (printed once, alone on the last line)."""
    sparekey = open_sparekey(data_dir)
    try:
        made = sparekey.operators.create(name, role=role, user_id=user, caller=OPERATOR)
    finally:
        sparekey.close()
    typer.echo(
        f"Created {made.operator.role.value} {name} ({made.operator.id}); their factors live on "
        f"user {made.operator.user_id}. The token is shown only this once:",
        err=True,
    )
    typer.echo(made.token)


@admin_app.command("list")
@friendly_errors
def admin_list(data_dir: DataDir = None) -> None:
    sparekey = open_sparekey(data_dir)
    try:
        operators = sparekey.operators.list()
    finally:
        sparekey.close()
    typer.echo(f"{'ID':<22} {'NAME':<20} {'ROLE':<9} {'STATE':<9} USER")
    for op in operators:
        state = "disabled" if op.disabled_at else "active"
        typer.echo(f"{op.id:<22} {op.name:<20} {op.role.value:<9} {state:<9} {op.user_id}")


@admin_app.command("disable")
@friendly_errors
def admin_disable(name: str, data_dir: DataDir = None) -> None:
    """Disable an operator: their tokens stop working."""
    sparekey = open_sparekey(data_dir)
    try:
        sparekey.operators.disable(name, caller=OPERATOR)
    finally:
        sparekey.close()
    typer.echo(f"Disabled {name}.", err=True)


@admin_app.command("set-password")
@friendly_errors
def admin_set_password(
    name: str,
    password_file: Annotated[
        Path | None,
        typer.Option(
            "--password-file",
            help="Read the password from this file's first line [prompt twice]",
            exists=True,
            dir_okay=False,
            readable=True,
        ),
    ] = None,
    data_dir: DataDir = None,
) -> None:
    """Set an operator's admin-console password (only its Argon2id hash is stored)."""
    if password_file is not None:
        lines = password_file.read_text(encoding="utf-8").splitlines()
        password = lines[0] if lines else ""
    else:
        password = typer.prompt(
            f"Console password for {name}", hide_input=True, confirmation_prompt=True
        )
    sparekey = open_sparekey(data_dir)
    try:
        sparekey.operators.set_password(name, password, caller=OPERATOR)
    finally:
        sparekey.close()
    typer.echo(f"Set the console password of {name}.", err=True)


def _show(case: RecoveryCase) -> str:
    line = f"{case.id}  {case.user_id:<24} {case.state.value:<18} approvals "
    line += f"{len(case.approvals)}/{case.approvals_needed} ({case.approval})"
    if case.waiting_until and case.state is CaseState.WAITING:
        line += f"  ready at {case.waiting_until.isoformat()}"
    return line


@recovery_app.command("list")
@friendly_errors
def recovery_list(
    state: Annotated[CaseState | None, typer.Option(help="Only cases in this state")] = None,
    user: Annotated[str | None, typer.Option(help="Only this user's cases")] = None,
    data_dir: DataDir = None,
) -> None:
    """The recovery queue, newest first."""
    sparekey = open_sparekey(data_dir)
    try:
        cases = sparekey.recovery.cases(state=state, user_id=user)
    finally:
        sparekey.close()
    for case in cases:
        typer.echo(_show(case))


@recovery_app.command("show")
@friendly_errors
def recovery_show(case_id: str, data_dir: DataDir = None) -> None:
    sparekey = open_sparekey(data_dir)
    try:
        case = sparekey.recovery.get(case_id)
    finally:
        sparekey.close()
    typer.echo(json.dumps(dict(case.__dict__), default=str, indent=2))


@recovery_app.command("request")
@friendly_errors
def recovery_request(
    user_id: str,
    operator: OperatorName,
    reason: Annotated[str | None, typer.Option(help="What the user said happened")] = None,
    contacts: Annotated[bool, typer.Option(help="Approved by trusted contacts")] = False,
    data_dir: DataDir = None,
) -> None:
    sparekey = open_sparekey(data_dir)
    try:
        caller = sparekey.operators.caller(operator)
        case = sparekey.recovery.request(
            user_id, reason=reason, approval="contacts" if contacts else "admins", caller=caller
        )
    finally:
        sparekey.close()
    typer.echo(_show(case))


@recovery_app.command("verify-identity")
@friendly_errors
def recovery_verify_identity(
    case_id: str,
    operator: OperatorName,
    evidence: Annotated[list[str], typer.Option(help="A checklist item checked (repeat)")],
    data_dir: DataDir = None,
) -> None:
    sparekey = open_sparekey(data_dir)
    try:
        caller = sparekey.operators.caller(operator)
        case = sparekey.recovery.verify_identity(case_id, evidence=evidence, caller=caller)
    finally:
        sparekey.close()
    typer.echo(_show(case))


fallback_code_app = typer.Typer(
    help="An email/SMS code as identity evidence, before verify-identity.", no_args_is_help=True
)
recovery_app.add_typer(fallback_code_app, name="fallback-code")


@fallback_code_app.command("send")
@friendly_errors
def recovery_fallback_code_send(
    case_id: str,
    operator: OperatorName,
    factor: Annotated[
        str | None, typer.Option(help="The user's email/SMS factor [their only one]")
    ] = None,
    data_dir: DataDir = None,
) -> None:
    """Send a code to the user's email/SMS factor (even under fallback_only)."""
    sparekey = open_sparekey(data_dir)
    try:
        caller = sparekey.operators.caller(operator)
        sent = sparekey.recovery.send_fallback_code(case_id, factor_id=factor, caller=caller)
    finally:
        sparekey.close()
    typer.echo(
        f"Sent a code to {sent.destination} ({sent.factor_id}), valid until "
        f"{sent.expires_at.isoformat()}."
    )


@fallback_code_app.command("check")
@friendly_errors
def recovery_fallback_code_check(
    case_id: str,
    operator: OperatorName,
    code: Annotated[str, typer.Option(help="The code the user reads out")],
    data_dir: DataDir = None,
) -> None:
    """Spend the code; right: the case records `fallback_code` evidence (not a sign-in)."""
    sparekey = open_sparekey(data_dir)
    try:
        caller = sparekey.operators.caller(operator)
        case = sparekey.recovery.check_fallback_code(case_id, code=code, caller=caller)
    finally:
        sparekey.close()
    if case is None:
        fail("the code is not right (or was used, or expired); the attempt was counted")
    else:
        typer.echo(_show(case))


@recovery_app.command("approve")
@friendly_errors
def recovery_approve(case_id: str, operator: OperatorName, data_dir: DataDir = None) -> None:
    sparekey = open_sparekey(data_dir)
    try:
        case = sparekey.recovery.approve(case_id, caller=sparekey.operators.caller(operator))
    finally:
        sparekey.close()
    typer.echo(_show(case))


def _close(
    case_id: str, operator: str, reason: str | None, data_dir: Path | None, how: str
) -> None:
    sparekey = open_sparekey(data_dir)
    try:
        caller = sparekey.operators.caller(operator)
        close = sparekey.recovery.deny if how == "deny" else sparekey.recovery.cancel
        case = close(case_id, reason=reason, caller=caller)
    finally:
        sparekey.close()
    typer.echo(_show(case))


@recovery_app.command("deny")
@friendly_errors
def recovery_deny(
    case_id: str,
    operator: OperatorName,
    reason: Annotated[str | None, typer.Option()] = None,
    data_dir: DataDir = None,
) -> None:
    """Refuse a case (admins)."""
    _close(case_id, operator, reason, data_dir, "deny")


@recovery_app.command("cancel")
@friendly_errors
def recovery_cancel(
    case_id: str,
    operator: OperatorName,
    reason: Annotated[str | None, typer.Option()] = None,
    data_dir: DataDir = None,
) -> None:
    """Stop a case for good."""
    _close(case_id, operator, reason, data_dir, "cancel")


@recovery_app.command("issue-pass")
@friendly_errors
def recovery_issue_pass(
    case_id: str,
    operator: OperatorName,
    minutes: Annotated[int, typer.Option(min=5, max=480, help="Lifetime of the pass")] = 60,
    data_dir: DataDir = None,
) -> None:
    """Issue the temporary access pass of a ready case (printed once, alone on the last line)."""
    sparekey = open_sparekey(data_dir)
    try:
        caller = sparekey.operators.caller(operator)
        issued = sparekey.recovery.issue_pass(
            case_id, lifetime=timedelta(minutes=minutes), caller=caller
        )
    finally:
        sparekey.close()
    typer.echo(
        f"Temporary access pass for {issued.case.user_id}, single use, valid until "
        f"{issued.expires_at.isoformat()}. Shown only this once:",
        err=True,
    )
    typer.echo(issued.access_pass)


@recovery_app.command("break-glass")
@friendly_errors
def recovery_break_glass(
    user_id: str,
    reason: Annotated[str, typer.Option(help="Why no approval and no waiting period")],
    operator: Annotated[
        str | None, typer.Option("--operator", help="Who is at the keyboard, if an operator")
    ] = None,
    data_dir: DataDir = None,
) -> None:
    """Emergency: a temporary access pass with no approval and no wait, for when no second admin
    can approve (the last admin lost their factor). Loudly audited and notified."""
    sparekey = open_sparekey(data_dir)
    try:
        caller = OPERATOR if operator is None else sparekey.operators.caller(operator)
        issued = sparekey.recovery.break_glass(user_id, reason=reason, caller=caller)
    finally:
        sparekey.close()
    typer.echo(
        f"BREAK GLASS: recovery case {issued.case.id} for {user_id} skipped approval and the "
        "waiting period; this is in the audit log and the user was notified. Pass, shown once:",
        err=True,
    )
    typer.echo(issued.access_pass)
