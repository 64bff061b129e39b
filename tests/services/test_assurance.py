"""Assurance tokens (services/assurance.py): signed, bound to a user and a purpose, short-lived;
and the last-factor rule holding under concurrent removals."""

from __future__ import annotations

import base64
import json
from datetime import timedelta

import pytest

from sparekey.crypto.keyring import KeyPurpose
from sparekey.domain.errors import AssuranceRequiredError, LastFactorError
from sparekey.domain.models import FactorStatus, FactorType
from sparekey.domain.ports import FixedClock
from sparekey.protocols.rfc4226 import hotp
from sparekey.runtime import Sparekey
from sparekey.services.assurance import Assurance, Operation
from tests.helpers import race


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _payload(token: str) -> dict[str, object]:
    part = token.split(".")[2]
    return dict(json.loads(base64.urlsafe_b64decode(part + "=" * (-len(part) % 4))))


def test_a_token_says_whose_what_for_and_until_when(sparekey: Sparekey, clock: FixedClock) -> None:
    token = sparekey.assurance.issue("alice")
    claims = sparekey.assurance.check(token, user_id="alice", purpose="step-up")
    assert (claims.user_id, claims.purpose, claims.case_id) == ("alice", "step-up", None)
    assert claims.expires_at == clock.now() + timedelta(seconds=300), "assurance_seconds"
    assert claims.key_id == sparekey.keyring.active_id(KeyPurpose.MAC)
    assert len(base64.urlsafe_b64decode(claims.nonce + "==")) == 16
    assert sparekey.assurance.issue("alice") != token, "a fresh nonce each time"


def test_an_enroll_token_carries_its_case_and_lifetime(
    sparekey: Sparekey, clock: FixedClock
) -> None:
    token = sparekey.assurance.issue(
        "alice", purpose="enroll", ttl=timedelta(hours=1), case_id="rc_123"
    )
    claims = sparekey.assurance.check(token, user_id="alice", purpose="enroll")
    assert (claims.purpose, claims.case_id) == ("enroll", "rc_123")
    assert claims.expires_at == clock.now() + timedelta(hours=1)
    with pytest.raises(AssuranceRequiredError, match="only allows adding a factor"):
        sparekey.assurance.check(token, user_id="alice", purpose="step-up")


def test_a_step_up_token_satisfies_adding_a_factor_too(sparekey: Sparekey) -> None:
    token = sparekey.assurance.issue("alice")
    assert sparekey.assurance.check(token, user_id="alice", purpose="enroll").purpose == "step-up"
    assert Operation.ENROLL_FACTOR.purpose == "enroll"
    assert Operation.CONFIRM_FACTOR.purpose == "enroll"
    assert Operation.REGISTER_WEBAUTHN.purpose == "enroll"
    assert Operation.REMOVE_FACTOR.purpose == "step-up"
    assert Operation.REGENERATE_BACKUP_CODES.purpose == "step-up"


def test_expiry_is_exact_on_the_injected_clock(sparekey: Sparekey, clock: FixedClock) -> None:
    token = sparekey.assurance.issue("alice")
    clock.advance(299)
    sparekey.assurance.check(token, user_id="alice", purpose="step-up")
    clock.advance(1)
    with pytest.raises(AssuranceRequiredError, match="expired"):
        sparekey.assurance.check(token, user_id="alice", purpose="step-up")


def test_a_token_is_bound_to_its_user(sparekey: Sparekey) -> None:
    token = sparekey.assurance.issue("alice")
    with pytest.raises(AssuranceRequiredError, match="another user"):
        sparekey.assurance.check(token, user_id="bob", purpose="step-up")


def _forgeries(sparekey: Sparekey, token: str) -> dict[str, str]:
    prefix, key_id, payload, mac = token.split(".")
    claims = _payload(token)
    as_bob = _b64(json.dumps({**claims, "u": "bob"}, separators=(",", ":")).encode())
    longer = _b64(json.dumps({**claims, "x": int(str(claims["x"])) + 86_400}).encode())
    enroll_to_step_up = _b64(json.dumps({**claims, "p": "step-up"}).encode())
    other_label = sparekey.keyring.mac_with(
        int(key_id), "backup-code", f"{prefix}.{key_id}.{payload}".encode()
    )
    flipped = mac[:-2] + ("A" if mac[-2] != "A" else "B") + mac[-1]
    return {
        "payload for another user, old MAC": f"{prefix}.{key_id}.{as_bob}.{mac}",
        "a longer life, old MAC": f"{prefix}.{key_id}.{longer}.{mac}",
        "purpose raised, old MAC": f"{prefix}.{key_id}.{enroll_to_step_up}.{mac}",
        "a flipped MAC character": f"{prefix}.{key_id}.{payload}.{flipped}",
        "the MAC of another label": f"{prefix}.{key_id}.{payload}.{_b64(other_label)}",
        "no MAC": f"{prefix}.{key_id}.{payload}.",
        "an unknown key id": f"{prefix}.999.{payload}.{mac}",
        "a key id that is not a number": f"{prefix}.x.{payload}.{mac}",
        "another version": f"sat2.{key_id}.{payload}.{mac}",
        "truncated": token[:-5],
        "padding added": token + "==",
        "garbage": "not-a-token",
        "empty parts": "...",
        "very long": token + "A" * 5000,
        "not ASCII": token[:-1] + "é",
    }


def test_a_tampered_or_forged_token_is_refused(sparekey: Sparekey) -> None:
    token = sparekey.assurance.issue("alice", purpose="enroll")
    for why, forged in _forgeries(sparekey, token).items():
        with pytest.raises(AssuranceRequiredError, match="not valid"):
            sparekey.assurance.check(forged, user_id="alice", purpose="enroll")
        with pytest.raises(AssuranceRequiredError):
            sparekey.assurance.check(forged, user_id="bob", purpose="step-up")
        assert why


def test_tokens_survive_a_mac_key_rotation(sparekey: Sparekey) -> None:
    before = sparekey.assurance.issue("alice")
    rotation = sparekey.keys.rotate_dek(KeyPurpose.MAC)
    after = sparekey.assurance.issue("alice")
    assert sparekey.assurance.check(before, user_id="alice", purpose="step-up").key_id != (
        rotation.key_id
    )
    assert sparekey.assurance.check(after, user_id="alice", purpose="step-up").key_id == (
        rotation.key_id
    )


def test_a_lifetime_must_be_positive(sparekey: Sparekey) -> None:
    with pytest.raises(ValueError, match="positive"):
        sparekey.assurance.issue("alice", ttl=timedelta(0))
    with pytest.raises(ValueError, match="purpose"):
        sparekey.assurance.issue("alice", purpose="login")  # type: ignore[arg-type]


def test_a_verified_code_steps_up_and_a_wrong_one_does_not(sparekey: Sparekey) -> None:
    sparekey.users.create(user_id="alice", display_name=None, email=None)
    enrollment = sparekey.factors.enroll("alice", type=FactorType.HOTP)
    sparekey.factors.confirm(
        "alice", enrollment.factor.id, code=hotp(key=enrollment.secret, counter=0)
    )
    assert sparekey.verification.verify("alice", "000000").assurance_token is None
    result = sparekey.verification.verify("alice", hotp(key=enrollment.secret, counter=1))
    assert result.assurance_token is not None
    sparekey.assurance.check(result.assurance_token, user_id="alice", purpose="step-up")


def test_two_removals_racing_for_the_last_factor_leave_one(
    sparekey: Sparekey, clock: FixedClock
) -> None:
    """Each removal alone is allowed (another factor remains); together they would leave none.
    The user's row lock (PostgreSQL) or the write lock (SQLite) lets exactly one through."""
    for round_ in range(8):
        user_id = f"racer-{round_}"
        sparekey.users.create(user_id=user_id, display_name=None, email=None)
        stepped_up = Assurance(token=sparekey.assurance.issue(user_id))
        factor_ids = []
        for n in range(2):
            enrollment = sparekey.factors.enroll(
                user_id, type=FactorType.HOTP, label=f"token {n}", assurance=stepped_up
            )
            code = hotp(key=enrollment.secret, counter=0)
            sparekey.factors.confirm(user_id, enrollment.factor.id, code=code, assurance=stepped_up)
            factor_ids.append(enrollment.factor.id)
        pending = iter(factor_ids)

        def remove_one(user_id: str = user_id, assurance: Assurance = stepped_up) -> str:
            factor_id = next(pending)  # noqa: B023 (used within this round only)
            try:
                sparekey.factors.delete(user_id, factor_id, assurance=assurance)
            except LastFactorError:
                return "refused"
            return "removed"

        assert sorted(race(remove_one, threads=2)) == ["refused", "removed"]
        left = sparekey.factors.list(user_id)
        assert [f.status for f in left] == [FactorStatus.ACTIVE]
