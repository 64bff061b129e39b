"""`sparekey keys rotate-dek` killed halfway and resumed, while a real server keeps verifying."""

from __future__ import annotations

import os
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx2
import pytest
from sqlalchemy import create_engine, text

from sparekey.crypto.keyring import KeyPurpose
from sparekey.protocols.rfc4226 import hotp
from sparekey.runtime import Sparekey
from sparekey.settings import load_settings
from tests.cli.test_cli import SPAREKEY, _free_port, run
from tests.helpers import pg_database
from tests.services.test_keys import hotp_users

USERS = 240


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'data' / 'sparekey.db'}"
        return
    with pg_database("sparekey_rotate") as url:
        yield url


def keys_in_use(url: str) -> dict[int, int]:
    engine = create_engine(url)
    with engine.connect() as conn:
        rows = conn.execute(
            text("SELECT secret_key_id, COUNT(*) FROM factors GROUP BY secret_key_id")
        ).all()
    engine.dispose()
    return {int(k): int(n) for k, n in rows}


class Verifier(threading.Thread):
    """Signs users in through the HTTP API, one HOTP code after another, until stopped."""

    def __init__(self, url: str, token: str, users: dict[str, tuple[bytes, int]]) -> None:
        super().__init__(daemon=True)
        self.url, self.token, self.users = url, token, users
        self.stop = threading.Event()
        self.ok = 0
        self.failures: list[str] = []

    def run(self) -> None:
        headers = {"Authorization": f"Bearer {self.token}"}
        with httpx2.Client(base_url=self.url, headers=headers, timeout=30) as client:
            while not self.stop.is_set():
                for user_id, (seed, counter) in list(self.users.items()):
                    if self.stop.is_set():
                        return
                    code = hotp(key=seed, counter=counter)
                    answer = client.post(f"/v1/users/{user_id}/verify", json={"code": code})
                    self.users[user_id] = (seed, counter + 1)
                    if answer.status_code == 200 and answer.json()["verified"]:
                        self.ok += 1
                    else:
                        self.failures.append(f"{user_id}: {answer.status_code} {answer.text}")


def test_a_killed_rotation_resumes_while_verifications_go_on(
    tmp_path: Path, database_url: str
) -> None:
    data = tmp_path / "data"
    env = {
        "SPAREKEY_DATABASE_URL": database_url,
        "SPAREKEY_KEY_REFRESH_SECONDS": "0.5",
        "SPAREKEY_RATE_LIMIT_KEY_REQUESTS": "0",
        "SPAREKEY_RATE_LIMIT_IP_REQUESTS": "0",
    }
    init = run("init", data_dir=data, env=env)
    assert init.returncode == 0, init.stderr
    token = init.stdout.strip().splitlines()[-1]
    settings = load_settings(data, database_url=database_url, key_refresh_seconds=0.5)
    app = Sparekey.open(settings)
    try:
        users = hotp_users(app, USERS)
        old = app.keyring.active_id(KeyPurpose.ENCRYPTION)
    finally:
        app.close()

    port = _free_port()
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("SPAREKEY_")}
    full_env |= {"SPAREKEY_DATA_DIR": str(data), **env}
    server = subprocess.Popen(
        [SPAREKEY, "serve", "--port", str(port)],
        env=full_env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    verifiers = [Verifier(url, token, dict(list(users.items())[half::2])) for half in range(2)]
    try:
        _wait_until_up(url)
        for verifier in verifiers:
            verifier.start()

        rotation = subprocess.Popen(
            [SPAREKEY, "keys", "rotate-dek", "--batch-size", "10", "--pause", "0.05"],
            env=full_env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        deadline = time.monotonic() + 60
        while True:
            in_use = keys_in_use(database_url)
            moved = sum(n for k, n in in_use.items() if k != old)
            if moved >= USERS // 4:
                break
            assert rotation.poll() is None, "the rotation finished before it could be killed"
            assert time.monotonic() < deadline, "the rotation did not progress"
            time.sleep(0.02)
        rotation.send_signal(signal.SIGKILL)
        rotation.communicate(timeout=30)
        assert rotation.returncode == -signal.SIGKILL
        halfway = keys_in_use(database_url)
        assert halfway.get(old, 0) > 0, "killed halfway: some secrets still under the old key"
        assert len(halfway) == 2

        ok_before_resume = sum(v.ok for v in verifiers)
        time.sleep(1.0)  # the server keeps verifying on a half-rotated database
        assert sum(v.ok for v in verifiers) > ok_before_resume

        resumed = run("keys", "rotate-dek", "--batch-size", "25", data_dir=data, env=env)
        assert resumed.returncode == 0, resumed.stderr
        assert "Resumed the rotation" in resumed.stdout
        assert f"Retired keys: {old}." in resumed.stdout
        final = keys_in_use(database_url)
        assert len(final) == 1
        assert old not in final
        assert sum(final.values()) == USERS
    finally:
        for verifier in verifiers:
            verifier.stop.set()
        for verifier in verifiers:
            verifier.join(timeout=30)
        server.send_signal(signal.SIGINT)
        server.wait(timeout=30)

    assert all(not v.failures for v in verifiers), [v.failures[:3] for v in verifiers]
    assert sum(v.ok for v in verifiers) > USERS // 2
    status = run("keys", "status", data_dir=data, env=env)
    assert f"\n{old:>4} " not in status.stdout, "the old key is gone"
    audit = run("audit", "verify", data_dir=data, env=env)
    assert audit.returncode == 0, audit.stderr


def _wait_until_up(url: str) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            if httpx2.get(f"{url}/healthz").status_code == 200:
                return
        except httpx2.TransportError:
            pass
        time.sleep(0.1)
    pytest.fail("the server did not start within 30 s")
