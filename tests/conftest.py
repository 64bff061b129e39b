"""Shared fixtures: a deployment on SQLite or PostgreSQL, a fixed clock, and an API client.

Tests marked ``postgres`` run against the PostgreSQL server on 127.0.0.1:5432 (database
``test`` holds nothing of ours: each test worker creates and drops a database of its own).
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import create_engine, text

from sparekey.api import create_app
from sparekey.domain.models import Scope
from sparekey.domain.ports import FixedClock
from sparekey.runtime import Sparekey, initialize
from sparekey.settings import Settings, load_settings
from sparekey.storage.database import Database

PG_ADMIN_URL = os.environ.get(
    "SPAREKEY_TEST_PG_ADMIN_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
)
START = datetime(2026, 1, 15, 12, 0, 0, tzinfo=UTC)


def _worker() -> str:
    return os.environ.get("PYTEST_XDIST_WORKER", "main")


@pytest.fixture(scope="session")
def pg_url() -> Iterator[str]:
    """A database of this test worker's own, migrated to head; dropped at the end."""
    name = f"sparekey_test_{_worker()}_{os.getpid()}"
    admin = create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}"'))
            conn.execute(text(f'CREATE DATABASE "{name}"'))
    except Exception as exc:  # the server is part of the test environment
        pytest.fail(f"PostgreSQL at {PG_ADMIN_URL} is not reachable: {exc}")
    url = PG_ADMIN_URL.rsplit("/", 1)[0] + f"/{name}"
    db = Database(url)
    db.migrate()
    db.dispose()
    yield url
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("template") / "sparekey.db"
    db = Database(f"sqlite:///{path}")
    db.migrate()
    db.dispose()
    return path


def _reset_postgres(url: str) -> None:
    engine = create_engine(url)
    with engine.begin() as conn:
        conn.execute(
            text(
                "TRUNCATE users, factors, backup_codes, api_keys, audit_events,"
                " audit_checkpoints, data_keys, outbox, web_sessions, portal_links"
                " RESTART IDENTITY CASCADE"
            )
        )
        conn.execute(
            text("UPDATE audit_chain SET last_seq = 0, last_digest = :genesis"),
            {"genesis": bytes(32)},
        )
    engine.dispose()


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def database_url(backend: str, request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if backend == "postgres":
        url: str = request.getfixturevalue("pg_url")
        _reset_postgres(url)
        return url
    template: Path = request.getfixturevalue("sqlite_template")
    target = tmp_path / "data" / "sparekey.db"
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy(template, target)
    return f"sqlite:///{target}"


@pytest.fixture
def clock() -> FixedClock:
    return FixedClock(START)


@pytest.fixture
def settings(tmp_path: Path, database_url: str) -> Settings:
    return load_settings(tmp_path / "data", database_url=database_url)


@pytest.fixture
def sparekey(settings: Settings, clock: FixedClock) -> Iterator[Sparekey]:
    initialize(settings, clock=clock)
    app = Sparekey.open(settings, clock=clock)
    yield app
    app.close()


@pytest.fixture
def admin_token(sparekey: Sparekey) -> str:
    return sparekey.api_keys.create(name="test-admin", scopes=[Scope.ADMIN]).token


@pytest.fixture
def client(sparekey: Sparekey, admin_token: str) -> Iterator[TestClient]:
    with TestClient(create_app(sparekey), raise_server_exceptions=False) as test_client:
        test_client.headers["Authorization"] = f"Bearer {admin_token}"
        yield test_client
