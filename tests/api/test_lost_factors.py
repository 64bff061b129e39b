"""Lost devices: POST .../factors/{id}/lost stops a factor at once, lists it as lost, audits
``factor.lost`` and queues the notification in the same transaction. No step-up needed; but a
user whose every factor is lost adds one back only with a backup code or a recovery case."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import create_engine, text

from sparekey.api import create_app
from sparekey.domain.models import Scope
from sparekey.domain.ports import FixedClock
from sparekey.runtime import Sparekey
from sparekey.settings import Settings, load_settings
from tests.api.test_problems import assert_problem
from tests.api.test_webauthn import ORIGIN, register, sign_in
from tests.helpers import create_user, enroll, enroll_confirmed_totp, step_up, totp_code
from tests.softauthn import SoftAuthenticator


@pytest.fixture
def notifying(
    settings: Settings, clock: FixedClock, sparekey: Sparekey, admin_token: str
) -> Iterator[TestClient]:
    """A client of a node with a webhook configured (queued in the outbox, not delivered)."""
    configured = load_settings(
        settings.data_dir,
        database_url=settings.database_url,
        webhook_url="http://127.0.0.1:9/hooks",
        webhook_secret="whsec_lost_device_0123456789",
    )
    app = Sparekey.open(configured, clock=clock)
    try:
        with TestClient(create_app(app), raise_server_exceptions=False) as client:
            client.headers["Authorization"] = f"Bearer {admin_token}"
            yield client
    finally:
        app.close()


def outbox_rows(settings: Settings, event: str) -> list[tuple[str, str]]:
    engine = create_engine(settings.resolved_database_url)
    with engine.connect() as conn:
        rows = conn.execute(
            text("SELECT channel, payload FROM outbox WHERE event = :event"), {"event": event}
        ).all()
    engine.dispose()
    return [(row[0], row[1]) for row in rows]


def lost(client: TestClient, factor_id: object, user_id: str = "alice") -> Any:
    return client.post(f"/v1/users/{user_id}/factors/{factor_id}/lost")


def test_a_lost_totp_factor_stops_verifying_at_once(
    notifying: TestClient, clock: FixedClock, sparekey: Sparekey, settings: Settings
) -> None:
    client = notifying
    create_user(client, email="alice@example.com")
    phone = enroll_confirmed_totp(client, clock.now(), label="Phone")
    clock.advance(30)
    marked = lost(client, phone["id"])  # no Sparekey-Assurance: the user lost the device
    assert marked.status_code == 200, marked.text
    assert marked.json()["status"] == "lost"
    code = totp_code(str(phone["secret"]), clock.now())
    assert client.post("/v1/users/alice/verify", json={"code": code}).json() == {"verified": False}
    listed = client.get("/v1/users/alice/factors").json()["factors"]
    assert [(f["id"], f["status"], f["label"]) for f in listed] == [(phone["id"], "lost", "Phone")]

    [record] = [r for r in sparekey.audit.export() if r.event == "factor.lost"]
    assert record.user_id == "alice"
    assert record.details == {"factor_id": phone["id"], "factor_type": "totp"}
    [(channel, payload)] = outbox_rows(settings, "factor.lost")
    assert channel == "webhook", "the application is told, to end the user's sessions"
    assert phone["id"] in payload
    assert str(phone["secret"]) not in payload


def test_a_lost_security_key_no_longer_signs_in(client: TestClient, clock: FixedClock) -> None:
    create_user(client)
    key = SoftAuthenticator()
    factor = register(client, key).json()
    _, before = sign_in(client, key)
    assert before["verified"] is True
    options = client.post("/v1/webauthn/authentications", json={"user_id": "alice"}).json()
    assert lost(client, factor["id"]).status_code == 200
    assertion = key.get(options["options"], origin=ORIGIN)  # begun before; finished after
    answer = client.post("/v1/webauthn/authentications/verify", json={"credential": assertion})
    assert answer.json() == {"verified": False, "user_id": None, "factor_id": None}
    none_left = client.post("/v1/webauthn/authentications", json={"user_id": "alice"})
    assert_problem(none_left, 409, "no-credentials")
    _, passkey = sign_in(client, key, None)  # the authenticator still offers it
    assert passkey["verified"] is False


def test_marking_lost_twice_is_a_conflict_and_a_lost_factor_is_removed_with_a_step_up(
    client: TestClient, clock: FixedClock, sparekey: Sparekey
) -> None:
    create_user(client)
    codes = client.post("/v1/users/alice/backup-codes").json()["codes"]
    phone = enroll_confirmed_totp(client, clock.now())
    assert lost(client, phone["id"]).status_code == 200
    body = assert_problem(lost(client, phone["id"]), 409, "factor-state")
    assert "already" in str(body["detail"])
    assert len([r for r in sparekey.audit.export() if r.event == "factor.lost"]) == 1
    path = f"/v1/users/alice/factors/{phone['id']}"
    assert_problem(client.delete(path), 403, "assurance-required")  # it would erase the trace
    assert client.delete(path, headers=step_up(client, codes[0])).status_code == 204
    assert client.get("/v1/users/alice/factors").json()["factors"] == []


def test_a_lost_factor_is_removed_with_a_step_up_from_another(
    client: TestClient, clock: FixedClock
) -> None:
    create_user(client)
    phone = enroll_confirmed_totp(client, clock.now())
    clock.advance(30)
    headers = step_up(client, totp_code(str(phone["secret"]), clock.now()))
    tablet = enroll_confirmed_totp(client, clock.now(), headers=headers)
    assert lost(client, phone["id"]).status_code == 200
    path = f"/v1/users/alice/factors/{phone['id']}"
    assert_problem(client.delete(path), 403, "assurance-required")
    assert client.delete(path, headers=headers).status_code == 204, "not the last active one"
    tablet_path = f"/v1/users/alice/factors/{tablet['id']}"
    assert_problem(client.delete(tablet_path, headers=headers), 409, "last-factor")


def test_only_an_active_factor_can_be_lost(client: TestClient) -> None:
    create_user(client)
    pending = enroll(client)
    body = assert_problem(lost(client, pending["id"]), 409, "factor-state")
    assert "pending" in str(body["detail"])
    assert_problem(lost(client, "fct_nope"), 404, "factor-not-found")
    assert_problem(lost(client, "fct_nope", "nobody"), 404, "user-not-found")


def test_marking_lost_needs_the_manage_scope(
    client: TestClient, clock: FixedClock, sparekey: Sparekey
) -> None:
    create_user(client)
    phone = enroll_confirmed_totp(client, clock.now())
    token = sparekey.api_keys.create(name="login-page", scopes=[Scope.VERIFY]).token
    answer = client.post(
        f"/v1/users/alice/factors/{phone['id']}/lost",
        headers={"Authorization": f"Bearer {token}"},
    )
    assert_problem(answer, 403, "forbidden")
    manager = sparekey.api_keys.create(name="app", scopes=[Scope.MANAGE]).token
    answer = client.post(
        f"/v1/users/alice/factors/{phone['id']}/lost",
        json={"context": {"ip": "203.0.113.7"}},
        headers={"Authorization": f"Bearer {manager}"},
    )
    assert answer.status_code == 200, answer.text
    [record] = [r for r in sparekey.audit.export() if r.event == "factor.lost"]
    assert record.ip == "203.0.113.7"


def test_with_every_factor_lost_a_session_alone_cannot_add_a_way_in(
    client: TestClient, clock: FixedClock, sparekey: Sparekey
) -> None:
    """Marking lost needs no step-up (it only takes access away). So it must not lead to a free
    enrollment: whoever holds the user's session could mark every factor lost and enroll their
    own. Once a factor was confirmed, adding one takes a backup code or a recovery case."""
    create_user(client)
    phone = enroll_confirmed_totp(client, clock.now())
    clock.advance(30)
    codes = client.post(
        "/v1/users/alice/backup-codes",
        headers=step_up(client, totp_code(str(phone["secret"]), clock.now())),
    ).json()["codes"]
    assert lost(client, phone["id"]).status_code == 200
    for refused in (
        client.post("/v1/users/alice/factors", json={"type": "totp"}),
        client.post("/v1/users/alice/webauthn/registrations"),
        client.post("/v1/users/alice/backup-codes"),
    ):
        body = assert_problem(refused, 403, "assurance-required")
        assert "marked lost" in str(body["detail"])
    assert [f["id"] for f in client.get("/v1/users/alice/factors").json()["factors"]] == [
        phone["id"]
    ], "nothing was added"

    clock.advance(30)
    headers = step_up(client, codes[0])  # the user's own way back
    replacement = enroll_confirmed_totp(client, clock.now(), headers=headers)
    listed = client.get("/v1/users/alice/factors").json()["factors"]
    assert [(f["id"], f["status"]) for f in listed] == [
        (phone["id"], "lost"),
        (replacement["id"], "active"),
    ]
