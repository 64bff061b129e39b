"""The audit log: recorded with the change, sealed into a chain, and tampering detected."""

from __future__ import annotations

import pytest
from sqlalchemy import Connection, create_engine, text

from sparekey.domain.errors import ConflictError, UserExistsError
from sparekey.domain.models import Caller, FactorType
from sparekey.domain.ports import FixedClock
from sparekey.protocols.otpauth import b32encode
from sparekey.runtime import Sparekey
from sparekey.settings import Settings
from sparekey.storage import audit as audit_repo
from sparekey.storage.audit import Checkpoint
from tests.helpers import totp_code

APP = Caller(type="api_key", id="key1", ip="203.0.113.9", user_agent="Browser/1.0")


def populate(sparekey: Sparekey, clock: FixedClock) -> str:
    """A user who enrolls, signs in, fails once and uses a backup code: a dozen events."""
    sparekey.users.create(user_id="alice", display_name=None, email=None, caller=APP)
    codes = sparekey.backup_codes.regenerate("alice", caller=APP).codes  # no factor yet: no step-up
    enrollment = sparekey.factors.enroll("alice", type=FactorType.TOTP, caller=APP)
    secret = b32encode(enrollment.secret)
    sparekey.factors.confirm("alice", enrollment.factor.id, code=totp_code(secret, clock.now()))
    clock.advance(30)
    good = totp_code(secret, clock.now())
    assert sparekey.verification.verify("alice", good, caller=APP).verified
    assert not sparekey.verification.verify("alice", good, caller=APP).verified
    assert sparekey.verification.verify("alice", codes[0], caller=APP).verified
    sparekey.users.create(user_id="bob", display_name=None, email=None, caller=APP)
    return good


def events(sparekey: Sparekey, **filters: object) -> list[str]:
    return [r.event for r in sparekey.audit.export(**filters)]  # type: ignore[arg-type]


def raw(settings: Settings, sql: str, **params: object) -> None:
    engine = create_engine(settings.resolved_database_url)
    with engine.begin() as conn:
        conn.execute(text(sql), params)
    engine.dispose()


def test_events_are_recorded_with_caller_and_context(sparekey: Sparekey, clock: FixedClock) -> None:
    code = populate(sparekey, clock)
    assert events(sparekey, user_id="alice") == [
        "user.created",
        "backup_codes.generated",
        "factor.enrolled",
        "factor.confirmed",
        "verify.succeeded",
        "verify.failed",
        "backup_code.used",
    ]
    records = list(sparekey.audit.export(user_id="alice"))
    succeeded = next(r for r in records if r.event == "verify.succeeded")
    assert (succeeded.actor_type, succeeded.actor_id) == ("api_key", "key1")
    assert (succeeded.ip, succeeded.user_agent) == ("203.0.113.9", "Browser/1.0")
    assert succeeded.details["factor_type"] == "totp"
    assert next(r for r in records if r.event == "verify.failed").outcome == "failure"
    assert all(code not in str(r.details) for r in records), "never the code"


def test_a_change_that_fails_leaves_no_record(sparekey: Sparekey) -> None:
    sparekey.users.create(user_id="alice", display_name=None, email=None)
    with pytest.raises(UserExistsError):
        sparekey.users.create(user_id="alice", display_name=None, email=None)
    assert events(sparekey, user_id="alice") == ["user.created"]


def test_sealed_chain_verifies(sparekey: Sparekey, clock: FixedClock) -> None:
    populate(sparekey, clock)
    before = sparekey.audit.verify()
    assert before.ok
    assert before.sealed == 0
    assert before.unsealed == 12, "nine events and the three data keys made at init"
    sealed = sparekey.audit.seal_all()
    assert sealed == 12
    report = sparekey.audit.verify()
    assert (report.ok, report.sealed, report.unsealed, report.checkpoints) == (True, 12, 0, 1)
    sparekey.users.delete("bob")
    sparekey.audit.seal_all()
    assert sparekey.audit.verify().checkpoints == 2


def test_a_round_sealed_while_the_chain_is_checked_is_not_a_gap(
    sparekey: Sparekey, clock: FixedClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The server's sealer goes on while someone checks the chain: the check reads the chain's
    recorded end first and the records after, and a round committed in between must not look
    like records gone missing (or tampering)."""
    populate(sparekey, clock)
    sparekey.audit.seal_all()
    read_checkpoints = audit_repo.checkpoints
    rounds: list[int] = []

    def checkpoints_then_a_round(conn: Connection) -> list[Checkpoint]:
        found = read_checkpoints(conn)
        if not rounds:  # once the check has read the chain's end: another round commits
            sparekey.users.create(user_id="carol", display_name=None, email=None, caller=APP)
            rounds.append(sparekey.audit.seal_all())
        return found

    monkeypatch.setattr(audit_repo, "checkpoints", checkpoints_then_a_round)
    report = sparekey.audit.verify()
    assert rounds == [1]
    assert (report.ok, report.problem, report.sealed) == (True, None, 12)
    monkeypatch.undo()
    assert sparekey.audit.verify().sealed == 13


def _sealed(sparekey: Sparekey, clock: FixedClock) -> list[int]:
    populate(sparekey, clock)
    sparekey.audit.seal_all()
    return [r.id for r in sparekey.audit.export()]


def test_an_edited_record_is_named(
    sparekey: Sparekey, clock: FixedClock, settings: Settings
) -> None:
    _sealed(sparekey, clock)
    failed = next(r.id for r in sparekey.audit.export() if r.event == "verify.failed")
    raw(settings, "UPDATE audit_events SET outcome = 'success' WHERE id = :i", i=failed)
    report = sparekey.audit.verify()
    assert not report.ok
    assert report.bad_record_id == failed
    assert "changed or forged" in str(report.problem)


def test_an_edited_personal_field_is_named(
    sparekey: Sparekey, clock: FixedClock, settings: Settings
) -> None:
    ids = _sealed(sparekey, clock)
    raw(settings, "UPDATE audit_events SET ip = '198.51.100.1' WHERE id = :i", i=ids[2])
    report = sparekey.audit.verify()
    assert report.bad_record_id == ids[2]
    assert "IP" in str(report.problem)


def test_a_deleted_record_is_named(
    sparekey: Sparekey, clock: FixedClock, settings: Settings
) -> None:
    ids = _sealed(sparekey, clock)
    raw(settings, "DELETE FROM audit_events WHERE id = :i", i=ids[3])
    report = sparekey.audit.verify()
    assert not report.ok
    assert report.bad_record_id == ids[4], "the first record after the gap"
    assert "seq 4 is missing" in str(report.problem)


def test_records_deleted_from_the_end_are_detected(
    sparekey: Sparekey, clock: FixedClock, settings: Settings
) -> None:
    ids = _sealed(sparekey, clock)
    raw(settings, "DELETE FROM audit_events WHERE id >= :i", i=ids[10])
    report = sparekey.audit.verify()
    assert not report.ok
    assert "ends at seq 10 but was sealed to seq 12" in str(report.problem)


def test_an_inserted_record_is_named(
    sparekey: Sparekey, clock: FixedClock, settings: Settings
) -> None:
    """A forged row copying a real one's MACs, with another event: its MAC gives it away."""
    ids = _sealed(sparekey, clock)
    raw(
        settings,
        "INSERT INTO audit_events (occurred_at, event, outcome, actor_type, actor_id, details,"
        " user_id, ip, user_agent, personal_digest, record_mac, mac_key_id)"
        " SELECT occurred_at, 'throttle.lifted', outcome, actor_type, actor_id, details,"
        " user_id, ip, user_agent, personal_digest, record_mac, mac_key_id"
        " FROM audit_events WHERE id = :i",
        i=ids[1],
    )
    report = sparekey.audit.verify()
    assert not report.ok
    assert report.bad_record_id is not None
    assert report.bad_record_id > ids[-1]
    assert "unsealed record" in str(report.problem)


def test_reordered_records_are_named(
    sparekey: Sparekey, clock: FixedClock, settings: Settings
) -> None:
    ids = _sealed(sparekey, clock)
    raw(settings, "UPDATE audit_events SET seq = -1 WHERE id = :i", i=ids[2])
    raw(settings, "UPDATE audit_events SET seq = 3 WHERE id = :i", i=ids[3])
    raw(settings, "UPDATE audit_events SET seq = 4 WHERE id = :i", i=ids[2])
    report = sparekey.audit.verify()
    assert not report.ok
    assert report.bad_record_id == ids[3]
    assert "inserted or moved" in str(report.problem)


def test_a_rebuilt_chain_fails_its_signed_checkpoint(
    sparekey: Sparekey, clock: FixedClock, settings: Settings
) -> None:
    """Someone with the database but not the keys re-seals after deleting a record: the chain
    digests can be recomputed without a key, the Ed25519 checkpoint cannot."""
    ids = _sealed(sparekey, clock)
    raw(settings, "DELETE FROM audit_events WHERE id = :i", i=ids[11])
    raw(settings, "UPDATE audit_events SET seq = NULL, chain_digest = NULL")
    raw(settings, "UPDATE audit_chain SET last_seq = 0, last_digest = :g", g=bytes(32))
    raw(settings, "DELETE FROM audit_checkpoints WHERE seq < 12")
    sparekey.audit.seal_all()  # rebuilds seq 1..11 and signs it; the checkpoint at 12 remains
    report = sparekey.audit.verify()
    assert not report.ok
    assert "checkpoint at 12" in str(report.problem)


def test_erasing_a_deleted_users_personal_data_keeps_the_chain_verifiable(
    sparekey: Sparekey, clock: FixedClock
) -> None:
    populate(sparekey, clock)
    sparekey.audit.seal_all()
    with pytest.raises(ConflictError):
        sparekey.audit.erase_user("alice", caller=APP)
    sparekey.users.delete("alice", caller=APP)
    assert sparekey.audit.erase_user("alice", caller=APP) == 8
    assert events(sparekey, user_id="alice") == []
    others = ("user.created", "user.erased", "api_key.created", "keys.dek_created")
    alices = [r for r in sparekey.audit.export() if r.event not in others]
    assert len(alices) == 7
    assert all((r.user_id, r.ip, r.user_agent) == (None, None, None) for r in alices)
    assert sparekey.audit.verify().ok
    sparekey.audit.seal_all()
    assert sparekey.audit.verify().ok


def test_pruning_leaves_a_chain_anchored_by_a_checkpoint(
    sparekey: Sparekey, clock: FixedClock, settings: Settings
) -> None:
    populate(sparekey, clock)
    sparekey.audit.seal_all()
    clock.advance(3600)
    cutoff = clock.now()
    sparekey.users.create(user_id="carol", display_name=None, email=None, caller=APP)
    sparekey.audit.seal_all()
    result = sparekey.audit.prune(before=cutoff)
    assert result.deleted == 12
    assert result.anchor_seq == 12
    assert events(sparekey) == ["user.created"]
    report = sparekey.audit.verify()
    assert report.ok, report.problem
    assert report.sealed == 1

    raw(settings, "DELETE FROM audit_checkpoints WHERE seq = 12")
    broken = sparekey.audit.verify()
    assert not broken.ok
    assert "no signed checkpoint anchors the start" in str(broken.problem)


def test_running_low_on_backup_codes_is_recorded(sparekey: Sparekey) -> None:
    sparekey.users.create(user_id="alice", display_name=None, email=None)
    codes = sparekey.backup_codes.regenerate("alice").codes
    for code in codes[:8]:
        assert sparekey.verification.verify("alice", code).verified
    low = [r for r in sparekey.audit.export(user_id="alice") if r.event == "backup_codes.low"]
    assert [r.details["remaining"] for r in low] == [3, 2]
