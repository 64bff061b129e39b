"""The ``sparekey`` command, run as a user runs it: a real process."""

from __future__ import annotations

import http.client
import json
import os
import signal
import socket
import stat
import subprocess
import sys
import time
from pathlib import Path

import httpx2
import pytest

SPAREKEY = str(Path(sys.executable).parent / "sparekey")


def run(
    *args: str, data_dir: Path, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("SPAREKEY_")}
    full_env |= {"SPAREKEY_DATA_DIR": str(data_dir)} | (env or {})
    return subprocess.run(
        [SPAREKEY, *args], capture_output=True, text=True, env=full_env, timeout=60
    )


def test_init_creates_everything_once(tmp_path: Path) -> None:
    data = tmp_path / "data"
    first = run("init", data_dir=data)
    assert first.returncode == 0, first.stderr
    token = first.stdout.strip().splitlines()[-1].strip()
    assert token.startswith("sk_")
    assert stat.S_IMODE((data / "sparekey.key").stat().st_mode) == 0o600
    assert stat.S_IMODE(data.stat().st_mode) == 0o700
    assert (data / "sparekey.db").exists()
    assert "port = 8000" in (data / "sparekey.toml").read_text()
    key_before = (data / "sparekey.key").read_bytes()

    again = run("init", data_dir=data)
    assert again.returncode == 0
    assert "sk_" not in again.stdout, "the admin key is printed once only"
    assert (data / "sparekey.key").read_bytes() == key_before


def test_apikey_create_list_revoke(tmp_path: Path) -> None:
    data = tmp_path / "data"
    run("init", data_dir=data)
    created = run("apikey", "create", "login page", "--scope", "verify", data_dir=data)
    assert created.returncode == 0, created.stderr
    token = created.stdout.strip().splitlines()[-1]
    assert token.startswith("sk_")
    key_id = token.split("_")[1]
    listing = run("apikey", "list", data_dir=data).stdout
    assert key_id in listing
    assert "login page" in listing
    assert token.split("_", 2)[2] not in listing
    revoked = run("apikey", "revoke", key_id, data_dir=data)
    assert revoked.returncode == 0
    assert "Revoked" in revoked.stderr
    row = next(
        line for line in run("apikey", "list", data_dir=data).stdout.splitlines() if key_id in line
    )
    assert not row.rstrip().endswith("-")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("apikey", "revoke", "nope"), "no API key with id 'nope'"),
        (("apikey", "list"), "no Sparekey deployment"),
    ],
)
def test_errors_are_one_line_and_exit_one(
    tmp_path: Path, args: tuple[str, ...], message: str
) -> None:
    data = tmp_path / "data"
    if "revoke" in args:
        run("init", data_dir=data)
    result = run(*args, data_dir=data)
    assert result.returncode == 1
    assert result.stderr.strip().count("\n") == 0, result.stderr
    assert message in result.stderr
    assert "Traceback" not in result.stderr


def test_bad_setting_is_one_line(tmp_path: Path) -> None:
    result = run("init", data_dir=tmp_path / "data", env={"SPAREKEY_TOTP_WINDOW": "many"})
    assert result.returncode == 1
    assert "totp_window" in result.stderr
    assert result.stderr.strip().count("\n") == 0


def test_missing_key_file_with_existing_keys_is_refused(tmp_path: Path) -> None:
    data = tmp_path / "data"
    run("init", data_dir=data)
    (data / "sparekey.key").unlink()
    result = run("init", data_dir=data)
    assert result.returncode == 1
    assert "restore the key file" in result.stderr
    assert not (data / "sparekey.key").exists(), "never silently replaced"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_serve_initializes_prints_where_and_answers(tmp_path: Path) -> None:
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("SPAREKEY_")}
    env["SPAREKEY_DATA_DIR"] = str(tmp_path / "data")
    env["SPAREKEY_KEEP_ALIVE_SECONDS"] = "30"
    process = subprocess.Popen(
        [SPAREKEY, "serve", "--port", str(port)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                if httpx2.get(f"http://127.0.0.1:{port}/healthz").status_code == 200:
                    break
            except httpx2.TransportError:
                time.sleep(0.2)
        else:
            pytest.fail("the server did not answer within 30 s")
        token = process.stdout.readline().strip() if process.stdout else ""
        assert token.startswith("sk_")
        headers = {"Authorization": f"Bearer {token}"}
        created = httpx2.post(
            f"http://127.0.0.1:{port}/v1/users", json={"id": "alice"}, headers=headers
        )
        assert created.status_code == 201
        assert httpx2.get(f"http://127.0.0.1:{port}/docs").status_code == 200
        # An idle connection outlives uvicorn's default 5 s: a load balancer's kept-alive
        # connection is not closed under it (keep_alive_seconds).
        # (http.client raises RemoteDisconnected if the node closed it.)
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        try:
            for pause in (0, 6):
                time.sleep(pause)
                conn.request("GET", "/healthz")
                answer = conn.getresponse()
                assert answer.status == 200
                answer.read()
        finally:
            conn.close()
    finally:
        process.send_signal(signal.SIGINT)
        _, stderr = process.communicate(timeout=30)
    assert f"http://localhost:{port}" in stderr
    assert f"http://localhost:{port}/docs" in stderr
    assert process.returncode == 0


def test_audit_verify_and_export(tmp_path: Path) -> None:
    import sqlite3

    data = tmp_path / "data"
    run("init", data_dir=data)
    run("apikey", "create", "app", "--scope", "verify", data_dir=data)
    verified = run("audit", "verify", data_dir=data)
    assert verified.returncode == 0, verified.stderr
    assert "5 sealed records" in verified.stdout  # 3 data keys made, 2 API keys
    exported = run("audit", "export", "--format", "jsonl", data_dir=data)
    lines = [json.loads(line) for line in exported.stdout.splitlines()]
    assert [line["event"] for line in lines] == [
        *["keys.dek_created"] * 3,
        *["api_key.created"] * 2,
    ]

    with sqlite3.connect(data / "sparekey.db") as db:
        db.execute("UPDATE audit_events SET details = '{}' WHERE id = 2")
    tampered = run("audit", "verify", data_dir=data)
    assert tampered.returncode == 1
    assert "record 2 (seq 2)" in tampered.stderr
    assert tampered.stderr.strip().count("\n") == 0


def test_keys_status_counts_what_each_key_protects(tmp_path: Path) -> None:
    data = tmp_path / "data"
    run("init", data_dir=data)
    # the admin API key and four audit records (three data keys made, the API key): five
    # records keyed by the MAC key
    run("audit", "seal", data_dir=data)  # one signed checkpoint
    status = run("keys", "status", data_dir=data)
    assert status.returncode == 0, status.stderr
    table, keks = status.stdout.split("\n\n")
    rows = {line.split()[1]: line.split() for line in table.splitlines()[1:]}
    assert rows["encryption"][3] == "0"
    assert rows["mac"][3] == "5"
    assert rows["signing"][3] == "1"
    assert all(row[2] == "active" and row[4].startswith("file:") for row in rows.values())
    assert keks.startswith("KEK file:")
    assert keks.strip().endswith("(current) wraps 3 data keys")


def test_keys_rotate_kek_and_destroy_the_old_one(tmp_path: Path) -> None:
    data = tmp_path / "data"
    run("init", data_dir=data)
    old = (data / "sparekey.key").read_text()
    rotated = run("keys", "rotate-kek", data_dir=data)
    assert rotated.returncode == 0, rotated.stderr
    assert "3 data keys are now wrapped by file:" in rotated.stdout
    assert "backups taken before now need it" in rotated.stderr
    lines = (data / "sparekey.key").read_text().splitlines()
    assert len(lines) == 2
    assert lines[1] == old.strip(), "the retired KEK is kept, second"
    status = run("keys", "status", data_dir=data).stdout
    current = status.split("KEK ")[1].split()[0]
    refused = run("keys", "destroy-kek", current, "--yes", data_dir=data)
    assert refused.returncode == 1
    assert refused.stderr.count("\n") == 1
    assert "still wraps data keys" in refused.stderr
    previous = rotated.stdout.split("(before: ")[1].split(")")[0]
    destroyed = run("keys", "destroy-kek", previous, "--yes", data_dir=data)
    assert destroyed.returncode == 0, destroyed.stderr
    assert len((data / "sparekey.key").read_text().splitlines()) == 1
    assert run("audit", "verify", data_dir=data).returncode == 0
