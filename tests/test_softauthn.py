"""The software authenticator is faithful: py_webauthn (and python-fido2, an independent relying
party) accept what it makes, and reject it once it is wrong."""

from __future__ import annotations

import hashlib
import json
from typing import Any

import cbor2
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from fido2.attestation.base import AttestationVerifier
from fido2.server import Fido2Server
from fido2.webauthn import (
    AttestationConveyancePreference as Fido2Conveyance,
)
from fido2.webauthn import (
    PublicKeyCredentialRpEntity,
    PublicKeyCredentialUserEntity,
)
from fido2.webauthn import (
    ResidentKeyRequirement as Fido2ResidentKey,
)
from webauthn import (
    generate_authentication_options,
    generate_registration_options,
    options_to_json,
    verify_authentication_response,
    verify_registration_response,
)
from webauthn.authentication.verify_authentication_response import VerifiedAuthentication
from webauthn.helpers.exceptions import (
    InvalidAuthenticationResponse,
    InvalidBackupFlags,
    InvalidRegistrationResponse,
)
from webauthn.helpers.structs import (
    AttestationConveyancePreference,
    AttestationFormat,
    AuthenticatorSelectionCriteria,
    CredentialDeviceType,
    PublicKeyCredentialDescriptor,
    ResidentKeyRequirement,
    UserVerificationRequirement,
)
from webauthn.registration.verify_registration_response import VerifiedRegistration

from tests.softauthn import (
    AT,
    BE,
    BS,
    EDDSA,
    ES256,
    ID_FIDO_GEN_CE_AAGUID,
    UP,
    UV,
    SoftAuthenticator,
    SoftAuthenticatorError,
    TestCA,
    authenticator_data,
    b64url,
    b64url_decode,
    client_data_json,
    sign_assertion,
)

RP_ID = "example.com"
ORIGIN = "https://example.com"
USER_ID = b"user-handle-of-alice"
AAGUID = bytes.fromhex("0123456789abcdef0123456789abcdef")


@pytest.fixture(scope="module")
def ca() -> TestCA:
    return TestCA()


def registration_options(
    *,
    challenge: bytes = b"registration-challenge",
    attestation: AttestationConveyancePreference = AttestationConveyancePreference.NONE,
    resident_key: ResidentKeyRequirement | None = None,
    user_verification: UserVerificationRequirement | None = None,
    exclude: list[bytes] | None = None,
) -> dict[str, Any]:
    selection = None
    if resident_key is not None or user_verification is not None:
        selection = AuthenticatorSelectionCriteria(
            resident_key=resident_key or ResidentKeyRequirement.DISCOURAGED,
            user_verification=user_verification or UserVerificationRequirement.PREFERRED,
        )
    options = generate_registration_options(
        rp_id=RP_ID,
        rp_name="Example",
        user_name="alice",
        user_id=USER_ID,
        challenge=challenge,
        attestation=attestation,
        authenticator_selection=selection,
        exclude_credentials=(
            [PublicKeyCredentialDescriptor(id=c) for c in exclude] if exclude else None
        ),
    )
    return dict(json.loads(options_to_json(options)))


def authentication_options(
    *,
    challenge: bytes = b"authentication-challenge",
    allow: list[bytes] | None = None,
    user_verification: UserVerificationRequirement = UserVerificationRequirement.PREFERRED,
) -> dict[str, Any]:
    options = generate_authentication_options(
        rp_id=RP_ID,
        challenge=challenge,
        allow_credentials=[PublicKeyCredentialDescriptor(id=c) for c in allow] if allow else None,
        user_verification=user_verification,
    )
    return dict(json.loads(options_to_json(options)))


def verify_registration(
    response: dict[str, Any],
    *,
    challenge: bytes = b"registration-challenge",
    origin: str = ORIGIN,
    rp_id: str = RP_ID,
    roots: list[bytes] | None = None,
    require_user_verification: bool = False,
) -> VerifiedRegistration:
    return verify_registration_response(
        credential=response,
        expected_challenge=challenge,
        expected_rp_id=rp_id,
        expected_origin=origin,
        require_user_verification=require_user_verification,
        pem_root_certs_bytes_by_fmt={AttestationFormat.PACKED: roots} if roots else None,
    )


def verify_authentication(
    response: dict[str, Any],
    registration: VerifiedRegistration,
    *,
    sign_count: int = 0,
    challenge: bytes = b"authentication-challenge",
    origin: str = ORIGIN,
    rp_id: str = RP_ID,
    require_user_verification: bool = False,
) -> VerifiedAuthentication:
    return verify_authentication_response(
        credential=response,
        expected_challenge=challenge,
        expected_rp_id=rp_id,
        expected_origin=origin,
        credential_public_key=registration.credential_public_key,
        credential_current_sign_count=sign_count,
        require_user_verification=require_user_verification,
    )


def enroll(
    authenticator: SoftAuthenticator, **options: Any
) -> tuple[dict[str, Any], VerifiedRegistration]:
    response = authenticator.create(registration_options(**options), origin=ORIGIN)
    return response, verify_registration(response)


# -- registration ------------------------------------------------------------------------------


@pytest.mark.parametrize("algorithm", [ES256, EDDSA])
def test_none_attestation_is_accepted_and_login_works(algorithm: int) -> None:
    authenticator = SoftAuthenticator(aaguid=AAGUID, algorithm=algorithm)
    response = authenticator.create(registration_options(), origin=ORIGIN)

    registration = verify_registration(response)

    assert registration.fmt == AttestationFormat.NONE
    assert registration.credential_id == b64url_decode(response["rawId"])
    assert registration.aaguid == "01234567-89ab-cdef-0123-456789abcdef"
    assert registration.sign_count == 0
    assert response["response"]["publicKeyAlgorithm"] == algorithm
    assert response["type"] == "public-key"
    assert response["clientExtensionResults"] == {}
    credential = authenticator.credentials[registration.credential_id]
    assert registration.credential_public_key == credential.cose_public_key
    assert credential.rp_id == RP_ID
    assert credential.user_handle == USER_ID

    assertion = authenticator.get(
        authentication_options(allow=[registration.credential_id]), origin=ORIGIN
    )
    assert verify_authentication(assertion, registration).new_sign_count == 1


@pytest.mark.parametrize("algorithm", [ES256, EDDSA])
def test_response_public_key_is_the_credential_key(algorithm: int) -> None:
    response = SoftAuthenticator(algorithm=algorithm).create(registration_options(), origin=ORIGIN)
    auth_data = b64url_decode(response["response"]["authenticatorData"])
    cose = cbor2.loads(auth_data[37 + 16 + 2 + 16 :])  # after a 16-byte credential id
    spki = serialization.load_der_public_key(b64url_decode(response["response"]["publicKey"]))
    if algorithm == ES256:
        assert isinstance(spki, ec.EllipticCurvePublicKey)
        numbers = spki.public_numbers()
        x, y = numbers.x.to_bytes(32, "big"), numbers.y.to_bytes(32, "big")
        assert cose == {1: 2, 3: -7, -1: 1, -2: x, -3: y}
    else:
        raw = spki.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
        assert cose == {1: 1, 3: -8, -1: 6, -2: raw}


@pytest.mark.parametrize("algorithm", [ES256, EDDSA])
def test_registration_bytes_have_the_webauthn_layout(algorithm: int) -> None:
    authenticator = SoftAuthenticator(aaguid=AAGUID, algorithm=algorithm, counter_start=7)
    response = authenticator.create(registration_options(), origin=ORIGIN)

    attestation_object = b64url_decode(response["response"]["attestationObject"])
    assert list(cbor2.loads(attestation_object)) == ["fmt", "attStmt", "authData"]
    auth_data = cbor2.loads(attestation_object)["authData"]
    assert auth_data == b64url_decode(response["response"]["authenticatorData"])
    credential_id = b64url_decode(response["rawId"])
    credential = authenticator.credentials[credential_id]
    assert auth_data[:32] == hashlib.sha256(RP_ID.encode()).digest()
    assert auth_data[32] == UP | UV | AT == 0x45
    assert auth_data[33:37] == (7).to_bytes(4, "big")
    assert auth_data[37:53] == AAGUID
    assert auth_data[53:55] == len(credential_id).to_bytes(2, "big")
    assert auth_data[55 : 55 + len(credential_id)] == credential_id
    cose = auth_data[55 + len(credential_id) :]
    assert cose == credential.cose_public_key
    # The hand-built COSE key is canonical CBOR (CTAP2 section 8), as cbor2 itself encodes it.
    assert cose == cbor2.dumps(cbor2.loads(cose), canonical=True)

    client_data = b64url_decode(response["response"]["clientDataJSON"])
    assert client_data == (
        b'{"type":"webauthn.create","challenge":"'
        + b64url(b"registration-challenge").encode()
        + b'","origin":"https://example.com","crossOrigin":false}'
    )


@pytest.mark.parametrize("algorithm", [ES256, EDDSA])
def test_packed_self_attestation_is_accepted(algorithm: int) -> None:
    authenticator = SoftAuthenticator(aaguid=AAGUID, attestation="packed-self", algorithm=algorithm)
    response = authenticator.create(
        registration_options(attestation=AttestationConveyancePreference.DIRECT), origin=ORIGIN
    )

    registration = verify_registration(response)

    assert registration.fmt == AttestationFormat.PACKED
    statement = cbor2.loads(b64url_decode(response["response"]["attestationObject"]))["attStmt"]
    assert set(statement) == {"alg", "sig"}
    assert statement["alg"] == algorithm


def test_packed_x5c_attestation_chains_to_the_test_ca(ca: TestCA) -> None:
    authenticator = SoftAuthenticator(aaguid=AAGUID, attestation="packed-x5c", attestation_ca=ca)
    response = authenticator.create(
        registration_options(attestation=AttestationConveyancePreference.DIRECT), origin=ORIGIN
    )

    registration = verify_registration(response, roots=[ca.root_pem])

    assert registration.fmt == AttestationFormat.PACKED
    statement = cbor2.loads(b64url_decode(response["response"]["attestationObject"]))["attStmt"]
    assert set(statement) == {"alg", "sig", "x5c"}
    assert statement["alg"] == ES256
    with pytest.raises(InvalidRegistrationResponse, match="Certificate chain"):
        verify_registration(response, roots=[TestCA().root_pem])


def test_attestation_certificate_follows_the_packed_rules(ca: TestCA) -> None:
    authenticator = SoftAuthenticator(aaguid=AAGUID, attestation="packed-x5c", attestation_ca=ca)
    response = authenticator.create(
        registration_options(attestation=AttestationConveyancePreference.DIRECT), origin=ORIGIN
    )
    statement = cbor2.loads(b64url_decode(response["response"]["attestationObject"]))["attStmt"]
    leaf = x509.load_der_x509_certificate(statement["x5c"][0])

    assert leaf.version == x509.Version.v3
    assert leaf.issuer == ca.root_certificate.subject
    ou = leaf.subject.get_attributes_for_oid(x509.NameOID.ORGANIZATIONAL_UNIT_NAME)
    assert [attribute.value for attribute in ou] == ["Authenticator Attestation"]
    for oid in (
        x509.NameOID.COUNTRY_NAME,
        x509.NameOID.ORGANIZATION_NAME,
        x509.NameOID.COMMON_NAME,
    ):
        assert leaf.subject.get_attributes_for_oid(oid)
    assert leaf.extensions.get_extension_for_class(x509.BasicConstraints).value.ca is False
    aaguid_extension = leaf.extensions.get_extension_for_oid(ID_FIDO_GEN_CE_AAGUID)
    assert not aaguid_extension.critical
    assert isinstance(aaguid_extension.value, x509.UnrecognizedExtension)
    assert aaguid_extension.value.value == b"\x04\x10" + AAGUID
    root = x509.load_der_x509_certificate(ca.root_der)
    assert root.extensions.get_extension_for_class(x509.BasicConstraints).value.ca is True

    zero = ca.issue_attestation_certificate(
        ec.generate_private_key(ec.SECP256R1()).public_key(), aaguid=bytes(16)
    )
    with pytest.raises(x509.ExtensionNotFound):
        zero.extensions.get_extension_for_oid(ID_FIDO_GEN_CE_AAGUID)


def test_python_fido2_accepts_registration_and_login(ca: TestCA) -> None:
    """A second, independent relying party: python-fido2 checks the attestation certificate
    against WebAuthn section 8.2.1 (py_webauthn does not) and the chain to our root."""

    class TrustTestCA(AttestationVerifier):
        def ca_lookup(self, attestation_result: Any, auth_data: Any) -> bytes:
            return ca.root_der

    server = Fido2Server(
        PublicKeyCredentialRpEntity(name="Example", id=RP_ID),
        attestation=Fido2Conveyance.DIRECT,
        verify_attestation=TrustTestCA(),
    )
    authenticator = SoftAuthenticator(aaguid=AAGUID, attestation="packed-x5c", attestation_ca=ca)
    options, state = server.register_begin(
        PublicKeyCredentialUserEntity(name="alice", id=USER_ID, display_name="Alice"),
        resident_key_requirement=Fido2ResidentKey.REQUIRED,
    )
    response = authenticator.create(
        json.loads(json.dumps(dict(options)))["publicKey"], origin=ORIGIN
    )
    auth_data = server.register_complete(state, response)
    assert auth_data.credential_data is not None
    assert bytes(auth_data.credential_data.aaguid) == AAGUID

    request, request_state = server.authenticate_begin()  # discoverable: no allowCredentials
    assertion = authenticator.get(json.loads(json.dumps(dict(request)))["publicKey"], origin=ORIGIN)
    used = server.authenticate_complete(request_state, [auth_data.credential_data], assertion)
    assert used.credential_id == b64url_decode(response["rawId"])


def test_browser_strips_attestation_unless_the_rp_asks_for_it(ca: TestCA) -> None:
    with_x5c = SoftAuthenticator(aaguid=AAGUID, attestation="packed-x5c", attestation_ca=ca)
    assert verify_registration(with_x5c.create(registration_options(), origin=ORIGIN)).fmt == (
        AttestationFormat.NONE
    )
    # Self attestation with a zero AAGUID is not identifying, so the browser keeps it.
    self_attested = SoftAuthenticator(attestation="packed-self")
    assert verify_registration(self_attested.create(registration_options(), origin=ORIGIN)).fmt == (
        AttestationFormat.PACKED
    )


# -- flags -------------------------------------------------------------------------------------


def test_user_verified_flag() -> None:
    verifying = SoftAuthenticator()
    response = verifying.create(registration_options(), origin=ORIGIN)
    registration = verify_registration(response, require_user_verification=True)
    assert registration.user_verified
    assertion = verifying.get(
        authentication_options(allow=[registration.credential_id]), origin=ORIGIN
    )
    assert verify_authentication(assertion, registration, require_user_verification=True)
    assert verify_authentication(assertion, registration).user_verified

    presence_only = SoftAuthenticator(user_verification=False)
    response = presence_only.create(registration_options(), origin=ORIGIN)
    registration = verify_registration(response)
    assert not registration.user_verified
    with pytest.raises(InvalidRegistrationResponse, match="User verification is required"):
        verify_registration(response, require_user_verification=True)
    assertion = presence_only.get(
        authentication_options(allow=[registration.credential_id]), origin=ORIGIN
    )
    assert not verify_authentication(assertion, registration).user_verified
    with pytest.raises(InvalidAuthenticationResponse, match="User verification is required"):
        verify_authentication(assertion, registration, sign_count=1, require_user_verification=True)


def test_user_verification_required_but_unavailable_is_not_allowed() -> None:
    presence_only = SoftAuthenticator(user_verification=False)
    options = registration_options(user_verification=UserVerificationRequirement.REQUIRED)
    with pytest.raises(SoftAuthenticatorError) as error:
        presence_only.create(options, origin=ORIGIN)
    assert error.value.name == "NotAllowedError"


def test_user_verification_discouraged_leaves_uv_clear() -> None:
    response = SoftAuthenticator().create(
        registration_options(user_verification=UserVerificationRequirement.DISCOURAGED),
        origin=ORIGIN,
    )
    assert not verify_registration(response).user_verified


@pytest.mark.parametrize(
    ("backup_eligible", "backed_up", "device_type"),
    [
        (False, False, CredentialDeviceType.SINGLE_DEVICE),
        (True, False, CredentialDeviceType.MULTI_DEVICE),
        (True, True, CredentialDeviceType.MULTI_DEVICE),
    ],
)
def test_backup_flags(
    backup_eligible: bool, backed_up: bool, device_type: CredentialDeviceType
) -> None:
    authenticator = SoftAuthenticator(backup_eligible=backup_eligible, backed_up=backed_up)
    response, registration = enroll(authenticator)

    assert registration.credential_device_type == device_type
    assert registration.credential_backed_up is backed_up
    flags = b64url_decode(response["response"]["authenticatorData"])[32]
    assert bool(flags & BE) is backup_eligible
    assert bool(flags & BS) is backed_up
    assertion = authenticator.get(
        authentication_options(allow=[registration.credential_id]), origin=ORIGIN
    )
    verified = verify_authentication(assertion, registration)
    assert verified.credential_device_type == device_type
    assert verified.credential_backed_up is backed_up


def test_backed_up_without_backup_eligible_is_rejected() -> None:
    response = SoftAuthenticator(backed_up=True).create(registration_options(), origin=ORIGIN)
    with pytest.raises(InvalidBackupFlags):
        verify_registration(response)


# -- discoverable credentials ------------------------------------------------------------------


def test_discoverable_login_returns_the_user_handle() -> None:
    authenticator = SoftAuthenticator()
    options = registration_options(resident_key=ResidentKeyRequirement.REQUIRED)
    options["extensions"] = {"credProps": True}
    response = authenticator.create(options, origin=ORIGIN)
    registration = verify_registration(response)
    assert response["clientExtensionResults"] == {"credProps": {"rk": True}}

    assertion = authenticator.get(authentication_options(), origin=ORIGIN)

    assert b64url_decode(assertion["response"]["userHandle"]) == USER_ID
    assert b64url_decode(assertion["rawId"]) == registration.credential_id
    verify_authentication(assertion, registration)


def test_non_discoverable_credential_needs_allow_credentials() -> None:
    authenticator = SoftAuthenticator()
    options = registration_options(resident_key=ResidentKeyRequirement.DISCOURAGED)
    options["extensions"] = {"credProps": True}
    response = authenticator.create(options, origin=ORIGIN)
    registration = verify_registration(response)
    assert response["clientExtensionResults"] == {"credProps": {"rk": False}}

    with pytest.raises(SoftAuthenticatorError) as error:
        authenticator.get(authentication_options(), origin=ORIGIN)
    assert error.value.name == "NotAllowedError"

    assertion = authenticator.get(
        authentication_options(allow=[b"someone else's", registration.credential_id]),
        origin=ORIGIN,
    )
    assert "userHandle" not in assertion["response"]
    verify_authentication(assertion, registration)


def test_a_new_discoverable_credential_replaces_the_old_one_for_that_user() -> None:
    authenticator = SoftAuthenticator()
    options = registration_options(resident_key=ResidentKeyRequirement.REQUIRED)
    first = authenticator.create(options, origin=ORIGIN)
    second = authenticator.create(options, origin=ORIGIN)

    assert b64url_decode(first["rawId"]) not in authenticator.credentials
    assertion = authenticator.get(authentication_options(), origin=ORIGIN)
    assert assertion["rawId"] == second["rawId"]


def test_credential_id_picks_among_discoverable_credentials() -> None:
    authenticator = SoftAuthenticator()
    options = registration_options(resident_key=ResidentKeyRequirement.REQUIRED)
    first = authenticator.create(options, origin=ORIGIN)
    options["user"]["id"] = b64url(b"bob")
    second = authenticator.create(options, origin=ORIGIN)

    assert authenticator.get(authentication_options(), origin=ORIGIN)["rawId"] == second["rawId"]
    chosen = authenticator.get(
        authentication_options(), origin=ORIGIN, credential_id=b64url_decode(first["rawId"])
    )
    assert chosen["rawId"] == first["rawId"]
    assert b64url_decode(chosen["response"]["userHandle"]) == USER_ID


# -- signature counter -------------------------------------------------------------------------


@pytest.mark.parametrize(("start", "step"), [(0, 1), (5, 3), (0, 0)])
def test_sign_count_goes_up_by_counter_step(start: int, step: int) -> None:
    authenticator = SoftAuthenticator(counter_start=start, counter_step=step)
    _, registration = enroll(authenticator)
    assert registration.sign_count == start

    stored = registration.sign_count
    for n in range(1, 4):
        assertion = authenticator.get(
            authentication_options(allow=[registration.credential_id]), origin=ORIGIN
        )
        verified = verify_authentication(assertion, registration, sign_count=stored)
        assert verified.new_sign_count == start + n * step
        stored = verified.new_sign_count


def test_a_cloned_authenticator_is_detected() -> None:
    authenticator = SoftAuthenticator()
    _, registration = enroll(authenticator)
    options = authentication_options(allow=[registration.credential_id])
    for _ in range(3):
        authenticator.get(options, origin=ORIGIN)

    authenticator.set_sign_count(registration.credential_id, 1)  # the clone lags behind
    assertion = authenticator.get(options, origin=ORIGIN)
    with pytest.raises(InvalidAuthenticationResponse, match="sign count"):
        verify_authentication(assertion, registration, sign_count=3)


# -- what a relying party must reject ----------------------------------------------------------


@pytest.mark.parametrize("algorithm", [ES256, EDDSA])
def test_a_tampered_assertion_signature_is_rejected(algorithm: int) -> None:
    authenticator = SoftAuthenticator(algorithm=algorithm)
    _, registration = enroll(authenticator)
    assertion = authenticator.get(
        authentication_options(allow=[registration.credential_id]), origin=ORIGIN
    )
    signature = bytearray(b64url_decode(assertion["response"]["signature"]))
    signature[-1] ^= 0x01
    assertion["response"]["signature"] = b64url(bytes(signature))

    with pytest.raises(InvalidAuthenticationResponse, match="Could not verify"):
        verify_authentication(assertion, registration)


def test_a_tampered_attestation_signature_is_rejected(ca: TestCA) -> None:
    authenticator = SoftAuthenticator(aaguid=AAGUID, attestation="packed-x5c", attestation_ca=ca)
    response = authenticator.create(
        registration_options(attestation=AttestationConveyancePreference.DIRECT), origin=ORIGIN
    )
    attestation_object = cbor2.loads(b64url_decode(response["response"]["attestationObject"]))
    attestation_object["attStmt"]["sig"] = attestation_object["attStmt"]["sig"][:-1] + bytes(
        [attestation_object["attStmt"]["sig"][-1] ^ 0x01]
    )
    response["response"]["attestationObject"] = b64url(cbor2.dumps(attestation_object))

    with pytest.raises(InvalidRegistrationResponse, match="signature"):
        verify_registration(response, roots=[ca.root_pem])


def test_authenticator_data_changed_after_signing_is_rejected() -> None:
    authenticator = SoftAuthenticator()
    _, registration = enroll(authenticator)
    assertion = authenticator.get(
        authentication_options(allow=[registration.credential_id]), origin=ORIGIN
    )
    auth_data = bytearray(b64url_decode(assertion["response"]["authenticatorData"]))
    auth_data[36] += 1  # the sign count
    assertion["response"]["authenticatorData"] = b64url(bytes(auth_data))

    with pytest.raises(InvalidAuthenticationResponse, match="Could not verify"):
        verify_authentication(assertion, registration)


def test_wrong_origin_is_rejected() -> None:
    authenticator = SoftAuthenticator()
    # A sibling origin may use the parent RP ID, so the browser allows it; the RP must not.
    response = authenticator.create(registration_options(), origin="https://evil.example.com")
    with pytest.raises(InvalidRegistrationResponse, match="origin"):
        verify_registration(response)
    registration = verify_registration(response, origin="https://evil.example.com")

    assertion = authenticator.get(
        authentication_options(allow=[registration.credential_id]),
        origin="https://evil.example.com",
    )
    with pytest.raises(InvalidAuthenticationResponse, match="origin"):
        verify_authentication(assertion, registration)


def test_wrong_challenge_is_rejected() -> None:
    authenticator = SoftAuthenticator()
    response = authenticator.create(registration_options(challenge=b"old"), origin=ORIGIN)
    with pytest.raises(InvalidRegistrationResponse, match="challenge"):
        verify_registration(response)
    registration = verify_registration(response, challenge=b"old")

    assertion = authenticator.get(
        authentication_options(challenge=b"old", allow=[registration.credential_id]),
        origin=ORIGIN,
    )
    with pytest.raises(InvalidAuthenticationResponse, match="challenge"):
        verify_authentication(assertion, registration)


def test_wrong_rp_id_is_rejected() -> None:
    authenticator = SoftAuthenticator()
    response, registration = enroll(authenticator)
    with pytest.raises(InvalidRegistrationResponse, match="RP ID"):
        verify_registration(response, rp_id="other.example")
    assertion = authenticator.get(
        authentication_options(allow=[registration.credential_id]), origin=ORIGIN
    )
    with pytest.raises(InvalidAuthenticationResponse, match="RP ID"):
        verify_authentication(assertion, registration, rp_id="other.example")


def test_an_assertion_rebuilt_from_parts_is_checked_like_any_other() -> None:
    authenticator = SoftAuthenticator()
    _, registration = enroll(authenticator)
    credential = authenticator.credentials[registration.credential_id]
    assertion = authenticator.get(
        authentication_options(allow=[registration.credential_id]), origin=ORIGIN
    )
    # The same bytes as the authenticator's own ...
    auth_data = authenticator_data(rp_id=RP_ID, flags=UP | UV, sign_count=1)
    client_data = client_data_json(
        ceremony="webauthn.get", challenge=b"authentication-challenge", origin=ORIGIN
    )
    assert b64url(auth_data) == assertion["response"]["authenticatorData"]
    assert b64url(client_data) == assertion["response"]["clientDataJSON"]

    # ... and, re-signed without UV, accepted unless the RP requires UV.
    auth_data = authenticator_data(rp_id=RP_ID, flags=UP, sign_count=2)
    assertion["response"]["authenticatorData"] = b64url(auth_data)
    assertion["response"]["signature"] = b64url(
        sign_assertion(credential, authenticator_data=auth_data, client_data_json=client_data)
    )
    assert not verify_authentication(assertion, registration, sign_count=1).user_verified
    with pytest.raises(InvalidAuthenticationResponse, match="User verification is required"):
        verify_authentication(assertion, registration, sign_count=1, require_user_verification=True)


# -- the browser's checks ----------------------------------------------------------------------


def test_exclude_credentials_is_honoured() -> None:
    authenticator = SoftAuthenticator()
    _, registration = enroll(authenticator)

    with pytest.raises(SoftAuthenticatorError) as error:
        authenticator.create(
            registration_options(exclude=[b"elsewhere", registration.credential_id]),
            origin=ORIGIN,
        )
    assert error.value.name == "InvalidStateError"
    assert len(authenticator.credentials) == 1

    # Credentials held by another authenticator do not stop this one.
    other = SoftAuthenticator().create(
        registration_options(exclude=[registration.credential_id]), origin=ORIGIN
    )
    verify_registration(other)


def test_rp_id_must_be_the_origin_host_or_a_parent_of_it() -> None:
    authenticator = SoftAuthenticator()
    options = registration_options()
    verify_registration(
        authenticator.create(options, origin="https://login.example.com"),
        origin="https://login.example.com",
    )
    for origin in ("https://example.org", "https://notexample.com"):
        with pytest.raises(SoftAuthenticatorError) as error:
            authenticator.create(options, origin=origin)
        assert error.value.name == "SecurityError"

    del options["rp"]["id"]  # defaults to the origin's host
    response = authenticator.create(options, origin="https://login.example.com:8443")
    verify_registration(
        response, rp_id="login.example.com", origin="https://login.example.com:8443"
    )


def test_algorithm_must_be_offered() -> None:
    options = registration_options()
    assert [p["alg"] for p in options["pubKeyCredParams"]] == [EDDSA, ES256, -257]
    response = SoftAuthenticator().create(options, origin=ORIGIN)
    assert response["response"]["publicKeyAlgorithm"] == ES256

    options["pubKeyCredParams"] = [{"type": "public-key", "alg": -257}]
    with pytest.raises(SoftAuthenticatorError) as error:
        SoftAuthenticator().create(options, origin=ORIGIN)
    assert error.value.name == "NotSupportedError"


def test_get_refuses_credentials_of_another_rp() -> None:
    authenticator = SoftAuthenticator()
    _, registration = enroll(authenticator)
    options = authentication_options(allow=[registration.credential_id])
    options["rpId"] = "example.org"
    with pytest.raises(SoftAuthenticatorError) as error:
        authenticator.get(options, origin="https://example.org")
    assert error.value.name == "NotAllowedError"
