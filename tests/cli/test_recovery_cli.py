"""`sparekey admin` and `sparekey recovery` as real processes."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

from tests.cli.test_cli import run


def test_operators_and_a_case_on_the_command_line(tmp_path: Path) -> None:
    data = tmp_path / "data"
    assert run("init", data_dir=data).returncode == 0
    made = run("admin", "create", "ada", "--role", "admin", data_dir=data)
    assert made.returncode == 0, made.stderr
    assert made.stdout.strip().startswith("sk_"), "the token alone on stdout"
    assert run("admin", "create", "hank", "--role", "helpdesk", data_dir=data).returncode == 0
    listed = run("admin", "list", data_dir=data).stdout
    assert "ada" in listed
    assert "helpdesk" in listed

    again = run("admin", "create", "ada", "--role", "admin", data_dir=data)
    assert again.returncode == 1
    assert again.stderr.count("\n") == 1
    assert "exists" in again.stderr

    # The operator's own user record is where a case can be opened for them.
    opened = run("recovery", "request", "operator:ada", "--operator", "hank", data_dir=data)
    assert opened.returncode == 0, opened.stderr
    case_id = opened.stdout.split()[0]
    own = run("recovery", "approve", case_id, "--operator", "hank", data_dir=data)
    assert own.returncode == 1
    assert "only an operator with the role admin" in own.stderr
    shown = json.loads(run("recovery", "show", case_id, data_dir=data).stdout)
    assert shown["state"] == "requested"


def test_break_glass_is_loud(tmp_path: Path) -> None:
    data = tmp_path / "data"
    run("init", data_dir=data)
    run("admin", "create", "ada", "--role", "admin", data_dir=data)
    refused = run("recovery", "break-glass", "operator:ada", "--reason", " ", data_dir=data)
    assert refused.returncode == 1
    broken = run(
        "recovery",
        "break-glass",
        "operator:ada",
        "--reason",
        "sole admin lost phone",
        data_dir=data,
    )
    assert broken.returncode == 0, broken.stderr
    assert "BREAK GLASS" in broken.stderr
    access_pass = broken.stdout.strip()
    assert len(access_pass.replace("-", "")) == 20
    with sqlite3.connect(data / "sparekey.db") as db:
        events = [row[0] for row in db.execute("SELECT event FROM audit_events ORDER BY id")]
    assert "recovery.break_glass" in events
    assert events[-2:] == ["recovery.ready", "recovery.pass_issued"]
