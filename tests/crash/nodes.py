"""Real Sparekey processes for crash tests: started with ``SPAREKEY_CRASH_AT`` naming a crash point
(see :mod:`sparekey.crashpoints`), driven until they kill themselves, then started again without it
on the same data directory and database, whose state the tests then inspect."""

from __future__ import annotations

import json
import os
import signal
import socket
import ssl
import subprocess
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx2
import pytest
from sqlalchemy import Engine, create_engine, text

from sparekey.crashpoints import ENVIRONMENT_VARIABLE
from sparekey.runtime import Sparekey, initialize
from sparekey.settings import Settings, load_settings
from tests.cli.test_cli import SPAREKEY

# No rate limit gets in the way of a test's requests; a rotated data key is seen within 0.5 s.
BASE_SETTINGS = {
    "rate_limit_key_requests": "0",
    "rate_limit_ip_requests": "0",
    "key_refresh_seconds": "0.5",
}
DROPPED = (httpx2.RemoteProtocolError, httpx2.ReadError)  # the server died mid-request
_TLS = ssl.create_default_context()


@dataclass
class Server:
    """A ``sparekey serve`` process on a port of its own, with one HTTP client for it."""

    process: subprocess.Popen[bytes]
    url: str
    log: Path
    crash_at: str | None
    http: httpx2.Client = field(init=False)

    def __post_init__(self) -> None:
        # One TLS context for every client: httpx2 would load the CA bundle for each (costly).
        self.http = httpx2.Client(base_url=self.url, timeout=30, verify=_TLS)

    def post(self, token: str, path: str, body: dict[str, Any]) -> httpx2.Response:
        return self.http.post(path, json=body, headers={"Authorization": f"Bearer {token}"})

    def crash_on(self, token: str, path: str, body: dict[str, Any]) -> None:
        """POST ``body`` to ``path``, which must reach this server's crash point: the connection
        drops without an answer and the process ends by SIGKILL."""
        try:
            answer = self.post(token, path, body)
        except DROPPED:
            pass
        else:
            pytest.fail(f"{self.crash_at} was not reached: {answer.status_code} {answer.text}")
        finally:
            self.http.close()
        expect_killed(self.process, self.log)

    def stop(self) -> None:
        """A clean shutdown (SIGINT), which must succeed."""
        self.http.close()
        self.process.send_signal(signal.SIGINT)
        assert self.process.wait(timeout=30) == 0, self.log.read_text()


def expect_killed(process: subprocess.Popen[bytes], log: Path) -> None:
    """The process ended by SIGKILL: only a crash point sends it."""
    try:
        code = process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        pytest.fail(f"still running after its crash point should have been hit\n{log.read_text()}")
    assert code == -signal.SIGKILL, f"exit {code}, not SIGKILL\n{log.read_text()}"


@dataclass
class Deployment:
    """One data directory and database, set up in this process and run by real processes."""

    data_dir: Path
    database_url: str
    overrides: dict[str, str]
    admin_token: str
    processes: list[subprocess.Popen[bytes]] = field(default_factory=list)
    servers: list[Server] = field(default_factory=list)
    engine: Engine | None = None

    @classmethod
    def create(cls, tmp_path: Path, database_url: str, overrides: dict[str, str]) -> Deployment:
        values = BASE_SETTINGS | overrides
        data_dir = tmp_path / "data"
        settings = load_settings(data_dir, database_url=database_url, **values)
        token = initialize(settings).admin_token
        assert token is not None
        return cls(data_dir, database_url, values, token)

    def settings(self) -> Settings:
        return load_settings(self.data_dir, database_url=self.database_url, **self.overrides)

    @contextmanager
    def app(self) -> Iterator[Sparekey]:
        """The deployment in this process, on the system clock as the servers are."""
        app = Sparekey.open(self.settings())
        try:
            yield app
        finally:
            app.close()

    def query(self, sql: str, **params: object) -> list[Any]:
        """Rows of a plain SQL query: the tests read what is stored without the product's code."""
        if self.engine is None:
            self.engine = create_engine(self.database_url)
        with self.engine.connect() as conn:
            return list(conn.execute(text(sql), params).all())

    def audit(self, user_id: str | None = None) -> list[tuple[str, dict[str, Any]]]:
        """The audit records (of one user, or all), oldest first: (event, details)."""
        sql = "SELECT event, details FROM audit_events"
        if user_id is not None:
            sql += " WHERE user_id = :user_id"
        rows = self.query(sql + " ORDER BY id", user_id=user_id)
        return [(row.event, json.loads(row.details)) for row in rows]

    def assert_audit_chain_verifies(self) -> None:
        """Seal what the servers left unsealed, then check every record, the chain and the
        signed checkpoints (what ``sparekey audit verify`` does)."""
        with self.app() as app:
            app.audit.seal_all()
            report = app.audit.verify()
        assert report.ok, report.problem
        assert report.unsealed == 0

    def env(self, crash_at: str | None) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("SPAREKEY_")}
        env |= {f"SPAREKEY_{name.upper()}": value for name, value in self.overrides.items()}
        env |= {"SPAREKEY_DATA_DIR": str(self.data_dir), "SPAREKEY_DATABASE_URL": self.database_url}
        if crash_at is not None:
            env[ENVIRONMENT_VARIABLE] = crash_at
        return env

    def spawn(
        self, *args: str, crash_at: str | None = None
    ) -> tuple[subprocess.Popen[bytes], Path]:
        """Start ``sparekey ARGS``; its output goes to a log file, shown when a check fails."""
        log = self.data_dir.parent / f"{args[0]}-{len(self.processes)}.log"
        with log.open("wb") as out:
            process = subprocess.Popen(
                [SPAREKEY, *args],
                env=self.env(crash_at),
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        self.processes.append(process)
        return process, log

    def run(self, *args: str, crash_at: str | None = None) -> tuple[int, str]:
        """Run ``sparekey ARGS`` to its end: (exit code, output)."""
        process, log = self.spawn(*args, crash_at=crash_at)
        try:
            code = process.wait(timeout=120)
        except subprocess.TimeoutExpired:
            pytest.fail(f"sparekey {' '.join(args)} did not end\n{log.read_text()}")
        return code, log.read_text()

    def serve(self, *crash_points: str | None) -> list[Server]:
        """Start one server per entry (a crash point, or None for none) at once, and wait until
        every one answers."""
        servers = []
        for crash_at, port in zip(crash_points, _free_ports(len(crash_points)), strict=True):
            process, log = self.spawn("serve", "--port", str(port), crash_at=crash_at)
            servers.append(Server(process, f"http://127.0.0.1:{port}", log, crash_at))
        self.servers += servers
        for server in servers:
            _wait_until_up(server)
        return servers

    def kill_leftovers(self) -> None:
        if self.engine is not None:
            self.engine.dispose()
        for server in self.servers:
            server.http.close()
        for process in self.processes:
            if process.poll() is None:
                process.kill()
                process.wait(timeout=30)


def _free_ports(count: int) -> list[int]:
    """``count`` distinct ports free at this moment (all held open until each is known)."""
    sockets = [socket.socket() for _ in range(count)]
    try:
        for sock in sockets:
            sock.bind(("127.0.0.1", 0))
        return [int(sock.getsockname()[1]) for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


def _wait_until_up(server: Server) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            pytest.fail(
                f"the server exited with {server.process.returncode}\n{server.log.read_text()}"
            )
        try:
            if server.http.get("/healthz", timeout=2).status_code == 200:
                return
        except httpx2.TransportError:
            pass
        time.sleep(0.05)
    pytest.fail(f"the server did not answer within 60 s\n{server.log.read_text()}")


def stop_all(servers: Sequence[Server]) -> None:
    for server in servers:
        server.stop()
