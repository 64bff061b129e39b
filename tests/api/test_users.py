from fastapi.testclient import TestClient

from tests.helpers import create_user


def test_create_get_patch_delete(client: TestClient) -> None:
    created = create_user(client, "alice", display_name="Alice", email="alice@example.com")
    assert created["display_name"] == "Alice"
    assert client.get("/v1/users/alice").json()["email"] == "alice@example.com"

    patched = client.patch("/v1/users/alice", json={"display_name": "Alice A."})
    assert patched.status_code == 200
    assert patched.json()["display_name"] == "Alice A."
    assert patched.json()["email"] == "alice@example.com", "fields not sent stay as they were"

    cleared = client.patch("/v1/users/alice", json={"email": None})
    assert cleared.json()["email"] is None

    assert client.delete("/v1/users/alice").status_code == 204
    assert client.get("/v1/users/alice").status_code == 404


def test_deleting_a_user_removes_their_factors(client: TestClient) -> None:
    create_user(client, "alice")
    client.post("/v1/users/alice/factors", json={"type": "totp"})
    client.post("/v1/users/alice/backup-codes")
    assert client.delete("/v1/users/alice").status_code == 204
    create_user(client, "alice")
    assert client.get("/v1/users/alice/factors").json() == {"factors": []}


def test_search_pages_through_every_match_once(client: TestClient) -> None:
    for i in range(7):
        create_user(client, f"user{i}", display_name=f"Person {i}")
    create_user(client, "other", email="someone@example.com")
    seen: list[str] = []
    cursor = None
    while True:
        params = {"query": "person", "limit": "3"} | ({"cursor": cursor} if cursor else {})
        page = client.get("/v1/users", params=params).json()
        seen += [u["id"] for u in page["users"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == [f"user{i}" for i in range(7)]
    by_email = client.get("/v1/users", params={"query": "SOMEONE@"}).json()
    assert [u["id"] for u in by_email["users"]] == ["other"]


def test_search_treats_wildcards_as_text(client: TestClient) -> None:
    create_user(client, "a_b")
    create_user(client, "axb")
    found = client.get("/v1/users", params={"query": "a_b"}).json()["users"]
    assert [u["id"] for u in found] == ["a_b"]
    assert client.get("/v1/users", params={"query": "%"}).json()["users"] == []
