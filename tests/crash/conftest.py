"""Crash tests run every scenario on SQLite (a file in the test's directory) and on PostgreSQL (a
database made for the test and dropped after it)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.crash.nodes import Deployment
from tests.helpers import pg_database


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def crash_database(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'data' / 'sparekey.db'}"
        return
    with pg_database("sparekey_crash") as url:
        yield url


@pytest.fixture
def deploy(tmp_path: Path, crash_database: str) -> Iterator[Callable[..., Deployment]]:
    """Make the test's deployment with these settings (``name="value"``); every process it
    started is gone when the test ends."""
    made: list[Deployment] = []

    def make(**overrides: str) -> Deployment:
        deployment = Deployment.create(tmp_path, crash_database, overrides)
        made.append(deployment)
        return deployment

    yield make
    for deployment in made:
        deployment.kill_leftovers()
