"""The service's own limits: per API key on every call, per end-user IP on verification."""

from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from sparekey.api import create_app
from sparekey.domain.models import Scope
from sparekey.domain.ports import FixedClock
from sparekey.runtime import Sparekey, initialize
from sparekey.settings import load_settings
from tests.api.test_problems import assert_problem


@pytest.fixture
def limited(tmp_path: Path, database_url: str, clock: FixedClock) -> Iterator[TestClient]:
    settings = load_settings(
        tmp_path / "data",
        database_url=database_url,
        rate_limit_ip_requests=3,
        rate_limit_ip_seconds=60,
        rate_limit_key_requests=10,
        rate_limit_key_seconds=10,
    )
    initialize(settings, clock=clock)
    app = Sparekey.open(settings, clock=clock)
    token = app.api_keys.create(name="app", scopes=[Scope.ADMIN]).token
    with TestClient(create_app(app), raise_server_exceptions=False) as client:
        client.headers["Authorization"] = f"Bearer {token}"
        client.post("/v1/users", json={"id": "alice"})
        yield client
    app.close()


def verify_from(client: TestClient, ip: str) -> object:
    return client.post("/v1/users/alice/verify", json={"code": "123456", "context": {"ip": ip}})


def test_verifications_per_ip(limited: TestClient, clock: FixedClock) -> None:
    for _ in range(3):
        assert verify_from(limited, "198.51.100.7").status_code == 200  # type: ignore[attr-defined]
    refused = verify_from(limited, "198.51.100.7")
    assert_problem(refused, 429, "rate-limited")
    assert refused.headers["retry-after"] == "20"  # type: ignore[attr-defined]
    assert verify_from(limited, "198.51.100.8").status_code == 200  # type: ignore[attr-defined]
    clock.advance(20)
    assert verify_from(limited, "198.51.100.7").status_code == 200  # type: ignore[attr-defined]


def test_requests_per_api_key(limited: TestClient, clock: FixedClock) -> None:
    answers = [limited.get("/v1/users/alice").status_code for _ in range(12)]
    assert answers.count(429) >= 2
    assert_problem(limited.get("/v1/users/alice"), 429, "rate-limited")
    clock.advance(10)
    assert limited.get("/v1/users/alice").status_code == 200
