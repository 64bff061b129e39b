"""Fixtures for the desktop authenticator: light Argon2id parameters (the creation floor, so
tests stay fast while exercising the real KDF), a controllable clock, and a command-line runner
that calls the real entry point in-process."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import click.testing
import keyring
import pytest
from keyrings.alt.file import PlaintextKeyring

from sparekey.authenticator.store import VaultStore
from sparekey.authenticator.vault import KdfParams

LIGHT = KdfParams(time_cost=2, memory_cost=19_456, parallelism=1)
LIGHT_ARGS = ["--kdf-time", "2", "--kdf-memory", "19456", "--kdf-parallelism", "1"]
T0 = 1_704_067_200.0  # 2024-01-01T00:00:00Z


class Clock:
    def __init__(self, now: float = T0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@dataclass(frozen=True)
class Result:
    code: int
    stdout: str
    stderr: str


Run = Callable[..., Result]


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def vault_path(tmp_path: Path) -> Path:
    return tmp_path / "data" / "vault.json"


def runner_for(vault_path: Path, clock: Clock) -> Run:
    """``run(*args, env=..., input=...)``: the command line as a user runs it, in-process, on
    the vault at ``vault_path`` (a computer of its own)."""

    def invoke(
        *args: str, env: dict[str, str | None] | None = None, input: str | None = None
    ) -> Result:
        from sparekey.authenticator.cli import AppContext, main

        context = AppContext(clock=clock, store=VaultStore(vault_path), kdf=LIGHT)
        environment: dict[str, str | None] = {
            "SPAREKEY_VAULT_PASSWORD": "correct horse",
            "SPAREKEY_VAULT": None,
        }
        environment.update(env or {})
        runner = click.testing.CliRunner()
        with runner.isolation(input=input, env=environment) as (out, err, _):
            try:
                main(list(args), obj=context)
                code = 0
            except SystemExit as exc:
                code = int(exc.code or 0)
            return Result(code, out.getvalue().decode(), err.getvalue().decode())

    return invoke


@pytest.fixture
def run(vault_path: Path, clock: Clock) -> Run:
    return runner_for(vault_path, clock)


@pytest.fixture
def file_keyring(tmp_path: Path) -> Iterator[PlaintextKeyring]:
    """A real keyring backend (keyrings.alt's file keyring) in a temporary folder."""
    backend = PlaintextKeyring()
    backend.file_path = str(tmp_path / "keyring.cfg")  # type: ignore[misc]
    previous = keyring.get_keyring()
    keyring.set_keyring(backend)
    yield backend
    keyring.set_keyring(previous)
