"""WebAuthn over the API, driven by a software authenticator (tests/softauthn.py) that py_webauthn
and python-fido2 both accept; the real browser is in tests/browser/."""

from __future__ import annotations

import copy
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import create_engine, text

from sparekey.api import create_app
from sparekey.domain.models import Scope
from sparekey.domain.ports import FixedClock
from sparekey.runtime import Sparekey
from sparekey.settings import Settings, load_settings
from tests.helpers import assured, create_user, enroll_confirmed_totp
from tests.softauthn import SoftAuthenticator, SoftAuthenticatorError, b64url, b64url_decode

ORIGIN = "http://localhost:8000"  # the default: this server's public URL, rp id localhost


def register(
    client: TestClient,
    authenticator: SoftAuthenticator,
    user_id: str = "alice",
    *,
    label: str | None = None,
    origin: str = ORIGIN,
    headers: dict[str, str] | None = None,
) -> Any:
    """``headers``: a step-up, once the user has an active factor."""
    options = client.post(f"/v1/users/{user_id}/webauthn/registrations", headers=headers)
    assert options.status_code == 200, options.text
    credential = authenticator.create(options.json()["options"], origin=origin)
    body: dict[str, Any] = {"credential": credential}
    if label:
        body["label"] = label
    return client.post(
        f"/v1/users/{user_id}/webauthn/registrations/verify", json=body, headers=headers
    )


def sign_in(
    client: TestClient,
    authenticator: SoftAuthenticator,
    user_id: str | None = "alice",
    *,
    origin: str = ORIGIN,
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Returns (the assertion sent, the answer)."""
    body = {"user_id": user_id} if user_id else {}
    options = client.post("/v1/webauthn/authentications", json=body)
    assert options.status_code == 200, options.text
    assertion = authenticator.get(options.json()["options"], origin=origin)
    answer = client.post("/v1/webauthn/authentications/verify", json={"credential": assertion})
    assert answer.status_code == 200, answer.text
    return assertion, answer.json()


def audit_events(sparekey: Sparekey, prefix: str = "") -> list[str]:
    return [r.event for r in sparekey.audit.export() if r.event.startswith(prefix)]


def test_two_authenticators_for_one_user_each_sign_in(client: TestClient) -> None:
    create_user(client)
    platform = SoftAuthenticator(backup_eligible=True, backed_up=True)
    roaming = SoftAuthenticator(attachment="cross-platform", aaguid=bytes(range(16)))
    first = register(client, platform, label="Laptop")
    _, signed_in = sign_in(client, platform)
    second = register(client, roaming, headers=assured(signed_in["assurance_token"]))
    assert first.status_code == 201, first.text
    assert second.status_code == 201, second.text
    one, two = first.json(), second.json()
    assert (one["type"], one["status"], one["label"]) == ("webauthn", "active", "Laptop")
    assert one["webauthn"]["backup_eligible"] is True
    assert one["webauthn"]["backed_up"] is True
    assert one["webauthn"]["transports"] == ["hybrid", "internal"]
    assert two["label"] == "Security key"
    assert two["webauthn"]["aaguid"] == "00010203-0405-0607-0809-0a0b0c0d0e0f"
    assert two["webauthn"]["transports"] == ["usb"]
    assert two["webauthn"]["backup_eligible"] is False

    listed = client.get("/v1/users/alice/factors").json()["factors"]
    assert {f["id"] for f in listed} == {one["id"], two["id"]}
    unused = {f["id"] for f in listed if f["last_used_at"] is None}
    assert unused == {two["id"]}, "the laptop signed in once, to step up for the second key"

    for authenticator, factor in ((platform, one), (roaming, two)):
        _, answer = sign_in(client, authenticator)
        assert str(answer.pop("assurance_token")).startswith("sat1.")
        assert answer == {"verified": True, "user_id": "alice", "factor_id": factor["id"]}
    used = client.get(f"/v1/users/alice/factors/{one['id']}").json()
    assert used["last_used_at"] is not None


def test_the_same_key_cannot_be_registered_twice(client: TestClient) -> None:
    create_user(client)
    key = SoftAuthenticator()
    assert register(client, key).status_code == 201
    _, signed_in = sign_in(client, key)
    options = client.post(
        "/v1/users/alice/webauthn/registrations", headers=assured(signed_in["assurance_token"])
    ).json()["options"]
    assert [c["id"] for c in options["excludeCredentials"]] == [
        b64url(credential_id) for credential_id in key.credentials
    ]
    with pytest.raises(SoftAuthenticatorError, match="InvalidStateError"):
        key.create(options, origin=ORIGIN)


def test_a_passkey_signs_in_without_a_user_name(client: TestClient) -> None:
    create_user(client, "alice")
    create_user(client, "bob")
    alices, bobs = SoftAuthenticator(counter_step=0), SoftAuthenticator()
    register(client, alices, "alice")
    register(client, bobs, "bob")
    options = client.post("/v1/webauthn/authentications", json={}).json()["options"]
    assert options["allowCredentials"] == []
    _, answer = sign_in(client, bobs, None)
    assert answer["verified"] is True
    assert answer["user_id"] == "bob"
    _, answer = sign_in(client, alices, None)
    assert answer["user_id"] == "alice"
    _, again = sign_in(client, alices, None)  # a counter that stays 0 is fine
    assert again["verified"] is True


def test_a_removed_credential_no_longer_signs_in(client: TestClient) -> None:
    create_user(client)
    key = SoftAuthenticator()
    factor = register(client, key).json()
    _, signed_in = sign_in(client, key)
    options = client.post("/v1/webauthn/authentications", json={"user_id": "alice"}).json()
    removed = client.delete(
        f"/v1/users/alice/factors/{factor['id']}?force=true",  # the last factor: admin's call
        headers=assured(signed_in["assurance_token"]),
    )
    assert removed.status_code == 204
    assertion = key.get(options["options"], origin=ORIGIN)
    answer = client.post("/v1/webauthn/authentications/verify", json={"credential": assertion})
    assert answer.json() == {"verified": False, "user_id": None, "factor_id": None}
    none_left = client.post("/v1/webauthn/authentications", json={"user_id": "alice"})
    assert none_left.status_code == 409
    assert none_left.json()["type"] == "/problems/no-credentials"


def test_a_replayed_assertion_is_refused(client: TestClient, sparekey: Sparekey) -> None:
    create_user(client)
    key = SoftAuthenticator()
    register(client, key)
    assertion, answer = sign_in(client, key)
    assert answer["verified"] is True
    replay = client.post("/v1/webauthn/authentications/verify", json={"credential": assertion})
    assert replay.json()["verified"] is False
    failed = [r for r in sparekey.audit.export() if r.event == "verify.failed"]
    assert failed[-1].details["reason"] == "unknown, expired or reused challenge"


def test_a_wrong_origin_is_refused(client: TestClient) -> None:
    create_user(client)
    key = SoftAuthenticator()
    refused = register(client, key, origin="http://localhost:9999")
    assert refused.status_code == 422
    assert refused.headers["content-type"] == "application/problem+json"
    assert refused.json()["type"] == "/problems/credential-rejected"
    assert "origin" in refused.json()["detail"]
    assert register(client, key).status_code == 201
    _, answer = sign_in(client, key, origin="http://evil.localhost:8000")
    assert answer["verified"] is False


def test_a_tampered_signature_is_refused(client: TestClient) -> None:
    create_user(client)
    key = SoftAuthenticator()
    register(client, key)
    options = client.post("/v1/webauthn/authentications", json={"user_id": "alice"}).json()
    assertion = key.get(options["options"], origin=ORIGIN)
    signature = bytearray(b64url_decode(assertion["response"]["signature"]))
    signature[-1] ^= 1
    assertion["response"]["signature"] = b64url(bytes(signature))
    answer = client.post("/v1/webauthn/authentications/verify", json={"credential": assertion})
    assert answer.json()["verified"] is False


def test_a_counter_that_goes_back_is_a_cloned_key(
    settings: Settings, clock: FixedClock, sparekey: Sparekey, admin_token: str
) -> None:
    notifying = load_settings(
        settings.data_dir,
        database_url=settings.database_url,
        webhook_url="http://127.0.0.1:9/hooks",  # queued in the outbox; not delivered here
        webhook_secret="whsec_clone_test_0123456789",
    )
    app = Sparekey.open(notifying, clock=clock)
    try:
        with TestClient(create_app(app), raise_server_exceptions=False) as client:
            client.headers["Authorization"] = f"Bearer {admin_token}"
            create_user(client, email="alice@example.com")
            key = SoftAuthenticator(counter_start=10)
            register(client, key)
            _, first = sign_in(client, key)
            assert first["verified"] is True
            credential_id = next(iter(key.credentials))
            key.set_sign_count(credential_id, 5)  # a copy of the key, made before its last use
            _, cloned = sign_in(client, key)
            assert cloned["verified"] is False
    finally:
        app.close()
    regressed = [r for r in sparekey.audit.export() if r.event == "webauthn.counter_regressed"]
    assert len(regressed) == 1
    assert regressed[0].user_id == "alice"
    assert (regressed[0].details["stored"], regressed[0].details["received"]) == (11, 6)
    engine = create_engine(settings.resolved_database_url)
    with engine.connect() as conn:
        queued = conn.execute(
            text("SELECT COUNT(*) FROM outbox WHERE event = 'webauthn.counter_regressed'")
        ).scalar()
    engine.dispose()
    assert queued == 1, "the application is told (and the user, where email is set up)"


def test_an_expired_challenge_is_refused(client: TestClient, clock: FixedClock) -> None:
    create_user(client)
    key = SoftAuthenticator()
    register(client, key)
    options = client.post("/v1/webauthn/authentications", json={"user_id": "alice"}).json()
    clock.advance(301)
    assertion = key.get(options["options"], origin=ORIGIN)
    answer = client.post("/v1/webauthn/authentications/verify", json={"credential": assertion})
    assert answer.json()["verified"] is False


def test_guessing_totp_codes_never_blocks_a_security_key(
    client: TestClient, clock: FixedClock
) -> None:
    create_user(client)
    totp = enroll_confirmed_totp(client, clock.now())
    key = SoftAuthenticator()
    assert register(client, key, headers=assured(totp["assurance_token"])).status_code == 201
    for _ in range(110):  # far past the lock and the suspension
        client.post("/v1/users/alice/verify", json={"code": "000000"})
        clock.advance(901)
    suspended = client.post("/v1/users/alice/verify", json={"code": "000000"})
    assert suspended.json()["type"] == "/problems/factors-suspended"
    _, answer = sign_in(client, key)
    assert answer["verified"] is True
    user = client.get("/v1/users/alice").json()
    assert user["throttle"]["suspended_at"] is None, "a security key lifts the suspension"


BROKEN_EITHER = [
    lambda c: {},
    lambda c: {**c, "id": 7},
    lambda c: {**c, "response": "nope"},
    lambda c: {**c, "response": {**c["response"], "clientDataJSON": "%%%"}},
    lambda c: {**c, "response": {**c["response"], "clientDataJSON": b64url(b"not json")}},
    lambda c: {**c, "response": {**c["response"], "clientDataJSON": b64url(b"[]")}},
    lambda c: {**c, "rawId": "", "id": ""},
]


@pytest.mark.parametrize(
    "mangle",
    [
        *BROKEN_EITHER,
        lambda c: {**c, "response": {**c["response"], "authenticatorData": b64url(b"\x00")}},
        lambda c: {**c, "response": {**c["response"], "signature": None}},
        lambda c: {**c, "response": {**c["response"], "userHandle": 12}},
    ],
)
def test_malformed_assertions_get_a_problem_or_a_no_never_a_500(
    client: TestClient, mangle: Any
) -> None:
    create_user(client)
    key = SoftAuthenticator()
    register(client, key)
    options = client.post("/v1/webauthn/authentications", json={"user_id": "alice"}).json()
    assertion = mangle(copy.deepcopy(key.get(options["options"], origin=ORIGIN)))
    answer = client.post("/v1/webauthn/authentications/verify", json={"credential": assertion})
    assert answer.status_code in (200, 422), answer.text
    if answer.status_code == 200:
        assert answer.json()["verified"] is False
    else:
        assert answer.headers["content-type"] == "application/problem+json"


@pytest.mark.parametrize(
    "mangle",
    [
        *BROKEN_EITHER,
        lambda c: {**c, "response": {**c["response"], "attestationObject": b64url(b"\xa0")}},
        lambda c: {**c, "response": {**c["response"], "attestationObject": "***"}},
        lambda c: {**c, "type": "password"},
    ],
)
def test_malformed_registrations_get_a_problem_never_a_500(client: TestClient, mangle: Any) -> None:
    create_user(client)
    options = client.post("/v1/users/alice/webauthn/registrations").json()
    made = SoftAuthenticator().create(options["options"], origin=ORIGIN)
    broken = mangle(copy.deepcopy(made))
    answer = client.post(
        "/v1/users/alice/webauthn/registrations/verify", json={"credential": broken}
    )
    assert answer.status_code == 422, answer.text
    assert answer.headers["content-type"] == "application/problem+json"
    assert client.get("/v1/users/alice/factors").json()["factors"] == [], "nothing written"


def test_a_verify_key_cannot_register(client: TestClient, sparekey: Sparekey) -> None:
    create_user(client)
    token = sparekey.api_keys.create(name="app", scopes=[Scope.VERIFY]).token
    answer = client.post(
        "/v1/users/alice/webauthn/registrations", headers={"Authorization": f"Bearer {token}"}
    )
    assert answer.status_code == 403


def test_a_ceremony_begun_on_one_node_finishes_on_another(
    settings: Settings, clock: FixedClock, client: TestClient, admin_token: str
) -> None:
    create_user(client)
    key = SoftAuthenticator()
    other = Sparekey.open(settings, clock=clock)
    try:
        with TestClient(create_app(other), raise_server_exceptions=False) as second:
            second.headers["Authorization"] = f"Bearer {admin_token}"
            options = client.post("/v1/users/alice/webauthn/registrations").json()["options"]
            credential = key.create(options, origin=ORIGIN)
            made = second.post(
                "/v1/users/alice/webauthn/registrations/verify", json={"credential": credential}
            )
            assert made.status_code == 201, made.text
            options = second.post("/v1/webauthn/authentications", json={}).json()["options"]
            assertion = key.get(options, origin=ORIGIN)
            answer = client.post(
                "/v1/webauthn/authentications/verify", json={"credential": assertion}
            )
            assert answer.json()["verified"] is True
    finally:
        other.close()


def test_every_ceremony_is_audited(client: TestClient, sparekey: Sparekey) -> None:
    create_user(client)
    key = SoftAuthenticator()
    register(client, key, origin="http://localhost:1")
    factor = register(client, key).json()
    _, signed_in = sign_in(client, key)
    client.delete(
        f"/v1/users/alice/factors/{factor['id']}?force=true",
        headers=assured(signed_in["assurance_token"]),
    )
    assert audit_events(sparekey)[-6:] == [
        "webauthn.registration_refused",
        "factor.enrolled",
        "factor.confirmed",
        "verify.succeeded",
        "factor.removed",
        "factor.removal_forced",
    ]
    events = [(r.event, r.details.get("factor_type")) for r in sparekey.audit.export()]
    assert ("factor.confirmed", "webauthn") in events
    assert ("verify.succeeded", "webauthn") in events
    assert ("webauthn.registration_refused", None) in events
