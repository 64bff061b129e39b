"""GET /v1/audit: admin only, filtered, paged; the context the application passes is recorded."""

from fastapi.testclient import TestClient

from sparekey.domain.models import Scope
from sparekey.runtime import Sparekey
from tests.api.test_problems import assert_problem
from tests.helpers import create_user


def test_filters_and_pages(client: TestClient) -> None:
    context = {"ip": "2001:db8::1", "user_agent": "Phone/2"}
    client.post("/v1/users", json={"id": "alice", "context": context})
    create_user(client, "bob")
    for _ in range(3):
        client.post("/v1/users/alice/verify", json={"code": "nope", "context": context})
    page = client.get("/v1/audit", params={"user": "alice", "limit": "2"}).json()
    assert [e["event"] for e in page["events"]] == ["verify.failed", "verify.failed"]
    rest = client.get(
        "/v1/audit", params={"user": "alice", "limit": "2", "cursor": page["next_cursor"]}
    ).json()
    assert [e["event"] for e in rest["events"]] == ["verify.failed", "user.created"]
    assert rest["next_cursor"] is None
    created = rest["events"][1]
    assert (created["ip"], created["user_agent"]) == ("2001:db8::1", "Phone/2")
    assert created["actor_type"] == "api_key"
    only = client.get("/v1/audit", params={"event": ["user.created"]}).json()["events"]
    assert sorted(e["user_id"] for e in only) == ["alice", "bob"]


def test_time_range_needs_a_zone(client: TestClient) -> None:
    create_user(client)
    assert_problem(
        client.get("/v1/audit", params={"since": "2026-01-01T00:00:00"}), 422, "invalid-input"
    )
    later = client.get("/v1/audit", params={"since": "2099-01-01T00:00:00Z"}).json()
    assert later["events"] == []


def test_manage_scope_cannot_read_the_audit_log(client: TestClient, sparekey: Sparekey) -> None:
    key = sparekey.api_keys.create(name="app", scopes=[Scope.MANAGE])
    client.headers["Authorization"] = f"Bearer {key.token}"
    assert_problem(client.get("/v1/audit"), 403, "forbidden")


def test_a_bad_context_is_refused_and_writes_nothing(client: TestClient) -> None:
    response = client.post("/v1/users", json={"id": "alice", "context": {"ip": "not-an-ip"}})
    assert_problem(response, 422, "invalid-input")
    assert client.get("/v1/users/alice").status_code == 404
