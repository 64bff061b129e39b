"""Server processes for the benchmarks, each a subprocess on loopback that is always stopped.

* Sparekey: ``sparekey init`` then ``sparekey serve`` on a data directory, on SQLite (the default)
  or on a fresh PostgreSQL database named by ``SPAREKEY_DATABASE_URL``.
* The ceiling: ``bench/bare_app.py``, a bare Starlette endpoint under the same uvicorn settings.

Every server writes its stdout and stderr to a log file, which is read back when it misbehaves.
"""

from __future__ import annotations

import asyncio
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import Engine, create_engine, text
from sqlalchemy.exc import SQLAlchemyError

from loadgen import HOST, Connection

__all__ = [
    "PG_ADMIN_URL",
    "Server",
    "ServerError",
    "bare_argv",
    "free_port",
    "postgres_database",
    "running",
    "server_env",
    "sparekey_argv",
    "sparekey_init",
    "wait_ready",
]

REPO = Path(__file__).resolve().parent.parent
SPAREKEY = REPO / ".venv" / "bin" / "sparekey"
BARE_APP = REPO / "bench" / "bare_app.py"
PG_ADMIN_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"

STOP_TIMEOUT_SECONDS = 15.0
READY_TIMEOUT_SECONDS = 30.0
_NOTABLE = re.compile(r"Traceback|Exception|Error|ERROR|WARNING|CRITICAL")
# What a server killed by our SIGTERM may exit with: uvicorn re-raises the signal after shutdown.
_CLEAN_EXITS = (0, -signal.SIGTERM)


class ServerError(RuntimeError):
    """A server did not start, or stopped while it was being measured."""


def free_port() -> int:
    """A TCP port on loopback that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        port: int = sock.getsockname()[1]
        return port


def server_env(**overrides: str) -> dict[str, str]:
    """This process's environment minus any ``SPAREKEY_*`` variable, plus ``overrides``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SPAREKEY_")}
    env.update(overrides)
    return env


@dataclass
class Server:
    name: str
    port: int
    process: subprocess.Popen[bytes]
    log_path: Path

    @property
    def pid(self) -> int:
        return self.process.pid

    def log_tail(self, lines: int = 40) -> str:
        text = self.log_path.read_text(encoding="utf-8", errors="replace")
        return "\n".join(text.splitlines()[-lines:])

    def notable_log_lines(self) -> list[str]:
        """Lines of the log that look like errors, warnings or tracebacks."""
        text = self.log_path.read_text(encoding="utf-8", errors="replace")
        return [line for line in text.splitlines() if _NOTABLE.search(line)]

    def check_alive(self) -> None:
        code = self.process.poll()
        if code is not None:
            raise ServerError(
                f"{self.name} exited with status {code}; its log ends:\n{self.log_tail()}"
            )

    def stop(self) -> int:
        """Stop the server (SIGTERM, then SIGKILL after a while); returns its exit status."""
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(STOP_TIMEOUT_SECONDS)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        return self.process.returncode

    @property
    def exited_cleanly(self) -> bool:
        return self.process.returncode in _CLEAN_EXITS


@contextmanager
def running(
    name: str, argv: list[str], *, port: int, env: dict[str, str], log_path: Path
) -> Iterator[Server]:
    """Run ``argv`` as a server for the duration of the block; it is stopped however it ends.

    The server gets a session of its own, so a Ctrl-C in the terminal reaches only this process,
    which then stops the server in order.
    """
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=REPO,
            start_new_session=True,
        )
    server = Server(name=name, port=port, process=process, log_path=log_path)
    try:
        yield server
    finally:
        server.stop()


async def wait_ready(server: Server, probe: bytes) -> None:
    """Send ``probe`` until the server answers it with 200; fail if it exits or takes too long."""
    deadline = time.monotonic() + READY_TIMEOUT_SECONDS
    last = "no answer"
    while time.monotonic() < deadline:
        server.check_alive()
        connection = Connection(server.port)
        try:
            response = await connection.send(probe)
            if response.status == 200:
                return
            last = f"HTTP {response.status}: {response.body[:200]!r}"
        except (OSError, EOFError) as exc:
            last = f"{type(exc).__name__}: {exc}"
        finally:
            await connection.close()
        await asyncio.sleep(0.1)
    raise ServerError(f"{server.name} not ready after {READY_TIMEOUT_SECONDS:.0f} s ({last})")


def sparekey_init(data_dir: Path, env: dict[str, str]) -> str:
    """Run ``sparekey init`` on ``data_dir``; returns the admin API key it prints last."""
    if not SPAREKEY.exists():
        raise ServerError(f"{SPAREKEY.relative_to(REPO)} is missing; install the project first")
    done = subprocess.run(
        [str(SPAREKEY), "init", "--data-dir", str(data_dir)],
        env=env,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    lines = done.stdout.strip().splitlines()
    if done.returncode != 0 or not lines:
        raise ServerError(f"sparekey init failed ({done.returncode}):\n{done.stderr.strip()}")
    return lines[-1].strip()


def sparekey_argv(data_dir: Path, port: int) -> list[str]:
    return [str(SPAREKEY), "serve", "--data-dir", str(data_dir), "--port", str(port)]


def bare_argv(port: int) -> list[str]:
    return [sys.executable, str(BARE_APP), "--host", HOST, "--port", str(port)]


@contextmanager
def postgres_database(name: str) -> Iterator[str]:
    """Create database ``name`` for the block and drop it afterwards; yields its URL."""
    if not re.fullmatch(r"[a-z_][a-z0-9_]*", name):
        raise ValueError(f"not a plain database name: {name!r}")
    admin = create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    try:
        _drop_database(admin, name)  # a leftover of an earlier run that was killed
        with admin.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}"'))
    except SQLAlchemyError as exc:
        admin.dispose()
        raise ServerError(f"cannot create database {name} at {PG_ADMIN_URL}: {exc}") from exc
    try:
        yield PG_ADMIN_URL.rsplit("/", 1)[0] + f"/{name}"
    finally:
        _drop_database(admin, name)
        admin.dispose()


def _drop_database(admin: Engine, name: str) -> None:
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
