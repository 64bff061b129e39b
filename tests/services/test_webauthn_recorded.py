"""A registration and a passkey sign-in recorded from Chromium (tests/api/recorded/), replayed
into the service: real browser JSON, byte for byte, without a browser."""

from __future__ import annotations

import copy
import hashlib
import json
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from sparekey.domain.errors import CredentialRejectedError
from sparekey.domain.ports import FixedClock
from sparekey.runtime import Sparekey, initialize
from sparekey.settings import Settings, load_settings
from sparekey.storage import webauthn as repo
from tests.softauthn import b64url, b64url_decode

RECORDED = json.loads(
    (Path(__file__).parent.parent / "api" / "recorded" / "chromium-passkey.json").read_text()
)


@pytest.fixture
def app(settings: Settings, clock: FixedClock) -> Any:
    configured = load_settings(
        settings.data_dir, database_url=settings.database_url, webauthn_origins=RECORDED["origin"]
    )
    initialize(configured, clock=clock)
    sparekey = Sparekey.open(configured, clock=clock)
    sparekey.users.create(user_id="alice", display_name="Alice", email="alice@example.com")
    now = clock.now()
    with sparekey.db.write() as conn:
        repo.user_handle(conn, "alice", new=b64url_decode(RECORDED["user_handle"]))
        for ceremony, user_id in (("registration", "alice"), ("authentication", None)):
            challenge = b64url_decode(RECORDED[ceremony]["options"]["challenge"])
            repo.insert_challenge(
                conn,
                hashlib.sha256(challenge).digest(),
                ceremony=ceremony,
                user_id=user_id,
                user_verification="preferred",
                now=now,
                expires_at=now + timedelta(minutes=5),
            )
    yield sparekey
    sparekey.close()


def test_chromiums_registration_and_passkey_sign_in_verify(app: Sparekey) -> None:
    factor = app.webauthn.finish_registration("alice", RECORDED["registration"]["credential"])
    info = factor.webauthn
    assert info is not None
    assert b64url(info.credential_id) == RECORDED["registration"]["credential"]["rawId"]
    assert info.attestation_format == "none"
    assert info.transports == ("internal",)
    assert info.discoverable is True
    result = app.webauthn.finish_authentication(RECORDED["authentication"]["credential"])
    assert (result.verified, result.user_id, result.factor_id) == (True, "alice", factor.id)
    replay = app.webauthn.finish_authentication(RECORDED["authentication"]["credential"])
    assert replay.verified is False


def _edited(ceremony: str, field: str, edit: Any) -> dict[str, Any]:
    credential = copy.deepcopy(RECORDED[ceremony]["credential"])
    credential["response"][field] = b64url(edit(b64url_decode(credential["response"][field])))
    return credential


def _flip(data: bytes, at: int = -1) -> bytes:
    changed = bytearray(data)
    changed[at] ^= 0x01
    return bytes(changed)


def test_an_edited_registration_is_refused(app: Sparekey) -> None:
    origin = RECORDED["origin"].encode()
    other = _edited(
        "registration", "clientDataJSON", lambda b: b.replace(origin, b"http://localhost:1")
    )
    with pytest.raises(CredentialRejectedError, match="origin"):
        app.webauthn.finish_registration("alice", other)
    assert app.factors.list("alice") == []


@pytest.mark.parametrize(
    ("field", "edit"),
    [
        ("signature", _flip),
        ("authenticatorData", lambda b: _flip(b, 32)),  # the flags byte
        ("authenticatorData", lambda b: _flip(b, 0)),  # the RP id hash
        ("clientDataJSON", lambda b: b.replace(b'"webauthn.get"', b'"webauthn.create"')),
    ],
)
def test_an_edited_assertion_is_refused(app: Sparekey, field: str, edit: Any) -> None:
    app.webauthn.finish_registration("alice", RECORDED["registration"]["credential"])
    edited = _edited("authentication", field, edit)
    assert app.webauthn.finish_authentication(edited).verified is False
