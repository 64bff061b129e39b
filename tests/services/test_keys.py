"""Key rotation in process: data keys (encryption, MAC, signing) and KEKs, on both databases."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import create_engine, text

from sparekey.crypto.keyring import KeyPurpose
from sparekey.crypto.providers import KeyFile
from sparekey.domain.errors import ConflictError
from sparekey.domain.models import Caller, FactorType, Scope
from sparekey.domain.ports import FixedClock
from sparekey.protocols.otpauth import b32encode
from sparekey.protocols.rfc4226 import hotp
from sparekey.runtime import Sparekey
from sparekey.services.assurance import Assurance
from sparekey.settings import Settings, load_settings
from tests.helpers import hotp_code

OPERATOR = Caller(type="operator", id="test")


@pytest.fixture
def settings(tmp_path: Path, database_url: str) -> Settings:
    """Nodes pick up a rotated key within 50 ms here (5 s by default), so that a rotation's
    grace period for nodes that have not seen the new key yet is short."""
    return load_settings(tmp_path / "data", database_url=database_url, key_refresh_seconds=0.05)


class KilledError(Exception):
    """Stands for a kill: raised from the progress callback after the first batch."""


def hotp_users(sparekey: Sparekey, count: int) -> dict[str, tuple[bytes, int]]:
    """``count`` users with a confirmed HOTP factor; returns user -> (seed, next counter)."""
    users = {}
    for n in range(count):
        user_id = f"user-{n:04d}"
        sparekey.users.create(user_id=user_id, display_name=None, email=None)
        enrollment = sparekey.factors.enroll(user_id, type=FactorType.HOTP)
        code = hotp(key=enrollment.secret, counter=0)
        sparekey.factors.confirm(user_id, enrollment.factor.id, code=code)
        users[user_id] = (enrollment.secret, 1)
    return users


def verify_all(sparekey: Sparekey, users: dict[str, tuple[bytes, int]]) -> dict[str, Assurance]:
    """Each user signs in with their next code; returns the step-up each verification gave."""
    stepped_up = {}
    for user_id, (seed, counter) in users.items():
        result = sparekey.verification.verify(user_id, hotp(key=seed, counter=counter))
        assert result.verified, user_id
        users[user_id] = (seed, counter + 1)
        stepped_up[user_id] = Assurance(token=result.assurance_token)
    return stepped_up


def key_ids_in_use(settings: Settings) -> dict[int, int]:
    engine = create_engine(settings.resolved_database_url)
    with engine.connect() as conn:
        rows = conn.execute(
            text("SELECT secret_key_id, COUNT(*) FROM factors GROUP BY secret_key_id")
        ).all()
    engine.dispose()
    return {int(key_id): int(count) for key_id, count in rows}


def events(sparekey: Sparekey) -> list[str]:
    return [r.event for r in sparekey.audit.export() if r.event.startswith("keys.")]


def test_a_new_encryption_key_reseals_every_secret_and_the_old_one_is_destroyed(
    sparekey: Sparekey, settings: Settings
) -> None:
    users = hotp_users(sparekey, 25)
    old = sparekey.keyring.active_id(KeyPurpose.ENCRYPTION)
    seen: list[tuple[int, int]] = []
    rotation = sparekey.keys.rotate_dek(
        KeyPurpose.ENCRYPTION, batch_size=7, progress=lambda d, t: seen.append((d, t))
    )
    assert not rotation.resumed
    assert rotation.key_id != old
    assert rotation.reencrypted == 25
    assert rotation.retired == [old]
    assert key_ids_in_use(settings) == {rotation.key_id: 25}
    assert seen[0] == (0, 25)
    assert (25, 25) in seen
    assert old not in [k.id for k in sparekey.keyring.stored_keys()], "its material is gone"
    verify_all(sparekey, users)
    restarted = Sparekey.open(settings)  # another node, reading the keys afresh
    try:
        verify_all(restarted, users)
    finally:
        restarted.close()
    assert events(sparekey)[-3:] == ["keys.dek_created", "keys.reencrypted", "keys.dek_destroyed"]


def test_an_interrupted_rotation_resumes_on_the_same_key_and_codes_work_throughout(
    sparekey: Sparekey, settings: Settings
) -> None:
    users = hotp_users(sparekey, 30)
    old = sparekey.keyring.active_id(KeyPurpose.ENCRYPTION)
    batches = 0

    def kill_after_two_batches(done: int, total: int) -> None:
        nonlocal batches
        batches += 1
        if batches == 3:  # the first call reports (0, total)
            raise KilledError

    with pytest.raises(KilledError):
        sparekey.keys.rotate_dek(
            KeyPurpose.ENCRYPTION, batch_size=10, progress=kill_after_two_batches
        )
    new = sparekey.keyring.active_id(KeyPurpose.ENCRYPTION)
    assert key_ids_in_use(settings) == {new: 20, old: 10}
    # half-rotated: every secret opens, new enrollments use the new key
    stepped_up = verify_all(sparekey, users)
    enrollment = sparekey.factors.enroll(
        "user-0000", type=FactorType.TOTP, assurance=stepped_up["user-0000"]
    )
    assert enrollment.factor.id
    assert key_ids_in_use(settings) == {new: 21, old: 10}

    resumed = sparekey.keys.rotate_dek(KeyPurpose.ENCRYPTION, batch_size=10)
    assert resumed.resumed
    assert resumed.key_id == new
    assert resumed.reencrypted == 10
    assert key_ids_in_use(settings) == {new: 31}
    verify_all(sparekey, users)
    again = sparekey.keys.rotate_dek(KeyPurpose.ENCRYPTION)  # finished: a fresh rotation
    assert not again.resumed
    assert again.key_id != new


def test_a_node_that_has_not_seen_the_new_key_yet_is_swept_up(
    sparekey: Sparekey, settings: Settings, clock: FixedClock
) -> None:
    """A node sealing with the old key during the rotation's grace period is caught by the
    second sweep, so the old key is destroyed only when nothing uses it."""
    users = hotp_users(sparekey, 3)
    stepped_up = verify_all(sparekey, users)
    lagging = Sparekey.open(settings.model_copy(update={"key_refresh_seconds": 3600}), clock=clock)
    try:
        old = lagging.keyring.active_id(KeyPurpose.ENCRYPTION)

        def enroll_on_the_lagging_node(seconds: float) -> None:
            assurance = stepped_up["user-0001"]
            lagging.factors.enroll("user-0001", type=FactorType.TOTP, assurance=assurance)

        sparekey.keys._sleep = enroll_on_the_lagging_node  # the grace period, used by a late write
        rotation = sparekey.keys.rotate_dek(KeyPurpose.ENCRYPTION)
        assert rotation.reencrypted == 4
        assert key_ids_in_use(settings) == {rotation.key_id: 4}
        assert rotation.retired == [old]
    finally:
        lagging.close()


def test_old_mac_keys_stay_until_their_hashes_are_used_up(sparekey: Sparekey) -> None:
    sparekey.users.create(user_id="alice", display_name=None, email=None)
    codes = sparekey.backup_codes.regenerate("alice").codes
    api_key = sparekey.api_keys.create(name="app", scopes=[Scope.VERIFY])
    old = sparekey.keyring.active_id(KeyPurpose.MAC)

    rotation = sparekey.keys.rotate_dek(KeyPurpose.MAC)
    assert rotation.key_id != old
    assert rotation.retired == []
    assert sparekey.verification.verify("alice", codes[0]).verified, "old hashes still match"
    assert sparekey.api_keys.authenticate(api_key.token).id == api_key.key.id
    fresh = sparekey.backup_codes.regenerate("alice").codes  # replaces the old hashes
    assert not sparekey.verification.verify("alice", codes[1]).verified
    assert sparekey.verification.verify("alice", fresh[0]).verified
    status = {k.id: k for k in sparekey.keys.status()}
    assert status[old].state == "retired"
    assert status[old].records > 0, "audit records name it"
    assert status[rotation.key_id].state == "active"


def test_a_retired_signing_key_keeps_only_its_public_half_and_old_checkpoints_verify(
    sparekey: Sparekey, settings: Settings
) -> None:
    sparekey.users.create(user_id="alice", display_name=None, email=None)
    sparekey.audit.seal_all()
    old = sparekey.keyring.active_id(KeyPurpose.SIGNING)
    rotation = sparekey.keys.rotate_dek(KeyPurpose.SIGNING)
    assert rotation.retired == [old]
    sparekey.users.create(user_id="bob", display_name=None, email=None)
    sparekey.audit.seal_all()
    report = sparekey.audit.verify()
    assert report.ok, report.problem
    assert report.checkpoints == 2
    engine = create_engine(settings.resolved_database_url)
    with engine.connect() as conn:
        wrapped, public = conn.execute(
            text("SELECT wrapped, public_key FROM data_keys WHERE id = :i"), {"i": old}
        ).one()
    engine.dispose()
    assert bytes(wrapped) == b""
    assert len(bytes(public)) == 32
    restarted = Sparekey.open(settings)
    try:
        assert restarted.audit.verify().ok
    finally:
        restarted.close()


def test_kek_rotation_rewraps_every_data_key_and_keeps_the_old_kek_until_destroyed(
    sparekey: Sparekey, settings: Settings
) -> None:
    users = hotp_users(sparekey, 3)
    old = sparekey.keyring.wrapping_provider.kek_id
    new = sparekey.new_kek()
    rotation = sparekey.keys.rotate_kek(new)
    assert rotation.previous == [old]
    assert rotation.current == new.kek_id
    assert rotation.data_keys == 3
    assert sparekey.keys.keks_in_use() == {new.kek_id: 3}
    key_file = KeyFile(settings.resolved_key_file)
    assert [p.kek_id for p in key_file.load()] == [new.kek_id, old]
    with pytest.raises(ConflictError, match="already wrapped"):
        sparekey.keys.rotate_kek(new)

    restarted = Sparekey.open(settings)
    try:
        verify_all(restarted, users)
        with pytest.raises(ConflictError, match="still wraps"):
            restarted.destroy_kek(new.kek_id, caller=OPERATOR)
        restarted.destroy_kek(old, caller=OPERATOR)
        assert [p.kek_id for p in key_file.load()] == [new.kek_id]
        # New data keys are wrapped by the new KEK.
        restarted.keys.rotate_dek(KeyPurpose.ENCRYPTION)
        assert restarted.keys.keks_in_use() == {new.kek_id: 3}
    finally:
        restarted.close()
    again = Sparekey.open(settings)
    try:
        verify_all(again, users)
    finally:
        again.close()
    assert events(sparekey)[3:6] == ["keys.kek_rotated", "keys.kek_destroyed", "keys.dek_created"]


def test_a_lost_kek_is_named_when_a_node_starts(
    sparekey: Sparekey, settings: Settings, tmp_path: Path
) -> None:
    new = sparekey.new_kek()
    sparekey.keys.rotate_kek(new)
    settings.resolved_key_file.write_text(KeyFile(settings.resolved_key_file).load()[1].line())
    with pytest.raises(Exception, match=f"does not hold the KEK {new.kek_id}"):
        Sparekey.open(settings)


def test_codes_seen_by_oathtool_survive_every_rotation(
    sparekey: Sparekey, clock: FixedClock
) -> None:
    """End to end with an independent HOTP implementation: rotate everything, codes still verify."""
    sparekey.users.create(user_id="alice", display_name=None, email=None)
    enrollment = sparekey.factors.enroll("alice", type=FactorType.HOTP)
    secret = b32encode(enrollment.secret)
    sparekey.factors.confirm("alice", enrollment.factor.id, code=hotp_code(secret, 0))
    for purpose in KeyPurpose:
        sparekey.keys.rotate_dek(purpose)
    sparekey.keys.rotate_kek(sparekey.new_kek())
    assert sparekey.verification.verify("alice", hotp_code(secret, 1)).verified
    assert sparekey.audit.verify().ok
