"""Zero-knowledge backups against a real ``sparekey serve``: the server stores what it cannot
read, a tampered backup is refused, a wrong password fails cleanly, restore on a fresh computer
gives identical codes, and two computers never overwrite each other unseen."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import sqlite3
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx2
import pytest

from sparekey.protocols.otpauth import b32encode
from tests.authenticator.conftest import LIGHT_ARGS, T0, Clock, Result, Run, runner_for
from tests.cli.test_cli import SPAREKEY, _free_port

SECRETS = {
    "Mastodon": b"mastodon secret 0123",
    "Bank": b"the bank's hotp seed!",
    "Steam": b"steam guard secret 42",
}


@dataclass(frozen=True)
class Server:
    url: str
    admin: str
    data_dir: Path


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Server]:
    data_dir = tmp_path / "server"
    env = {k: v for k, v in os.environ.items() if not k.startswith("SPAREKEY_")}
    env["SPAREKEY_DATA_DIR"] = str(data_dir)
    init = subprocess.run([SPAREKEY, "init"], env=env, capture_output=True, text=True, check=True)
    admin = init.stdout.strip().splitlines()[-1]
    port = _free_port()
    process = subprocess.Popen(
        [SPAREKEY, "serve", "--port", str(port)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                if httpx2.get(f"{url}/healthz").status_code == 200:
                    break
            except httpx2.TransportError:
                pass
            if time.monotonic() > deadline:
                pytest.fail("the server did not start within 30 s")
            time.sleep(0.2)
        with httpx2.Client(base_url=url, headers={"Authorization": f"Bearer {admin}"}) as api:
            for user in ("alice", "bob"):
                assert api.post("/v1/users", json={"id": user}).status_code == 201
        yield Server(url=url, admin=admin, data_dir=data_dir)
    finally:
        process.send_signal(signal.SIGINT)
        process.wait(timeout=30)


def _device_token(server: Server, user: str, tmp_path: Path) -> Path:
    with httpx2.Client(
        base_url=server.url, headers={"Authorization": f"Bearer {server.admin}"}
    ) as api:
        answer = api.post(f"/v1/users/{user}/device-tokens", json={"name": "Laptop"})
    assert answer.status_code == 201, answer.text
    token_file = tmp_path / f"{user}-device-token"
    token_file.write_text(answer.json()["token"] + "\n")
    return token_file


@pytest.fixture
def desktop_b(tmp_path: Path, clock: Clock) -> Run:
    """A second computer: its own vault, the same clock."""
    return runner_for(tmp_path / "computer-b" / "vault.json", clock)


def _ok(result: Result) -> Result:
    assert result.code == 0, result.stderr
    return result


def _fill(run: Run) -> str:
    """A vault with a TOTP, an HOTP and a Steam account; returns its recovery key."""
    recovery_key = _ok(run("init", *LIGHT_ARGS)).stderr.strip().splitlines()[-1]
    mastodon = ["--issuer", "Mastodon", "--account", "ada@example.social"]
    _ok(run("add", "--secret", b32encode(SECRETS["Mastodon"]), *mastodon))
    bank = ["--type", "hotp", "--counter", "7", "--digits", "8", "--algorithm", "SHA256"]
    _ok(run("add", "--secret", b32encode(SECRETS["Bank"]), "--issuer", "Bank", *bank))
    _ok(run("add", "--type", "steam", "--secret", b32encode(SECRETS["Steam"])))
    return recovery_key


def _target(server: Server, token_file: Path, user: str = "alice") -> list[str]:
    return ["--server", server.url, "--user", user, "--token-file", str(token_file)]


def _pushed(server: Server, run: Run, tmp_path: Path) -> tuple[Path, str]:
    """A filled vault, set up for backups and pushed once: the token file and recovery key."""
    recovery_key = _fill(run)
    token_file = _device_token(server, "alice", tmp_path)
    _ok(run("backup", "setup", *_target(server, token_file)))
    assert "version 1" in _ok(run("backup", "push")).stderr
    return token_file, recovery_key


def _codes(run: Run) -> dict[str, str]:
    listing = json.loads(run("list", "--json").stdout)
    return {e["issuer"]: run("code", e["id"], "--quiet").stdout for e in listing}


def _issuers(run: Run) -> list[str]:
    return sorted(e["issuer"] for e in json.loads(run("list", "--json").stdout))


def _server_bytes(server: Server) -> bytes:
    return b"".join(p.read_bytes() for p in server.data_dir.rglob("*") if p.is_file())


def test_push_stores_nothing_the_server_can_read_and_restore_gives_identical_codes(
    server: Server, run: Run, desktop_b: Run, tmp_path: Path, clock: Clock
) -> None:
    token_file, recovery_key = _pushed(server, run, tmp_path)
    stored = _server_bytes(server)
    for name, secret in SECRETS.items():
        for needle in (secret, b32encode(secret).encode(), name.encode()):
            assert needle not in stored, name
    assert b"ada@example.social" not in stored
    assert token_file.read_text().strip().encode() not in stored  # only its keyed hash

    # a new computer, with the password: the same codes, HOTP counter where it was
    restored = _ok(desktop_b("backup", "restore", *_target(server, token_file)))
    assert "Restored 3 accounts from backup version 1" in restored.stderr
    clock.now = T0 + 12_345
    on_b = _codes(desktop_b)  # each HOTP code here is for counter 7, as on the first computer
    assert on_b == _codes(run)

    # and another, with the recovery key instead
    key_file = tmp_path / "recovery-key"
    key_file.write_text(recovery_key)
    third = ["--vault", str(tmp_path / "computer-c" / "vault.json")]
    by_key = run(
        *third,
        "--recovery-key-file",
        str(key_file),
        "backup",
        "restore",
        *_target(server, token_file),
        env={"SPAREKEY_VAULT_PASSWORD": None},
    )
    assert "passwd" in _ok(by_key).stderr
    assert _codes(runner_for(tmp_path / "computer-c" / "vault.json", clock)) == on_b


def test_a_wrong_password_fails_cleanly_and_writes_nothing(
    server: Server, run: Run, desktop_b: Run, tmp_path: Path
) -> None:
    token_file, _ = _pushed(server, run, tmp_path)
    wrong = desktop_b(
        "backup", "restore", *_target(server, token_file), env={"SPAREKEY_VAULT_PASSWORD": "no"}
    )
    assert wrong.code == 1
    assert wrong.stderr == "sparekey-authenticator: error: the password does not open this vault\n"
    assert not (tmp_path / "computer-b" / "vault.json").exists()


def _tamper(server: Server, *, keep_checksum: bool) -> None:
    """Change the stored backup as someone with the server's database would."""
    database = next(server.data_dir.rglob("*.db"))
    with sqlite3.connect(database) as db:
        (blob,) = db.execute("SELECT content FROM vault_backups ORDER BY version DESC").fetchone()
        document = json.loads(blob)
        raw = bytearray(document["data"].encode())
        raw[40] = ord("A") if raw[40] != ord("A") else ord("B")
        document["data"] = raw.decode()
        changed = json.dumps(document).encode()
        db.execute("UPDATE vault_backups SET content = ?", (changed,))
        if keep_checksum:
            digest = hashlib.sha256(changed).hexdigest()
            db.execute("UPDATE vault_backups SET sha256 = ?", (digest,))


@pytest.mark.parametrize("keep_checksum", [False, True])
def test_a_tampered_backup_is_refused(
    server: Server, run: Run, desktop_b: Run, tmp_path: Path, keep_checksum: bool
) -> None:
    token_file, _ = _pushed(server, run, tmp_path)
    _tamper(server, keep_checksum=keep_checksum)
    for result in (
        desktop_b("backup", "restore", *_target(server, token_file)),
        run("backup", "pull"),
    ):
        assert result.code == 1
        assert result.stderr.count("\n") == 1
        assert "damaged" in result.stderr or "altered" in result.stderr, result.stderr
    assert not (tmp_path / "computer-b" / "vault.json").exists()


def test_two_computers_never_overwrite_each_other_unseen(
    server: Server, run: Run, desktop_b: Run, tmp_path: Path, clock: Clock
) -> None:
    token_file, _ = _pushed(server, run, tmp_path)
    _ok(desktop_b("backup", "restore", *_target(server, token_file)))
    clock.now += 60
    _ok(desktop_b("add", "--secret", b32encode(b"added on computer b!"), "--issuer", "B"))
    _ok(desktop_b("remove", "Mastodon", "--yes"))
    _ok(desktop_b("backup", "push"))  # version 2
    _ok(run("add", "--secret", b32encode(b"added on computer a!"), "--issuer", "A"))
    refused = run("backup", "push")
    assert refused.code == 1
    assert "backup pull" in refused.stderr
    _ok(run("backup", "pull"))
    assert _issuers(run) == ["A", "B", "Bank", "Steam"]
    _ok(run("backup", "push"))  # version 3, on top of what B pushed
    _ok(desktop_b("backup", "pull"))
    assert _issuers(desktop_b) == ["A", "B", "Bank", "Steam"]


def test_hotp_counters_merge_to_the_higher(
    server: Server, run: Run, desktop_b: Run, tmp_path: Path
) -> None:
    token_file, _ = _pushed(server, run, tmp_path)
    _ok(desktop_b("backup", "restore", *_target(server, token_file)))
    shown_on_b = [desktop_b("code", "Bank", "--quiet").stdout for _ in range(3)]  # counters 7..9
    _ok(desktop_b("backup", "push"))
    _ok(run("backup", "pull"))
    assert run("code", "Bank", "--quiet").stdout not in shown_on_b  # counter 10: never twice


def test_a_rollback_to_an_older_version_is_refused(
    server: Server, run: Run, tmp_path: Path
) -> None:
    _pushed(server, run, tmp_path)
    _ok(run("backup", "push"))  # version 2, seen by this computer
    database = next(server.data_dir.rglob("*.db"))
    with sqlite3.connect(database) as db:  # the server (or its thief) hides version 2
        db.execute("DELETE FROM vault_backups WHERE version = 2")
    refused = run("backup", "pull")
    assert refused.code == 1
    assert "older than version 2" in refused.stderr


def test_a_revoked_or_foreign_token_is_refused(server: Server, run: Run, tmp_path: Path) -> None:
    _fill(run)
    bobs = _device_token(server, "bob", tmp_path)
    foreign = run("backup", "setup", *_target(server, bobs))
    assert foreign.code == 1
    assert foreign.stderr.count("\n") == 1
    _ok(run("backup", "setup", *_target(server, _device_token(server, "alice", tmp_path))))
    with httpx2.Client(
        base_url=server.url, headers={"Authorization": f"Bearer {server.admin}"}
    ) as api:
        tokens = api.get("/v1/users/alice/device-tokens").json()["device_tokens"]
        assert api.delete(f"/v1/users/alice/device-tokens/{tokens[0]['id']}").status_code == 204
    revoked = run("backup", "push")
    assert revoked.code == 1
    assert "device token" in revoked.stderr


def test_an_unreachable_server_is_one_line(run: Run, tmp_path: Path) -> None:
    _fill(run)
    token_file = tmp_path / "token"
    token_file.write_text("skd_x\n")
    nowhere = ["--server", f"http://127.0.0.1:{_free_port()}", "--user", "alice"]
    result = run("backup", "setup", *nowhere, "--token-file", str(token_file))
    assert result.code == 1
    assert result.stderr.startswith("sparekey-authenticator: error: cannot reach the backup server")
    assert result.stderr.count("\n") == 1
