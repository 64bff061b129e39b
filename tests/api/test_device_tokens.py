"""Device tokens over the API, on SQLite and PostgreSQL: shown once and stored as a keyed hash,
created only after a step-up, never listed, revoked at once, a credential of their own kind
(never an API key, and no API key on vault backups), audited and notified."""

from __future__ import annotations

import json
import re

from fastapi.testclient import TestClient
from sqlalchemy import create_engine, func, select

from sparekey.domain.models import Scope
from sparekey.domain.ports import FixedClock
from sparekey.runtime import Sparekey, initialize
from sparekey.settings import Settings, load_settings
from sparekey.storage.tables import device_tokens, vault_backups
from tests.api.test_problems import assert_problem
from tests.api.test_step_up import alice_with_totp, fresh_code
from tests.helpers import OVERRIDE, create_user, step_up
from tests.helpers_notifications import LOOPBACK, SmtpReceiver, WebhookReceiver
from tests.storage.test_secrets_at_rest import _all_bytes

TOKENS = "/v1/users/alice/device-tokens"
BACKUPS = "/v1/users/alice/vault-backups"
TOKEN = re.compile(r"^skd_[A-Za-z0-9_-]{43}$")


def create_token(
    client: TestClient, user_id: str = "alice", headers: dict[str, str] | None = None
) -> dict[str, str]:
    made = client.post(
        f"/v1/users/{user_id}/device-tokens", json={"name": "Laptop"}, headers=headers
    )
    assert made.status_code == 201, made.text
    return dict(made.json())


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def test_a_token_is_shown_once_and_stored_only_as_a_keyed_hash(
    client: TestClient, sparekey: Sparekey, settings: Settings, backend: str
) -> None:
    create_user(client)  # no factor yet: no step-up
    made = create_token(client)
    assert set(made) == {"id", "name", "token", "created_at"}
    assert TOKEN.match(made["token"]), made["token"]
    assert made["id"].startswith("dtk_")
    assert made["name"] == "Laptop"

    listing = client.get(TOKENS)
    assert listing.status_code == 200
    (listed,) = listing.json()["device_tokens"]
    assert set(listed) == {"id", "name", "created_at", "last_used_at", "revoked_at"}
    assert listed["id"] == made["id"]
    secret = made["token"].removeprefix("skd_")
    assert secret not in listing.text

    stored = _all_bytes(settings, backend)
    assert secret.encode() not in stored
    assert made["id"].encode() in stored  # the row is there, just not the token
    (created,) = [r for r in sparekey.audit.export() if r.event == "device_token.created"]
    assert created.user_id == "alice"
    assert created.details == {"device_token_id": made["id"], "name": "Laptop"}
    assert secret not in json.dumps([r.details for r in sparekey.audit.export()])


def test_with_an_active_factor_creating_one_needs_a_step_up(
    client: TestClient, clock: FixedClock, sparekey: Sparekey
) -> None:
    factor = alice_with_totp(client, clock)
    refused = client.post(TOKENS, json={"name": "Laptop"})
    body = assert_problem(refused, 403, "assurance-required")
    assert "Sparekey-Assurance" in str(body["detail"])
    wrong = client.post(TOKENS, json={"name": "Laptop"}, headers={"Sparekey-Assurance": "sat1.x"})
    assert_problem(wrong, 403, "assurance-required")
    assert client.get(TOKENS).json() == {"device_tokens": []}, "nothing was created"

    create_token(client, headers=step_up(client, fresh_code(factor, clock)))
    create_token(client, headers=OVERRIDE)  # an admin-scope key may override (audited)
    overridden = [r for r in sparekey.audit.export() if r.event == "assurance.overridden"]
    assert [r.details["operation"] for r in overridden] == ["device_token.create"]

    manager = sparekey.api_keys.create(name="back office", scopes=[Scope.MANAGE]).token
    by_manager = client.post(
        TOKENS, json={"name": "Laptop"}, headers={**OVERRIDE, **bearer(manager)}
    )
    assert_problem(by_manager, 403, "forbidden")
    assert len(client.get(TOKENS).json()["device_tokens"]) == 2


def test_bad_names_and_unknown_users_are_refused(client: TestClient) -> None:
    create_user(client)
    for name in ("", "   ", "x" * 65, "tab\there"):
        assert_problem(client.post(TOKENS, json={"name": name}), 422, "invalid-input")
    assert_problem(client.post(TOKENS, json={}), 422, "invalid-input")
    assert_problem(
        client.post("/v1/users/nobody/device-tokens", json={"name": "Laptop"}),
        404,
        "user-not-found",
    )
    assert_problem(client.get("/v1/users/nobody/device-tokens"), 404, "user-not-found")


def test_revoking_stops_the_token_at_once_and_twice_is_204(
    client: TestClient, sparekey: Sparekey
) -> None:
    create_user(client)
    made = create_token(client)
    assert client.get(BACKUPS, headers=bearer(made["token"])).status_code == 200
    assert client.delete(f"{TOKENS}/{made['id']}").status_code == 204
    refused = client.get(BACKUPS, headers=bearer(made["token"]))
    assert "revoked" in str(assert_problem(refused, 401, "unauthorized")["detail"])
    assert client.delete(f"{TOKENS}/{made['id']}").status_code == 204, "idempotent"
    revoked = [r for r in sparekey.audit.export() if r.event == "device_token.revoked"]
    assert [r.details for r in revoked] == [{"device_token_id": made["id"]}], "recorded once"
    (listed,) = client.get(TOKENS).json()["device_tokens"]
    assert listed["revoked_at"] is not None
    assert_problem(client.delete(f"{TOKENS}/dtk_nope"), 404, "device-token-not-found")
    assert_problem(client.delete("/v1/users/nobody/device-tokens/dtk_nope"), 404, "user-not-found")


def test_a_device_token_is_a_credential_of_its_own_kind(
    client: TestClient, admin_token: str
) -> None:
    create_user(client)
    create_user(client, "bob")
    alices = create_token(client)["token"]
    bobs = create_token(client, "bob")["token"]

    # Never where an API key is asked for
    for path in ("/v1/users/alice", TOKENS, "/v1/users"):
        refused = client.get(path, headers=bearer(alices))
        assert "vault backups only" in str(assert_problem(refused, 401, "unauthorized")["detail"])
    # ... and no API key on vault backups
    refused = client.get(BACKUPS, headers=bearer(admin_token))
    assert "device token" in str(assert_problem(refused, 401, "unauthorized")["detail"])
    # Another user's token
    assert_problem(client.get(BACKUPS, headers=bearer(bobs)), 403, "forbidden")
    put = client.put(
        f"{BACKUPS}/latest",
        content=b"x",
        headers={**bearer(bobs), "Content-Type": "application/octet-stream", "If-None-Match": "*"},
    )
    assert_problem(put, 403, "forbidden")
    # None, malformed, unknown
    anonymous = TestClient(client.app, raise_server_exceptions=False)
    missing = anonymous.get(BACKUPS)
    assert_problem(missing, 401, "unauthorized")
    assert missing.headers["www-authenticate"] == "Bearer"
    for token in ("nonsense", "skd_short", "skd_" + "A" * 43, alices[:-1] + "!"):
        assert_problem(anonymous.get(BACKUPS, headers=bearer(token)), 401, "unauthorized")
    assert client.get(BACKUPS, headers=bearer(alices)).status_code == 200


def test_last_use_is_recorded_to_the_minute(client: TestClient, clock: FixedClock) -> None:
    create_user(client)
    made = create_token(client)
    assert client.get(TOKENS).json()["device_tokens"][0]["last_used_at"] is None
    client.get(BACKUPS, headers=bearer(made["token"]))
    first = client.get(TOKENS).json()["device_tokens"][0]["last_used_at"]
    assert first is not None
    clock.advance(30)
    client.get(BACKUPS, headers=bearer(made["token"]))
    assert client.get(TOKENS).json()["device_tokens"][0]["last_used_at"] == first
    clock.advance(31)
    client.get(BACKUPS, headers=bearer(made["token"]))
    assert client.get(TOKENS).json()["device_tokens"][0]["last_used_at"] != first


def test_deleting_the_user_removes_their_tokens_and_backups(
    client: TestClient, settings: Settings
) -> None:
    create_user(client)
    token = create_token(client)["token"]
    stored = client.put(
        f"{BACKUPS}/latest",
        content=b"sealed vault",
        headers={**bearer(token), "Content-Type": "application/octet-stream", "If-None-Match": "*"},
    )
    assert stored.status_code == 201, stored.text
    assert client.delete("/v1/users/alice").status_code == 204
    engine = create_engine(settings.resolved_database_url)
    with engine.connect() as conn:
        for table in (device_tokens, vault_backups):
            assert conn.execute(select(func.count()).select_from(table)).scalar_one() == 0
    engine.dispose()
    assert_problem(client.get(BACKUPS, headers=bearer(token)), 401, "unauthorized")


def test_the_user_and_the_application_are_told(settings: Settings, clock: FixedClock) -> None:
    with SmtpReceiver() as smtp, WebhookReceiver() as receiver:
        configured = load_settings(
            settings.data_dir,
            database_url=settings.database_url,
            smtp_host=LOOPBACK,
            smtp_port=smtp.port,
            smtp_starttls=False,
            smtp_from="security@acme.example",
            webhook_url=receiver.url,
            webhook_secret="whsec_device_tokens_0123456789",
        )
        initialize(configured, clock=clock)
        app = Sparekey.open(configured, clock=clock)
        try:
            app.users.create(user_id="alice", display_name=None, email="alice@example.com")
            made = app.device_tokens.create("alice", name="Laptop")
            app.device_tokens.revoke("alice", made.device_token.id)
            assert app.delivery.run_once() == 4
        finally:
            app.close()
    hooks = [json.loads(hook.body) for hook in receiver.hooks]
    assert [h["type"] for h in hooks] == ["device_token.created", "device_token.revoked"]
    assert all(h["details"]["device_token_id"] == made.device_token.id for h in hooks)
    subjects = [m.message["Subject"] for m in smtp.mails]
    assert subjects == [
        "Sparekey: A computer can now back up your authenticator vault",
        "Sparekey: A computer can no longer back up your authenticator vault",
    ]
    secret = made.token.removeprefix("skd_")
    assert all(secret not in m.message.as_string() for m in smtp.mails)
    assert all(secret.encode() not in hook.body for hook in receiver.hooks)
