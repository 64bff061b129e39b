"""Deployment policies for WebAuthn: user verification, synced passkeys, and direct attestation
checked against a FIDO Metadata Service BLOB (built and signed here under a test root)."""

from __future__ import annotations

from datetime import date
from pathlib import Path
from typing import Any

import pytest

from sparekey.domain.errors import CredentialRejectedError
from sparekey.domain.ports import FixedClock
from sparekey.runtime import Sparekey, initialize
from sparekey.services.assurance import NO_ASSURANCE, Assurance
from sparekey.settings import Settings, SettingsError, load_settings
from tests.mds_blob import MdsEntry, build_blob, make_mds_signer
from tests.softauthn import SoftAuthenticator, TestCA

ORIGIN = "http://localhost:8000"
ACME = bytes.fromhex("0123456789abcdef0123456789abcdef")
ACME_ID = "01234567-89ab-cdef-0123-456789abcdef"
OTHER = bytes.fromhex("fedcba9876543210fedcba9876543210")


def deployment(settings: Settings, clock: FixedClock, **policy: Any) -> Sparekey:
    configured = load_settings(settings.data_dir, database_url=settings.database_url, **policy)
    initialize(configured, clock=clock)
    app = Sparekey.open(configured, clock=clock)
    app.users.create(user_id="alice", display_name=None, email=None)
    return app


def register(
    app: Sparekey, authenticator: SoftAuthenticator, assurance: Assurance = NO_ASSURANCE
) -> Any:
    options = app.webauthn.begin_registration("alice", assurance=assurance)
    credential = authenticator.create(options, origin=ORIGIN)
    return app.webauthn.finish_registration("alice", credential, assurance=assurance)


def sign_in(app: Sparekey, authenticator: SoftAuthenticator) -> Assurance:
    """A real sign-in with the key; its assurance token steps alice up for more keys."""
    options = app.webauthn.begin_authentication("alice")
    result = app.webauthn.finish_authentication(authenticator.get(options, origin=ORIGIN))
    assert result.verified
    return Assurance(token=result.assurance_token)


def test_required_user_verification_refuses_a_key_without_it(
    settings: Settings, clock: FixedClock
) -> None:
    app = deployment(settings, clock, webauthn_user_verification="required")
    try:
        options = app.webauthn.begin_registration("alice")
        assert options["authenticatorSelection"]["userVerification"] == "required"
        unverified = SoftAuthenticator(user_verification=False)
        # A browser would refuse; a client that ignores the option is refused by the server.
        options["authenticatorSelection"]["userVerification"] = "discouraged"
        credential = unverified.create(options, origin=ORIGIN)
        with pytest.raises(CredentialRejectedError, match=r"[Uu]ser verification"):
            app.webauthn.finish_registration("alice", credential)
        assert register(app, SoftAuthenticator(user_verification=True)).webauthn is not None
    finally:
        app.close()


def test_synced_passkeys_can_be_refused(settings: Settings, clock: FixedClock) -> None:
    app = deployment(settings, clock, webauthn_allow_synced=False)
    try:
        with pytest.raises(CredentialRejectedError, match="synced passkeys"):
            register(app, SoftAuthenticator(backup_eligible=True))
        factor = register(app, SoftAuthenticator(backup_eligible=False))
        assert factor.webauthn is not None
        assert factor.webauthn.backup_eligible is False
    finally:
        app.close()


@pytest.fixture
def attestation_ca() -> TestCA:
    return TestCA(name="Acme Attestation Root")


@pytest.fixture
def metadata(tmp_path: Path, attestation_ca: TestCA) -> dict[str, Any]:
    """A BLOB that knows the Acme key (certified) and a revoked model, and its trust root."""
    signer = make_mds_signer()
    revoked = TestCA(name="Revoked Vendor Root")
    blob = build_blob(
        [
            MdsEntry(aaguid=ACME_ID, description="Acme Key 5", root_cert=attestation_ca.root_pem),
            MdsEntry(
                aaguid="fedcba98-7654-3210-fedc-ba9876543210",
                description="Leaky Key",
                root_cert=revoked.root_pem,
                status="ATTESTATION_KEY_COMPROMISE",
            ),
        ],
        signer=signer,
        next_update=date(2026, 2, 1),
    )
    (tmp_path / "blob.jwt").write_bytes(blob)
    (tmp_path / "mds-root.pem").write_bytes(signer.root_pem)
    return {
        "webauthn_attestation": "direct",
        "webauthn_mds_blob": tmp_path / "blob.jwt",
        "webauthn_mds_root": tmp_path / "mds-root.pem",
        "_revoked_ca": revoked,
    }


def test_direct_attestation_accepts_a_certified_model_and_names_it(
    settings: Settings, clock: FixedClock, metadata: dict[str, Any], attestation_ca: TestCA
) -> None:
    revoked_ca = metadata.pop("_revoked_ca")
    app = deployment(settings, clock, **metadata)
    try:
        assert app.webauthn.begin_registration("alice")["attestation"] == "direct"
        acme = SoftAuthenticator(
            aaguid=ACME, attestation="packed-x5c", attestation_ca=attestation_ca
        )
        factor = register(app, acme)
        assert factor.webauthn is not None
        assert factor.webauthn.authenticator_name == "Acme Key 5"
        assert factor.webauthn.attestation_format == "packed"
        assert factor.label == "Acme Key 5"
        listed = app.factors.list("alice")
        assert listed[0].webauthn is not None
        assert listed[0].webauthn.authenticator_name == "Acme Key 5"
        stepped_up = sign_in(app, acme)

        refusals = {
            "no attestation": SoftAuthenticator(aaguid=ACME),
            "self attestation": SoftAuthenticator(aaguid=ACME, attestation="packed-self"),
            "a model the metadata does not know": SoftAuthenticator(
                aaguid=bytes(range(16)), attestation="packed-x5c", attestation_ca=attestation_ca
            ),
            "a revoked model": SoftAuthenticator(
                aaguid=OTHER, attestation="packed-x5c", attestation_ca=revoked_ca
            ),
            "a certificate from another vendor's root": SoftAuthenticator(
                aaguid=ACME, attestation="packed-x5c", attestation_ca=TestCA(name="Forger")
            ),
        }
        for why, authenticator in refusals.items():
            with pytest.raises(CredentialRejectedError):
                register(app, authenticator, stepped_up)
            assert len(app.factors.list("alice")) == 1, why
    finally:
        app.close()


def test_the_aaguid_allowlist_narrows_what_the_metadata_trusts(
    settings: Settings, clock: FixedClock, metadata: dict[str, Any], attestation_ca: TestCA
) -> None:
    metadata.pop("_revoked_ca")
    app = deployment(
        settings, clock, webauthn_aaguids="00000000-0000-0000-0000-000000000001", **metadata
    )
    try:
        acme = SoftAuthenticator(
            aaguid=ACME, attestation="packed-x5c", attestation_ca=attestation_ca
        )
        with pytest.raises(CredentialRejectedError, match="not on the allowlist"):
            register(app, acme)
    finally:
        app.close()


def test_direct_attestation_without_metadata_is_a_settings_error(
    settings: Settings, clock: FixedClock
) -> None:
    with pytest.raises(SettingsError, match="webauthn_mds_blob"):
        deployment(settings, clock, webauthn_attestation="direct")


def test_resident_key_and_user_verification_settings_reach_the_options(
    settings: Settings, clock: FixedClock
) -> None:
    app = deployment(
        settings,
        clock,
        webauthn_resident_key="required",
        webauthn_user_verification="discouraged",
        webauthn_rp_name="Acme Sign-in",
    )
    try:
        options = app.webauthn.begin_registration("alice")
        assert options["authenticatorSelection"]["residentKey"] == "required"
        assert options["authenticatorSelection"]["requireResidentKey"] is True
        assert options["authenticatorSelection"]["userVerification"] == "discouraged"
        assert options["rp"] == {"name": "Acme Sign-in", "id": "localhost"}
        assert options["extensions"] == {"credProps": True}
        factor = register(app, SoftAuthenticator())
        assert factor.webauthn is not None
        assert factor.webauthn.discoverable is True
        request = app.webauthn.begin_authentication("alice")
        assert request["userVerification"] == "discouraged"
        assert request["allowCredentials"][0]["id"]
    finally:
        app.close()
