"""The KEK in an HSM (SoftHSM2 over PKCS#11, for real) and in AWS KMS (moto: no AWS here)."""

from __future__ import annotations

import os
import shutil
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text

from sparekey.crypto.aead import DecryptionError
from sparekey.crypto.pkcs11_provider import Pkcs11KeyProvider
from sparekey.crypto.providers import KeyProviderError
from sparekey.domain.models import Caller, FactorType
from sparekey.domain.ports import FixedClock
from sparekey.protocols.otpauth import b32encode
from sparekey.runtime import Sparekey, initialize
from sparekey.settings import Settings, load_settings
from tests.helpers import hotp_code, totp_code

SOFTHSM_MODULE = "/usr/lib/softhsm/libsofthsm2.so"
TOKEN, PIN = "sparekey-tests", "1234"
OPERATOR = Caller(type="operator", id="test")


@pytest.fixture(scope="session")
def softhsm(tmp_path_factory: pytest.TempPathFactory) -> str:
    """One SoftHSM2 token for this test process, set up before the library is first loaded."""
    if shutil.which("softhsm2-util") is None or not Path(SOFTHSM_MODULE).exists():
        pytest.fail("SoftHSM2 is not installed; the test command installs it (apt softhsm2)")
    directory = tmp_path_factory.mktemp("softhsm")
    (directory / "tokens").mkdir()
    config = directory / "softhsm2.conf"
    config.write_text(
        f"directories.tokendir = {directory / 'tokens'}\nobjectstore.backend = file\n"
        "log.level = ERROR\n"
    )
    os.environ["SOFTHSM2_CONF"] = str(config)
    subprocess.run(
        [
            "softhsm2-util",
            "--init-token",
            "--free",
            "--label",
            TOKEN,
            "--pin",
            PIN,
            "--so-pin",
            "5678",
        ],
        check=True,
        capture_output=True,
    )
    return TOKEN


def hsm(label: str) -> Pkcs11KeyProvider:
    return Pkcs11KeyProvider(module=SOFTHSM_MODULE, token_label=TOKEN, pin=PIN, key_label=label)


def test_the_kek_is_made_in_the_token_and_never_leaves_it(softhsm: str) -> None:
    import pkcs11
    from pkcs11 import Attribute, KeyType, ObjectClass

    label = f"kek-{uuid.uuid4().hex}"
    provider = hsm(label)
    assert not provider.exists()
    provider.create()
    token = pkcs11.lib(SOFTHSM_MODULE).get_token(token_label=TOKEN)
    with token.open(user_pin=PIN) as session:
        key = session.get_key(
            label=label, key_type=KeyType.AES, object_class=ObjectClass.SECRET_KEY
        )
        assert key[Attribute.EXTRACTABLE] is False
        assert key[Attribute.SENSITIVE] is True
        assert key[Attribute.VALUE_LEN] == 32
    with pytest.raises(KeyProviderError, match="already holds"):
        provider.create()


def test_wrapped_keys_open_only_with_their_associated_data(softhsm: str) -> None:
    label = f"kek-{uuid.uuid4().hex}"
    provider = hsm(label)
    provider.create()
    wrapped = provider.wrap(b"k" * 32, aad=b"purpose|1")
    assert b"k" * 32 not in wrapped
    assert hsm(label).unwrap(wrapped, aad=b"purpose|1") == b"k" * 32
    with pytest.raises(DecryptionError):
        provider.unwrap(wrapped, aad=b"purpose|2")
    with pytest.raises(KeyProviderError, match="no key"):
        hsm("absent").unwrap(wrapped, aad=b"purpose|1")


def _round_trip(settings: Settings, clock: FixedClock) -> str:
    """Initialize, enroll and verify a code, restart, verify again; returns the KEK id stored."""
    initialize(settings, clock=clock)
    app = Sparekey.open(settings, clock=clock)
    app.users.create(user_id="alice", display_name=None, email=None)
    enrollment = app.factors.enroll("alice", type=FactorType.TOTP)
    secret = b32encode(enrollment.secret)
    app.factors.confirm("alice", enrollment.factor.id, code=totp_code(secret, clock.now()))
    app.close()
    clock.advance(30)
    restarted = Sparekey.open(settings, clock=clock)
    try:
        assert restarted.verification.verify("alice", totp_code(secret, clock.now())).verified
    finally:
        restarted.close()
    engine = create_engine(settings.resolved_database_url)
    with engine.connect() as conn:
        kek_ids = {row[0] for row in conn.execute(text("SELECT kek_id FROM data_keys"))}
    engine.dispose()
    assert len(kek_ids) == 1
    return kek_ids.pop()


def test_a_deployment_on_softhsm(
    softhsm: str, tmp_path: Path, database_url: str, clock: FixedClock
) -> None:
    label = f"kek-{uuid.uuid4().hex}"
    settings = load_settings(
        tmp_path / "data",
        database_url=database_url,
        key_provider="pkcs11",
        pkcs11_module=SOFTHSM_MODULE,
        pkcs11_token_label=TOKEN,
        pkcs11_pin=PIN,
        pkcs11_key_label=label,
    )
    assert _round_trip(settings, clock) == f"pkcs11:{TOKEN}:{label}"
    assert not (tmp_path / "data" / "sparekey.key").exists(), "no key file with an HSM"
    # The stored KEK id, not the configured label, says which token key unwraps the data keys.
    elsewhere = settings.model_copy(update={"pkcs11_key_label": "another"})
    Sparekey.open(elsewhere, clock=clock).close()
    hsm(label).destroy()  # a lost KEK is never silently replaced by a new one
    with pytest.raises(KeyProviderError, match=f"holds no key '{label}'"):
        initialize(settings, clock=clock)


@pytest.fixture
def kms(monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """An in-process AWS KMS (moto) and one symmetric key in it."""
    import boto3
    from moto import mock_aws

    for name, value in [
        ("AWS_ACCESS_KEY_ID", "testing"),
        ("AWS_SECRET_ACCESS_KEY", "testing"),
        ("AWS_DEFAULT_REGION", "eu-west-1"),
    ]:
        monkeypatch.setenv(name, value)
    with mock_aws():
        client = boto3.client("kms", region_name="eu-west-1")
        yield client.create_key(Description="sparekey tests")["KeyMetadata"]["KeyId"]


def test_aws_kms_wraps_with_the_associated_data_as_context(kms: str) -> None:
    from sparekey.crypto.aws_kms_provider import AwsKmsKeyProvider

    provider = AwsKmsKeyProvider(key_id=kms, region="eu-west-1")
    wrapped = provider.wrap(b"k" * 32, aad=b"purpose|1")
    assert provider.unwrap(wrapped, aad=b"purpose|1") == b"k" * 32
    with pytest.raises(DecryptionError):
        provider.unwrap(wrapped, aad=b"purpose|2")


def test_a_deployment_on_aws_kms(
    kms: str, tmp_path: Path, database_url: str, clock: FixedClock
) -> None:
    settings = load_settings(
        tmp_path / "data",
        database_url=database_url,
        key_provider="aws-kms",
        aws_kms_key_id=kms,
        aws_region="eu-west-1",
    )
    assert _round_trip(settings, clock) == f"aws-kms:{kms}"


def _enrolled_hotp(app: Sparekey) -> str:
    app.users.create(user_id="alice", display_name=None, email=None)
    enrollment = app.factors.enroll("alice", type=FactorType.HOTP)
    secret = b32encode(enrollment.secret)
    app.factors.confirm("alice", enrollment.factor.id, code=hotp_code(secret, 0))
    return secret


def test_moving_the_kek_from_the_key_file_into_softhsm_and_rotating_inside_it(
    softhsm: str, tmp_path: Path, database_url: str, clock: FixedClock
) -> None:
    label = f"kek-{uuid.uuid4().hex}"
    settings = load_settings(
        tmp_path / "data",
        database_url=database_url,
        pkcs11_module=SOFTHSM_MODULE,
        pkcs11_token_label=TOKEN,
        pkcs11_pin=PIN,
        pkcs11_key_label=label,
    )
    initialize(settings, clock=clock)
    app = Sparekey.open(settings, clock=clock)
    try:
        secret = _enrolled_hotp(app)
        file_kek = app.keyring.wrapping_provider.kek_id
        moved = app.keys.rotate_kek(app.new_kek("pkcs11", label=label), caller=OPERATOR)
        assert moved.current == f"pkcs11:{TOKEN}:{label}"
        app.destroy_kek(file_kek, caller=OPERATOR)
    finally:
        app.close()
    assert not settings.resolved_key_file.exists(), "the last KEK left the key file: it is gone"

    in_hsm = settings.model_copy(update={"key_provider": "pkcs11"})
    app = Sparekey.open(in_hsm, clock=clock)
    try:
        assert app.verification.verify("alice", hotp_code(secret, 1)).verified
        rotated = app.keys.rotate_kek(app.new_kek(), caller=OPERATOR)  # a new key, same token
        assert rotated.current.startswith(f"pkcs11:{TOKEN}:{label}-")
        app.destroy_kek(moved.current, caller=OPERATOR)
        assert not hsm(label).exists(), "destroyed inside the token"
    finally:
        app.close()
    app = Sparekey.open(in_hsm, clock=clock)
    try:
        assert app.verification.verify("alice", hotp_code(secret, 2)).verified
        assert [r.event for r in app.audit.export() if r.event.startswith("keys.kek")] == [
            "keys.kek_rotated",
            "keys.kek_destroyed",
            "keys.kek_rotated",
            "keys.kek_destroyed",
        ]
    finally:
        app.close()


def test_moving_the_kek_into_aws_kms(
    kms: str, tmp_path: Path, database_url: str, clock: FixedClock
) -> None:
    settings = load_settings(tmp_path / "data", database_url=database_url, aws_region="eu-west-1")
    initialize(settings, clock=clock)
    app = Sparekey.open(settings, clock=clock)
    try:
        secret = _enrolled_hotp(app)
        with pytest.raises(KeyProviderError, match="--aws-kms-key-id"):
            app.new_kek("aws-kms")
        moved = app.keys.rotate_kek(app.new_kek("aws-kms", key_id=kms), caller=OPERATOR)
        assert moved.current == f"aws-kms:{kms}"
        with pytest.raises(KeyProviderError, match="in AWS"):
            app.destroy_kek(moved.current, caller=OPERATOR)
    finally:
        app.close()
    settings.resolved_key_file.unlink()  # nothing needs the key file any more
    app = Sparekey.open(settings, clock=clock)
    try:
        assert app.verification.verify("alice", hotp_code(secret, 1)).verified
    finally:
        app.close()
