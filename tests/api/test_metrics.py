"""GET /metrics: the figures operators alert on (docs/operations.md), scraped as Prometheus does."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import create_engine, text
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route

from sparekey import __version__
from sparekey.api import create_app
from sparekey.api.metrics import Metrics, ResponseCounter
from sparekey.domain.models import Scope
from sparekey.domain.ports import FixedClock
from sparekey.runtime import Sparekey, initialize
from sparekey.settings import Settings
from tests.api.test_throttle import wrong_code
from tests.cli.test_cli import _free_port
from tests.helpers import create_user, enroll_confirmed_totp


def scrape(client: TestClient) -> dict[str, float]:
    """Every sample, keyed ``name{label="value",...}`` with the labels sorted."""
    response = client.get("/metrics")
    assert response.status_code == 200
    samples = {}
    for family in text_string_to_metric_families(response.text):
        for sample in family.samples:
            labels = ",".join(f'{k}="{v}"' for k, v in sorted(sample.labels.items()))
            samples[f"{sample.name}{{{labels}}}"] = sample.value
    return samples


@pytest.fixture
def notifying(settings: Settings, clock: FixedClock) -> Iterator[Sparekey]:
    """A deployment that sends webhooks, to an address where nothing listens."""
    initialize(settings, clock=clock)
    hooked = settings.model_copy(
        update={
            "webhook_url": f"http://127.0.0.1:{_free_port()}/hook",
            "webhook_secret": settings.webhook_secret.__class__("s" * 32),
            "notify_timeout_seconds": 2.0,
        }
    )
    app = Sparekey.open(hooked, clock=clock)
    yield app
    app.close()


def _client(app: Sparekey) -> TestClient:
    client = TestClient(
        create_app(app, metrics=Metrics(app, state_seconds=0, readiness_seconds=0)),
        raise_server_exceptions=False,
    )
    client.headers["Authorization"] = (
        "Bearer " + app.api_keys.create(name="metrics-test", scopes=[Scope.ADMIN]).token
    )
    return client


def test_the_outbox_the_audit_log_keys_and_schema_are_read_when_scraped(
    notifying: Sparekey, clock: FixedClock
) -> None:
    with _client(notifying) as client:
        create_user(client)
        enroll_confirmed_totp(client, clock.now())  # factor.confirmed: one webhook to send
        clock.advance(90)
        metrics = scrape(client)
        assert metrics[f'sparekey_build_info{{schema_head="0014",version="{__version__}"}}'] == 1
        schema = 'oldest_code_release="0.2.0",oldest_code_revision="0014",revision="0014"'
        assert metrics[f"sparekey_schema_info{{{schema}}}"] == 1
        assert metrics['sparekey_schema_pending_migrations{kind="expand"}'] == 0
        assert metrics['sparekey_schema_pending_migrations{kind="contract"}'] == 0
        assert metrics["sparekey_database_up{}"] == 1
        assert metrics["sparekey_outbox_pending{}"] == 1
        assert metrics["sparekey_outbox_retrying{}"] == 0
        assert metrics["sparekey_outbox_oldest_pending_age_seconds{}"] == 90
        unsealed = metrics["sparekey_audit_unsealed_records{}"]
        assert unsealed >= 3  # the user, the enrollment, its confirmation
        assert metrics["sparekey_audit_oldest_unsealed_age_seconds{}"] == 90
        assert metrics['sparekey_data_keys{purpose="encryption",state="active"}'] == 1
        assert metrics["sparekey_keks_in_use{}"] == 1
        assert metrics["sparekey_readiness_users{}"] == 1
        assert metrics["sparekey_readiness_one_device_from_lockout_users{}"] == 1

        notifying.delivery.run_once()  # the webhook's address refuses the connection
        notifying.audit.seal_all()
        metrics = scrape(client)
        assert metrics["sparekey_outbox_pending{}"] == 1
        assert metrics["sparekey_outbox_retrying{}"] == 1
        assert metrics["sparekey_audit_unsealed_records{}"] == 0
        assert metrics["sparekey_audit_oldest_unsealed_age_seconds{}"] == 0
        assert metrics["sparekey_audit_sealed_records{}"] >= unsealed
        assert metrics["sparekey_audit_last_seal_timestamp_seconds{}"] == clock.now().timestamp()


def test_lockouts_and_responses_are_counted(sparekey: Sparekey, clock: FixedClock) -> None:
    with _client(sparekey) as client:
        create_user(client)
        secret = str(enroll_confirmed_totp(client, clock.now())["secret"])
        clock.advance(60)
        for _ in range(6):  # five free failures, then the throttle engages
            answer = client.post("/v1/users/alice/verify", json={"code": wrong_code(secret, clock)})
            assert answer.json() == {"verified": False}
        locked = client.post("/v1/users/alice/verify", json={"code": wrong_code(secret, clock)})
        assert locked.status_code == 429
        assert client.get("/v1/users/nobody").status_code == 404
        metrics = scrape(client)
    assert metrics['sparekey_audit_events_total{event="throttle.engaged",outcome="failure"}'] == 1
    assert metrics['sparekey_audit_events_total{event="user.created",outcome="success"}'] == 1
    assert metrics['sparekey_http_responses_total{code="429"}'] == 1
    assert metrics['sparekey_http_responses_total{code="404"}'] == 1
    assert metrics['sparekey_http_responses_total{code="200"}'] >= 7
    assert metrics['sparekey_verifications_total{factor_type="none",result="failure"}'] == 6


def test_an_unhandled_error_counts_as_a_500() -> None:
    metrics = Metrics()

    def fails(request: Request) -> PlainTextResponse:
        raise RuntimeError("a bug")

    app = Starlette(routes=[Route("/fails", fails), Route("/ok", lambda r: PlainTextResponse(""))])
    app.add_middleware(ResponseCounter, metrics=metrics)
    with TestClient(app, raise_server_exceptions=False) as client:
        assert client.get("/fails").status_code == 500
        assert client.get("/ok").status_code == 200
    text_out = metrics.render().decode()
    assert 'sparekey_http_responses_total{code="500"} 1.0' in text_out
    assert 'sparekey_http_responses_total{code="200"} 1.0' in text_out


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
def test_a_database_that_cannot_be_read_is_reported_not_raised(
    sparekey: Sparekey, settings: Settings, clock: FixedClock
) -> None:
    client = _client(sparekey)
    assert scrape(client)["sparekey_database_up{}"] == 1
    engine = create_engine(settings.resolved_database_url)
    with engine.begin() as conn:
        conn.execute(text("DROP TABLE outbox"))
    engine.dispose()
    metrics = scrape(client)
    assert metrics["sparekey_database_up{}"] == 0
    assert "sparekey_outbox_pending{}" not in metrics
    assert metrics[f'sparekey_build_info{{schema_head="0014",version="{__version__}"}}'] == 1


def test_state_is_read_at_most_once_per_interval(sparekey: Sparekey, clock: FixedClock) -> None:
    """A flood of scrapes costs the database one read per interval: figures wait for it."""
    client = TestClient(create_app(sparekey, metrics=Metrics(sparekey, state_seconds=3600)))
    client.headers["Authorization"] = (
        "Bearer " + sparekey.api_keys.create(name="m", scopes=[Scope.ADMIN]).token
    )
    before = scrape(client)["sparekey_audit_unsealed_records{}"]
    create_user(client)
    clock.advance(5)
    assert scrape(client)["sparekey_audit_unsealed_records{}"] == before
