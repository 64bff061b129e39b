"""Two `sparekey serve` processes on one PostgreSQL and one Redis enforce one budget."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import httpx2
import pytest
from sqlalchemy import create_engine, text

from tests.cli.test_cli import SPAREKEY, _free_port
from tests.conftest import PG_ADMIN_URL
from tests.helpers import totp_code

pytestmark = pytest.mark.postgres


@pytest.fixture
def database(tmp_path: Path) -> Iterator[str]:
    name = f"sparekey_nodes_{os.getpid()}_{random.randrange(10**6)}"
    admin = create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    yield PG_ADMIN_URL.rsplit("/", 1)[0] + f"/{name}"
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


@pytest.fixture
def nodes(tmp_path: Path, database: str) -> Iterator[tuple[list[str], str]]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SPAREKEY_")}
    env |= {
        "SPAREKEY_DATA_DIR": str(tmp_path / "data"),
        "SPAREKEY_DATABASE_URL": database,
        "SPAREKEY_REDIS_URL": "redis://127.0.0.1:6379/0",
        "SPAREKEY_RATE_LIMIT_IP_REQUESTS": "10",
        "SPAREKEY_THROTTLE_BASE_DELAY_SECONDS": "30",
    }
    init = subprocess.run([SPAREKEY, "init"], env=env, capture_output=True, text=True, check=True)
    token = init.stdout.strip().splitlines()[-1]
    ports = [_free_port(), _free_port()]
    processes = [
        subprocess.Popen(
            [SPAREKEY, "serve", "--port", str(port)],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        for port in ports
    ]
    urls = [f"http://127.0.0.1:{port}" for port in ports]
    try:
        deadline = time.monotonic() + 30
        for url in urls:
            while True:
                try:
                    if httpx2.get(f"{url}/healthz").status_code == 200:
                        break
                except httpx2.TransportError:
                    pass
                if time.monotonic() > deadline:
                    pytest.fail("the nodes did not start within 30 s")
                time.sleep(0.2)
        yield urls, token
    finally:
        for process in processes:
            process.send_signal(signal.SIGINT)
        for process in processes:
            process.wait(timeout=30)


def test_one_throttle_and_one_rate_limit_across_nodes(
    nodes: tuple[list[str], str],
) -> None:
    urls, token = nodes
    with httpx2.Client(headers={"Authorization": f"Bearer {token}"}) as client:
        assert client.post(f"{urls[0]}/v1/users", json={"id": "alice"}).status_code == 201
        assert client.post(f"{urls[1]}/v1/users", json={"id": "bob"}).status_code == 201
        factor = client.post(f"{urls[0]}/v1/users/alice/factors", json={"type": "totp"}).json()
        confirm = client.post(
            f"{urls[1]}/v1/users/alice/factors/{factor['id']}/confirm",
            json={"code": totp_code(factor["secret"], datetime.now(UTC))},
        )
        assert confirm.status_code == 200

        # The user's budget lives in the database: six wrong codes spread over both nodes lock it.
        answers = [
            client.post(f"{urls[i % 2]}/v1/users/alice/verify", json={"code": "000000"})
            for i in range(7)
        ]
        assert [a.status_code for a in answers[:6]] == [200] * 6
        assert answers[6].status_code == 429
        assert answers[6].json()["type"] == "/problems/too-many-attempts"

        # The per-IP limit lives in Redis: 10 a minute for one IP, whichever node answers.
        ip = f"192.0.2.{random.randrange(1, 255)}"
        statuses = [
            client.post(
                f"{urls[i % 2]}/v1/users/bob/verify",
                json={"code": "123456", "context": {"ip": ip}},
            ).status_code
            for i in range(14)
        ]
        assert statuses == [200] * 10 + [429] * 4
