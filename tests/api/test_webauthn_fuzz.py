"""The WebAuthn endpoints fuzzed over HTTP with the app in-process: any body, and real responses
from a software authenticator damaged at every layer (tests/webauthn_damage.py). Registration
answers 201 or a problem+json 4xx, and a refusal adds no factor; sign-in answers
``{"verified": ...}`` or a problem+json 4xx, and a refusal leaves the factor unused. Never a 500.
The service-level properties are in tests/services/test_webauthn_fuzz.py; these examples are
fewer, for what HTTP adds (body parsing, and refusals rendered as JSON)."""

from __future__ import annotations

import itertools
import json
from datetime import datetime
from typing import Any

import pytest
from fastapi.testclient import TestClient
from httpx2 import Response
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from sparekey.domain.ports import FixedClock
from tests.helpers import create_user
from tests.softauthn import SoftAuthenticator
from tests.webauthn_damage import (
    JSON_VALUES,
    Damage,
    apply,
    assertion_damage,
    client_data_member,
    cose_member,
    raw,
    registration_damage,
    signed_parts,
)

ORIGIN = "http://localhost:8000"
SIGN_IN = "/v1/webauthn/authentications"
FUZZ = settings(deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
_NUMBERS = itertools.count()  # user ids: each registration example has a user of its own


def _answered(answer: Response, *allowed: int) -> bool:
    """True for one of the ``allowed`` statuses; else it must be a problem+json 4xx (False)."""
    assert answer.status_code < 500, answer.text
    if answer.status_code in allowed:
        return True
    assert 400 <= answer.status_code < 500, answer.text
    assert answer.headers["content-type"] == "application/problem+json", answer.text
    problem = answer.json()
    assert problem["type"].startswith("/problems/")
    assert problem["status"] == answer.status_code
    assert problem["detail"].isprintable()
    return False


def _post(client: TestClient, url: str, body: Any) -> Response:
    """POST ``body`` as JSON with every character escaped (a lone surrogate, too)."""
    content = json.dumps(body).encode()
    return client.post(url, content=content, headers={"content-type": "application/json"})


def _factors(client: TestClient, user_id: str) -> list[dict[str, Any]]:
    listed = client.get(f"/v1/users/{user_id}/factors")
    assert listed.status_code == 200, listed.text
    return list(listed.json()["factors"])


def _bodies() -> st.SearchStrategy[bytes]:
    """Bodies that are not a browser's response: any JSON as the credential, any object, any
    bytes."""
    return st.one_of(
        JSON_VALUES.map(lambda value: json.dumps({"credential": value}).encode()),
        JSON_VALUES.map(lambda value: json.dumps(value).encode()),
        st.binary(max_size=60),
    )


@settings(FUZZ, max_examples=20)
@given(damages=st.lists(registration_damage, min_size=1, max_size=3))
@example(damages=[client_data_member("origin", "\ud800")])  # a refusal quoting a lone surrogate
@example(damages=[cose_member(-2, b"\x01" * 32)])  # a key no signature can be checked against
@example(damages=[raw("clientDataJSON", b"[" * 100_000)])
def test_registration_over_http(client: TestClient, damages: list[Damage]) -> None:
    user_id = f"user{next(_NUMBERS)}"
    create_user(client, user_id)
    options = client.post(f"/v1/users/{user_id}/webauthn/registrations").json()["options"]
    sent = apply(damages, SoftAuthenticator().create(options, origin=ORIGIN))
    answer = _post(
        client, f"/v1/users/{user_id}/webauthn/registrations/verify", {"credential": sent}
    )
    if _answered(answer, 201):
        assert [f["id"] for f in _factors(client, user_id)] == [answer.json()["id"]]
    else:
        assert _factors(client, user_id) == [], "a refused registration adds no factor"


@settings(FUZZ, max_examples=20)
@given(body=_bodies())
@example(body=b'{"credential": {"id": "\\ud800"}}')
@example(body=b'{"credential": ' + b"[" * 5000 + b"}")
def test_any_registration_body(client: TestClient, body: bytes) -> None:
    user_id = f"user{next(_NUMBERS)}"
    create_user(client, user_id)
    client.post(f"/v1/users/{user_id}/webauthn/registrations")
    answer = client.post(
        f"/v1/users/{user_id}/webauthn/registrations/verify",
        content=body,
        headers={"content-type": "application/json"},
    )
    assert not _answered(answer)
    assert _factors(client, user_id) == []


@pytest.fixture
def alices_key(client: TestClient) -> SoftAuthenticator:
    """Alice's security key, registered."""
    create_user(client, "alice")
    key = SoftAuthenticator()
    options = client.post("/v1/users/alice/webauthn/registrations").json()["options"]
    made = client.post(
        "/v1/users/alice/webauthn/registrations/verify",
        json={"credential": key.create(options, origin=ORIGIN)},
    )
    assert made.status_code == 201, made.text
    return key


@settings(FUZZ, max_examples=20)
@given(damages=st.lists(assertion_damage, min_size=1, max_size=3))
@example(damages=[raw("clientDataJSON", b"[" * 100_000)])
def test_sign_in_over_http(
    client: TestClient, clock: FixedClock, alices_key: SoftAuthenticator, damages: list[Damage]
) -> None:
    clock.advance(1)  # a sign-in now would show in last_used_at
    (before,) = _factors(client, "alice")
    options = client.post(SIGN_IN, json={"user_id": "alice"}).json()["options"]
    made = alices_key.get(options, origin=ORIGIN)
    sent = apply(damages, made)
    answer = _post(client, f"{SIGN_IN}/verify", {"credential": sent})
    (after,) = _factors(client, "alice")
    if _answered(answer, 200) and answer.json()["verified"]:
        assert signed_parts(sent) == signed_parts(made)
        assert datetime.fromisoformat(after["last_used_at"]) == clock.now()
    else:
        assert after["last_used_at"] == before["last_used_at"], "a refused sign-in uses nothing"


@settings(FUZZ, max_examples=20)
@given(body=_bodies())
def test_any_sign_in_body(client: TestClient, alices_key: SoftAuthenticator, body: bytes) -> None:
    answer = client.post(
        f"{SIGN_IN}/verify", content=body, headers={"content-type": "application/json"}
    )
    if _answered(answer, 200):
        assert answer.json()["verified"] is False
