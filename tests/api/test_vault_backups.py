"""Vault backups over the API, on SQLite and PostgreSQL: conditional writes (428, 412 with the
current ETag), racing uploads (exactly one wins), the size limit read with a bound, pruning,
exact bytes back, audit records, the OpenAPI document, and the server's own backup/restore."""

from __future__ import annotations

import hashlib
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from sparekey.domain.models import Caller
from sparekey.domain.ports import FixedClock
from sparekey.runtime import Sparekey, kek_resolver
from sparekey.services.backup import create_backup, restore_backup
from sparekey.settings import Settings, load_settings
from sparekey.storage.database import Database
from tests.api.test_device_tokens import bearer, create_token
from tests.api.test_problems import PROBLEM, assert_problem
from tests.helpers import create_user, race

LATEST = "/v1/users/alice/vault-backups/latest"
BACKUPS = "/v1/users/alice/vault-backups"
OCTETS = "application/octet-stream"
MAX_BYTES = 4096
KEEP = 3


@pytest.fixture
def settings(tmp_path: Path, database_url: str) -> Settings:
    """Small limits, so that the limits are cheap to reach."""
    return load_settings(
        tmp_path / "data",
        database_url=database_url,
        vault_backup_max_bytes=MAX_BYTES,
        vault_backup_keep=KEEP,
    )


@pytest.fixture
def desktop(client: TestClient) -> dict[str, str]:
    """Alice's desktop authenticator: the headers of her device token."""
    create_user(client)
    made = create_token(client)
    return {**bearer(made["token"]), "Content-Type": OCTETS, "X-Token-Id": made["id"]}


def put(client: TestClient, desktop: dict[str, str], content: Any, **conditions: str) -> Any:
    headers = {k: v for k, v in desktop.items() if k != "X-Token-Id"}
    names = {"if_match": "If-Match", "if_none_match": "If-None-Match"}
    headers.update({names[k]: v for k, v in conditions.items()})
    return client.put(LATEST, content=content, headers=headers)


def etag_of(content: bytes, version: int) -> str:
    return f'"v{version}-{hashlib.sha256(content).hexdigest()[:16]}"'


def test_a_write_must_name_what_it_replaces(client: TestClient, desktop: dict[str, str]) -> None:
    assert_problem(put(client, desktop, b"vault"), 428, "precondition-required")
    weak_condition = put(client, desktop, b"vault", if_none_match='"v1-0000000000000000"')
    assert_problem(weak_condition, 428, "precondition-required")
    assert client.get(BACKUPS, headers=desktop).json() == {"backups": [], "latest": None}
    assert_problem(client.get(LATEST, headers=desktop), 404, "vault-backup-not-found")
    assert_problem(client.get(f"{BACKUPS}/1", headers=desktop), 404, "vault-backup-not-found")
    stale = put(client, desktop, b"vault", if_match=etag_of(b"vault", 1))
    assert_problem(stale, 412, "precondition-failed")
    assert "etag" not in stale.headers, "nothing is there yet"


def test_first_second_and_a_stale_upload(
    client: TestClient, desktop: dict[str, str], sparekey: Sparekey
) -> None:
    first = put(client, desktop, b"first vault", if_none_match="*")
    assert first.status_code == 201, first.text
    sha = hashlib.sha256(b"first vault").hexdigest()
    assert first.json() == {
        "version": 1,
        "size": 11,
        "sha256": sha,
        "created_at": first.json()["created_at"],
    }
    assert first.headers["etag"] == f'"v1-{sha[:16]}"'
    assert first.headers["cache-control"] == "no-store"
    v1 = first.headers["etag"]

    again = put(client, desktop, b"another first", if_none_match="*")
    assert_problem(again, 412, "precondition-failed")
    assert again.headers["etag"] == v1

    second = put(client, desktop, b"second vault", if_match=v1)
    assert second.status_code == 201, second.text
    assert second.json()["version"] == 2
    v2 = second.headers["etag"]
    assert v2 == etag_of(b"second vault", 2)

    stale = put(client, desktop, b"from the other computer", if_match=v1)
    body = assert_problem(stale, 412, "precondition-failed")
    assert stale.headers["etag"] == v2
    assert v2 in str(body["detail"])
    assert_problem(put(client, desktop, b"weak", if_match=f"W/{v2}"), 412, "precondition-failed")

    listed = client.get(BACKUPS, headers=desktop)
    assert listed.headers["cache-control"] == "no-store"
    assert listed.json()["latest"] == 2
    assert [(b["version"], b["size"]) for b in listed.json()["backups"]] == [(2, 12), (1, 11)]
    assert {b["device_token_id"] for b in listed.json()["backups"]} == {desktop["X-Token-Id"]}

    stored = [r for r in sparekey.audit.export() if r.event == "vault_backup.stored"]
    assert [r.details for r in stored] == [
        {"version": 1, "size": 11, "sha256": sha, "device_token_id": desktop["X-Token-Id"]},
        {
            "version": 2,
            "size": 12,
            "sha256": hashlib.sha256(b"second vault").hexdigest(),
            "device_token_id": desktop["X-Token-Id"],
        },
    ]
    assert all(r.actor_type == "device_token" and r.user_id == "alice" for r in stored)


def test_the_exact_bytes_come_back_with_their_etag(
    client: TestClient, desktop: dict[str, str]
) -> None:
    every_byte = bytes(range(256)) * 3
    v1 = put(client, desktop, every_byte, if_none_match="*").headers["etag"]
    v2 = put(client, desktop, b"\x00newer\xff", if_match=v1).headers["etag"]
    latest = client.get(LATEST, headers=desktop)
    assert latest.status_code == 200
    assert latest.content == b"\x00newer\xff"
    assert latest.headers["etag"] == v2
    assert latest.headers["content-type"] == OCTETS
    assert latest.headers["cache-control"] == "no-store"
    older = client.get(f"{BACKUPS}/1", headers=desktop)
    assert older.content == every_byte
    assert older.headers["etag"] == v1
    assert client.get(f"{BACKUPS}/latest", headers=desktop).content == b"\x00newer\xff"
    assert_problem(client.get(f"{BACKUPS}/3", headers=desktop), 404, "vault-backup-not-found")
    assert_problem(client.get(f"{BACKUPS}/0", headers=desktop), 422, "invalid-input")


def test_versions_beyond_keep_are_pruned_in_the_same_transaction(
    client: TestClient, desktop: dict[str, str], sparekey: Sparekey
) -> None:
    etag = put(client, desktop, b"v1", if_none_match="*").headers["etag"]
    for n in range(2, 6):
        answer = put(client, desktop, f"v{n}".encode(), if_match=etag)
        assert answer.status_code == 201, answer.text
        etag = answer.headers["etag"]
    listed = client.get(BACKUPS, headers=desktop).json()
    assert [b["version"] for b in listed["backups"]] == [5, 4, 3]
    assert_problem(client.get(f"{BACKUPS}/2", headers=desktop), 404, "vault-backup-not-found")
    assert client.get(f"{BACKUPS}/3", headers=desktop).content == b"v3"
    stored = [r.details for r in sparekey.audit.export() if r.event == "vault_backup.stored"]
    assert [d.get("pruned") for d in stored] == [None, None, None, [1], [2]]


def test_the_size_limit_and_the_media_type(client: TestClient, desktop: dict[str, str]) -> None:
    too_big = put(client, desktop, b"x" * (MAX_BYTES + 1), if_none_match="*")
    assert_problem(too_big, 413, "vault-backup-too-large")

    def chunks() -> Iterator[bytes]:  # no Content-Length: the body is cut off at the limit
        for _ in range(100):
            yield b"y" * 1000

    assert_problem(put(client, desktop, chunks(), if_none_match="*"), 413, "vault-backup-too-large")
    assert_problem(put(client, desktop, b"", if_none_match="*"), 422, "invalid-input")
    plain = {**desktop, "Content-Type": "text/plain"}
    assert_problem(put(client, plain, b"vault", if_none_match="*"), 415, "unsupported-media-type")
    assert client.get(BACKUPS, headers=desktop).json()["latest"] is None, "nothing was stored"
    exactly = put(client, desktop, b"z" * MAX_BYTES, if_none_match="*")
    assert exactly.status_code == 201, exactly.text
    assert exactly.json()["size"] == MAX_BYTES


def test_racing_uploads_from_the_same_latest_store_exactly_one(
    client: TestClient, desktop: dict[str, str]
) -> None:
    v1 = put(client, desktop, b"shared start", if_none_match="*").headers["etag"]

    def upload() -> tuple[int, str | None]:
        answer = put(client, desktop, b"from one of many computers", if_match=v1)
        return answer.status_code, answer.headers.get("etag")

    results = race(upload, threads=8)
    assert sorted(status for status, _ in results) == [201] + [412] * 7
    winner = next(etag for status, etag in results if status == 201)
    assert {etag for status, etag in results if status == 412} == {winner}
    listed = client.get(BACKUPS, headers=desktop).json()
    assert [b["version"] for b in listed["backups"]] == [2, 1]


def test_the_openapi_document_describes_vault_backups(client: TestClient) -> None:
    paths = client.get("/openapi.json").json()["paths"]
    store = paths["/v1/users/{user_id}/vault-backups/latest"]["put"]
    assert store["security"] == [{"DeviceToken": []}]
    assert list(store["requestBody"]["content"]) == [OCTETS]
    assert {"If-Match", "If-None-Match"} <= {p["name"] for p in store["parameters"]}
    for status in ("401", "403", "412", "413", "415", "428"):
        assert list(store["responses"][status]["content"]) == [PROBLEM], status
    assert "ETag" in store["responses"]["201"]["headers"]
    for path in ("latest", "{version}"):
        read = paths[f"/v1/users/{{user_id}}/vault-backups/{path}"]["get"]
        assert list(read["responses"]["200"]["content"]) == [OCTETS]
        assert list(read["responses"]["404"]["content"]) == [PROBLEM]
    tokens = paths["/v1/users/{user_id}/device-tokens"]
    assert tokens["post"]["security"] == [{"HTTPBearer": []}]
    for slug in ("precondition-failed", "precondition-required", "vault-backup-too-large"):
        assert client.get(f"/problems/{slug}").status_code == 200


def test_the_servers_own_backup_carries_tokens_and_vault_backups(
    sparekey: Sparekey, settings: Settings, clock: FixedClock, tmp_path: Path
) -> None:
    from sparekey.services.vault_backups import Precondition

    operator = Caller(type="operator", id="cli")
    sparekey.users.create(user_id="alice", display_name=None, email=None)
    made = sparekey.device_tokens.create("alice", name="Laptop")
    token = made.device_token
    first = sparekey.vault_backups.store(
        "alice",
        b"\x01sealed one",
        device_token=token,
        precondition=Precondition(if_none_match_any=True),
        caller=operator,
    )
    sparekey.vault_backups.store(
        "alice",
        b"\x02sealed two",
        device_token=token,
        precondition=Precondition(if_match=(first.etag,)),
        caller=operator,
    )
    path = tmp_path / "server.skb"
    manifest = create_backup(
        path,
        db=sparekey.db,
        keyring=sparekey.keyring,
        auditor=sparekey.audit,
        clock=clock,
        caller=operator,
    )
    assert manifest.tables["device_tokens"] == 1
    assert manifest.tables["vault_backups"] == 2

    restored_settings = load_settings(tmp_path / "restored")
    restored_settings.data_dir.mkdir()
    shutil.copy2(settings.resolved_key_file, restored_settings.resolved_key_file)
    target = Database(restored_settings.resolved_database_url)
    try:
        restore_backup(
            path,
            db=target,
            resolve_kek=kek_resolver(restored_settings),
            clock=clock,
            caller=operator,
        )
    finally:
        target.dispose()
    restored = Sparekey.open(restored_settings, clock=clock)
    try:
        assert restored.device_tokens.authenticate(made.token, user_id="alice").id == token.id
        assert restored.vault_backups.read("alice").content == b"\x02sealed two"
        assert restored.vault_backups.read("alice", 1).content == b"\x01sealed one"
    finally:
        restored.close()
