"""Property tests of the WebAuthn ceremonies with whatever a browser, or someone posing as one,
sends: arbitrary JSON, and real responses from a software authenticator damaged at every layer
(tests/webauthn_damage.py). The service answers with its documented outcomes only: a factor, a
sign-in, ``verified: false``, or :class:`InvalidInputError` (with its subclass
:class:`CredentialRejectedError`); a refused ceremony writes no factor and moves no counter, and
only what the key signed, as it signed it, signs in.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from datetime import date
from pathlib import Path
from typing import Any

import cbor2
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from sparekey.domain.errors import CredentialRejectedError, InvalidInputError
from sparekey.domain.models import Factor
from sparekey.domain.ports import FixedClock
from sparekey.runtime import Sparekey, initialize
from sparekey.services.webauthn import MAX_CREDENTIAL_ID
from sparekey.settings import Settings, load_settings
from tests.mds_blob import MdsEntry, build_blob, make_mds_signer
from tests.softauthn import SoftAuthenticator, TestCA, b64url, b64url_decode
from tests.webauthn_damage import (
    DELETE,
    JSON_VALUES,
    Damage,
    apply,
    assertion_damage,
    attestation_member,
    client_data_member,
    cose_member,
    member,
    raw,
    registration_damage,
    signed_parts,
    statement_member,
)

ORIGIN = "http://localhost:8000"
REGISTRATION_DAMAGES = st.lists(registration_damage, min_size=1, max_size=3)
ASSERTION_DAMAGES = st.lists(assertion_damage, min_size=1, max_size=3)
# Objects with the members a response has, holding anything; and any object at all.
ANY_OBJECT = st.one_of(
    st.fixed_dictionaries(
        {},
        optional=dict.fromkeys(
            ("id", "rawId", "type", "response", "authenticatorAttachment"), JSON_VALUES
        ),
    ),
    st.dictionaries(st.text(max_size=10), JSON_VALUES, max_size=5),
)
DEEP = b"[" * 100_000  # deeper than json.loads recurses


@pytest.fixture
def backend() -> str:
    """What is fuzzed here is parsing, which does not depend on the database: SQLite only (the
    HTTP fuzz tests in tests/api/ run on both)."""
    return "sqlite"


def _webauthn_factors(app: Sparekey, user_id: str) -> list[Factor]:
    return [f for f in app.factors.list(user_id) if f.webauthn is not None]


def _register_damaged(
    app: Sparekey, key: SoftAuthenticator, user_id: str, damages: list[Damage]
) -> None:
    """Register ``key`` for ``user_id`` (who has no factor) with a damaged response: a factor
    whose key can be checked, or the documented error and no factor."""
    made = key.create(app.webauthn.begin_registration(user_id), origin=ORIGIN)
    try:
        factor = app.webauthn.finish_registration(user_id, apply(damages, made))
    except InvalidInputError as exc:
        refusal = str(exc)
    else:
        refusal = None
    if refusal is not None:
        assert refusal.isprintable(), refusal
        assert _webauthn_factors(app, user_id) == [], "a refused registration writes no factor"
        return
    assert [f.id for f in _webauthn_factors(app, user_id)] == [factor.id]
    assert factor.webauthn is not None
    assert factor.webauthn.credential_id == b64url_decode(made["rawId"])
    # The stored key is one an assertion can be checked against (a damaged one may not verify:
    # without attestation nothing vouches for it).
    assertion = key.get(app.webauthn.begin_authentication(user_id), origin=ORIGIN)
    assert isinstance(app.webauthn.finish_authentication(assertion).verified, bool)


def _new_user(app: Sparekey) -> str:
    user_id = f"user{next(_NUMBERS)}"
    app.users.create(user_id=user_id, display_name=None, email=None)
    return user_id


_NUMBERS = itertools.count()  # user ids: each example registers for a user of its own
_KEYS = {
    "none": SoftAuthenticator(),
    "packed-self": SoftAuthenticator(attestation="packed-self", algorithm=-8),
}
# The deployment fixtures are made once per test, not once per example: the examples share it.
FUZZ = settings(deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


# Each found by this test: py_webauthn raised KeyError, IndexError or TypeError, or stored a key
# no assertion could ever be checked against (which then failed every sign-in with a ValueError).
@settings(FUZZ, max_examples=80)
@given(key=st.sampled_from(sorted(_KEYS)), damages=REGISTRATION_DAMAGES)
@example(key="none", damages=[cose_member(-2, DELETE)])  # KeyError: <COSEKey.X: -2>
@example(key="none", damages=[cose_member(1, DELETE)])  # KeyError: <COSEKey.KTY: 1>
@example(key="none", damages=[cose_member(-2, b"\x01" * 32)])  # not a point on P-256
@example(key="none", damages=[cose_member(-1, 9)])  # no such curve
@example(key="none", damages=[cose_member(3, -8)])  # an EC2 key claiming EdDSA
@example(key="none", damages=[attestation_member("authData", bytes(37) + cbor2.dumps([]))])
@example(key="none", damages=[client_data_member("origin", "\ud800")])  # quoted in the refusal
@example(key="none", damages=[raw("clientDataJSON", DEEP)])  # RecursionError
@example(key="packed-self", damages=[statement_member("sig", None)])
@example(key="packed-self", damages=[statement_member("alg", 2**70)])
def test_registration_with_damaged_responses(
    sparekey: Sparekey, key: str, damages: list[Damage]
) -> None:
    _register_damaged(sparekey, _KEYS[key], _new_user(sparekey), damages)


@settings(FUZZ, max_examples=50)
@given(credential=ANY_OBJECT)
@example(credential={"id": "a", "rawId": "a", "type": "public-key", "response": {}})
def test_registration_with_arbitrary_json(sparekey: Sparekey, credential: dict[str, Any]) -> None:
    user_id = _new_user(sparekey)
    sparekey.webauthn.begin_registration(user_id)
    with pytest.raises(InvalidInputError):
        sparekey.webauthn.finish_registration(user_id, credential)
    assert _webauthn_factors(sparekey, user_id) == []


MODEL = bytes.fromhex("0123456789abcdef0123456789abcdef")


@pytest.fixture
def direct(settings: Settings, clock: FixedClock, tmp_path: Path) -> Iterator[Sparekey]:
    """A deployment that asks for attestation, with the metadata of one certified model whose
    root issued :data:`ATTESTED`'s certificate."""
    signer = make_mds_signer()
    model = "01234567-89ab-cdef-0123-456789abcdef"
    assert ATTESTED.attestation_ca is not None
    entry = MdsEntry(
        aaguid=model, description="Acme Key", root_cert=ATTESTED.attestation_ca.root_pem
    )
    blob = build_blob([entry], signer=signer, next_update=date(2026, 2, 1))
    (tmp_path / "blob.jwt").write_bytes(blob)
    (tmp_path / "mds-root.pem").write_bytes(signer.root_pem)
    configured = load_settings(
        settings.data_dir,
        database_url=settings.database_url,
        webauthn_attestation="direct",
        webauthn_mds_blob=tmp_path / "blob.jwt",
        webauthn_mds_root=tmp_path / "mds-root.pem",
    )
    initialize(configured, clock=clock)
    app = Sparekey.open(configured, clock=clock)
    yield app
    app.close()


ATTESTED = SoftAuthenticator(aaguid=MODEL, attestation="packed-x5c", attestation_ca=TestCA())


@settings(FUZZ, max_examples=60)
@given(damages=REGISTRATION_DAMAGES)
@example(damages=[attestation_member("attStmt", None)])  # TypeError: not iterable
@example(damages=[attestation_member("authData", None)])  # TypeError: not bytes
@example(damages=[statement_member("x5c", [b"not DER"])])
@example(damages=[statement_member("x5c", "text")])
def test_attested_registration_with_damaged_responses(
    direct: Sparekey, damages: list[Damage]
) -> None:
    _register_damaged(direct, ATTESTED, _new_user(direct), damages)


@pytest.fixture
def signer(sparekey: Sparekey) -> SoftAuthenticator:
    """Alice's security key, registered."""
    sparekey.users.create(user_id="alice", display_name=None, email=None)
    key = SoftAuthenticator()
    options = sparekey.webauthn.begin_registration("alice")
    sparekey.webauthn.finish_registration("alice", key.create(options, origin=ORIGIN))
    return key


@settings(FUZZ, max_examples=80)
@given(named=st.booleans(), damages=ASSERTION_DAMAGES)
@example(named=True, damages=[member(("response", "clientDataJSON"), "=" + "A" * 8)])
@example(named=True, damages=[raw("clientDataJSON", DEEP)])  # RecursionError
@example(named=False, damages=[member(("response", "userHandle"), DELETE)])
@example(named=True, damages=[raw("signature", b"")])
def test_sign_in_with_damaged_assertions(
    sparekey: Sparekey, signer: SoftAuthenticator, named: bool, damages: list[Damage]
) -> None:
    (before,) = _webauthn_factors(sparekey, "alice")
    made = signer.get(
        sparekey.webauthn.begin_authentication("alice" if named else None), origin=ORIGIN
    )
    sent = apply(damages, made)
    refusal = ""
    try:
        verified = sparekey.webauthn.finish_authentication(sent).verified
    except InvalidInputError as exc:
        refusal, verified = str(exc), False
    assert refusal.isprintable(), refusal
    (after,) = _webauthn_factors(sparekey, "alice")
    assert before.webauthn is not None
    assert after.webauthn is not None
    if verified:  # only what the key signed, as it signed it, signs in
        assert signed_parts(sent) == signed_parts(made)
        assert after.webauthn.sign_count > before.webauthn.sign_count
    else:
        assert after.webauthn.sign_count == before.webauthn.sign_count
        assert after.last_used_at == before.last_used_at


@settings(FUZZ, max_examples=50)
@given(credential=ANY_OBJECT)
def test_sign_in_with_arbitrary_json(
    sparekey: Sparekey, signer: SoftAuthenticator, credential: dict[str, Any]
) -> None:
    try:
        result = sparekey.webauthn.finish_authentication(credential)
    except InvalidInputError:
        return
    assert result.verified is False


def _with_credential_id(response: dict[str, Any], credential_id: bytes) -> dict[str, Any]:
    """``response`` for a credential of another id (no attestation signs the id)."""
    inner = response["response"]
    attestation = cbor2.loads(b64url_decode(inner["attestationObject"]))
    data = attestation["authData"]
    old_length = int.from_bytes(data[53:55], "big")
    attestation["authData"] = (
        data[:53] + len(credential_id).to_bytes(2, "big") + credential_id + data[55 + old_length :]
    )
    encoded = b64url(credential_id)
    inner = {**inner, "attestationObject": b64url(cbor2.dumps(attestation))}
    return {**response, "id": encoded, "rawId": encoded, "response": inner}


@pytest.mark.parametrize("length", [MAX_CREDENTIAL_ID + 1, 4000])
def test_a_credential_id_over_1023_bytes_is_refused(sparekey: Sparekey, length: int) -> None:
    key = SoftAuthenticator()
    user_id = _new_user(sparekey)
    made = key.create(sparekey.webauthn.begin_registration(user_id), origin=ORIGIN)
    with pytest.raises(CredentialRejectedError, match="longer than 1023 bytes"):
        sparekey.webauthn.finish_registration(user_id, _with_credential_id(made, b"i" * length))
    assert _webauthn_factors(sparekey, user_id) == []

    made = key.create(sparekey.webauthn.begin_registration(user_id), origin=ORIGIN)
    longest = b"i" * MAX_CREDENTIAL_ID
    factor = sparekey.webauthn.finish_registration(user_id, _with_credential_id(made, longest))
    assert factor.webauthn is not None
    assert factor.webauthn.credential_id == longest
