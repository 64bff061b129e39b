"""`sparekey admin` and `sparekey recovery` as real processes."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
from pathlib import Path

from tests.cli.test_cli import SPAREKEY, run


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
    no_code = run("recovery", "fallback-code", "send", case_id, "--operator", "hank", data_dir=data)
    assert no_code.returncode == 1
    assert "no active email or SMS factor" in no_code.stderr


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


def test_an_operator_console_password_is_stored_as_an_argon2id_hash(tmp_path: Path) -> None:
    data = tmp_path / "data"
    run("init", data_dir=data)
    run("admin", "create", "ada", "--role", "admin", data_dir=data)
    secret_file = tmp_path / "password.txt"
    secret_file.write_text("correct horse battery staple\n", encoding="utf-8")
    made = run("admin", "set-password", "ada", "--password-file", str(secret_file), data_dir=data)
    assert made.returncode == 0, made.stderr
    with sqlite3.connect(data / "sparekey.db") as db:
        (stored,) = db.execute("SELECT password_hash FROM operators WHERE name = 'ada'").fetchone()
        events = [row[0] for row in db.execute("SELECT event FROM audit_events ORDER BY id")]
    assert stored.startswith("$argon2id$")
    assert "correct horse" not in stored
    assert events[-1] == "operator.password_set"

    short = tmp_path / "short.txt"
    short.write_text("too short\n", encoding="utf-8")
    refused = run("admin", "set-password", "ada", "--password-file", str(short), data_dir=data)
    assert refused.returncode == 1
    assert "at least 12 characters" in refused.stderr
    nobody = run("admin", "set-password", "bob", "--password-file", str(secret_file), data_dir=data)
    assert nobody.returncode == 1
    assert "no operator named 'bob'" in nobody.stderr


def test_set_password_prompts_twice(tmp_path: Path) -> None:
    data = tmp_path / "data"
    run("init", data_dir=data)
    run("admin", "create", "ada", "--role", "admin", data_dir=data)
    env = {k: v for k, v in os.environ.items() if not k.startswith("SPAREKEY_")}
    env["SPAREKEY_DATA_DIR"] = str(data)
    typed = subprocess.run(
        [SPAREKEY, "admin", "set-password", "ada"],
        input="another long password\nanother long password\n",
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert typed.returncode == 0, typed.stderr
    assert "another long password" not in typed.stdout + typed.stderr
    with sqlite3.connect(data / "sparekey.db") as db:
        (stored,) = db.execute("SELECT password_hash FROM operators WHERE name = 'ada'").fetchone()
    assert stored.startswith("$argon2id$")
