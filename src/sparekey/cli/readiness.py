"""``sparekey readiness``: the organisation's recovery readiness, as a table, JSON or CSV.

The same report as ``GET /v1/readiness`` (JSON has the same members), computed set-based in the
database: how many users are one lost device from lockout, admins without a security key or
passkey, the distribution of scores, and the actions worth most points.
"""

from __future__ import annotations

import csv
import json
import sys
from dataclasses import asdict
from datetime import datetime
from enum import StrEnum
from typing import Annotated

import typer

from sparekey.cli.common import DataDir, friendly_errors, open_sparekey
from sparekey.domain.readiness import OrgReadiness

__all__ = ["readiness"]


class Format(StrEnum):
    TABLE = "table"
    JSON = "json"
    CSV = "csv"


@friendly_errors
def readiness(
    data_dir: DataDir = None,
    output: Annotated[
        Format, typer.Option("--format", help="table (for people), json or csv")
    ] = Format.TABLE,
) -> None:
    """Recovery readiness of every user: lockout risk, admins, scores, top actions."""
    sparekey = open_sparekey(data_dir)
    try:
        report = sparekey.readiness.report()
    finally:
        sparekey.close()
    if output is Format.JSON:
        typer.echo(json.dumps(asdict(report), default=_iso, indent=2))
    elif output is Format.CSV:
        _write_csv(report)
    else:
        _write_table(report)


def _iso(value: object) -> str:
    if isinstance(value, datetime):
        return value.isoformat().replace("+00:00", "Z")
    raise TypeError(f"cannot write {type(value).__name__} as JSON")


def _band(low: int, high: int) -> str:
    return str(low) if low == high else f"{low}-{high}"


def _share(part: int, whole: int) -> str:
    return f"{100 * part / whole:.1f}%" if whole else "-"


def _write_csv(report: OrgReadiness) -> None:
    """Long format, one fact per row: ``section,item,value,impact``."""
    out = csv.writer(sys.stdout, lineterminator="\n")
    out.writerow(["section", "item", "value", "impact"])
    summary: list[tuple[str, object]] = [
        ("users", report.users),
        ("one_device_from_lockout", report.one_device_from_lockout),
        ("no_way_in", report.no_way_in),
        ("mean_score", report.mean_score),
        ("median_score", report.median_score),
        ("admins", report.admins),
        ("admins_without_phishing_resistant", len(report.admins_without_phishing_resistant)),
    ]
    out.writerows(["summary", name, value, ""] for name, value in summary)
    out.writerows(["score", _band(b.low, b.high), b.users, ""] for b in report.scores)
    out.writerows(["action", a.id, a.users, a.impact] for a in report.actions)
    out.writerows(
        ["admin_without_phishing_resistant", name, "", ""]
        for name in report.admins_without_phishing_resistant
    )
    sys.stdout.flush()


def _write_table(report: OrgReadiness) -> None:
    users = report.users
    at = report.generated_at.strftime("%Y-%m-%d %H:%M UTC")
    lines = [
        f"Recovery readiness of {users:,} user{'' if users == 1 else 's'} at {at}",
        f"  one lost device from lockout  {report.one_device_from_lockout:>10,}  "
        f"{_share(report.one_device_from_lockout, users)}",
        f"  no way in                     {report.no_way_in:>10,}  "
        f"{_share(report.no_way_in, users)}",
        f"  score                         mean {report.mean_score}, median {report.median_score}",
    ]
    unprotected = report.admins_without_phishing_resistant
    admins = f"  admins without a security key or passkey: {len(unprotected)} of {report.admins}"
    lines.append(admins + (f" ({', '.join(unprotected)})" if unprotected else ""))
    lines += ["", f"{'SCORE':<8} {'USERS':>10}  SHARE"]
    lines += [
        f"{_band(b.low, b.high):<8} {b.users:>10,}  {_share(b.users, users)}" for b in report.scores
    ]
    lines += ["", f"{'ACTION':<30} {'USERS':>10} {'IMPACT':>6} {'POINTS':>12}  TITLE"]
    lines += [
        f"{a.id:<30} {a.users:>10,} {a.impact:>6} {a.points:>12,}  {a.title}"
        for a in report.actions
    ]
    typer.echo("\n".join(lines))
