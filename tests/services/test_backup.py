"""Backups: the restore drill on SQLite and PostgreSQL (and across them), a consistent snapshot
while users enroll, tampering and truncation detected before anything is written, no plaintext."""

from __future__ import annotations

import os
import secrets
import shutil
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from sqlalchemy import create_engine, func, select, text

from sparekey.domain.errors import AuthenticationError, BackupDamagedError, BackupError
from sparekey.domain.models import Caller, FactorType, Scope
from sparekey.domain.ports import FixedClock
from sparekey.protocols.otpauth import b32decode, b32encode
from sparekey.runtime import Sparekey, initialize, kek_resolver
from sparekey.services.assurance import Assurance
from sparekey.services.backup import (
    MAGIC,
    SEEDED_TABLES,
    Manifest,
    create_backup,
    kek_keyring,
    restore_backup,
    verify_backup,
)
from sparekey.settings import Settings, load_settings
from sparekey.storage import audit as audit_repo
from sparekey.storage.database import Database
from sparekey.storage.tables import metadata
from tests.conftest import PG_ADMIN_URL
from tests.helpers import hotp_code, totp_code
from tests.operations.synthetic import ADD_NOTES, synthetic_migrations
from tests.storage.test_secrets_at_rest import forms_of

APP = Caller(type="api_key", id="key1", ip="203.0.113.9", user_agent="Browser/1.0")
OPERATOR = Caller(type="operator", id="cli")

NewSettings = Callable[[str, str], Settings]


@pytest.fixture
def new_settings(tmp_path: Path) -> Iterator[NewSettings]:
    """``new_settings(name, backend)``: settings for an empty deployment with a data directory of
    its own and, on PostgreSQL, a database of its own (dropped at the end if still there)."""
    admin = create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    created: list[str] = []

    def make(name: str, backend: str) -> Settings:
        if backend == "sqlite":
            return load_settings(tmp_path / name)
        database = f"sparekey_backup_{os.getpid()}_{secrets.token_hex(4)}"
        with admin.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{database}"'))
        created.append(database)
        url = PG_ADMIN_URL.rsplit("/", 1)[0] + f"/{database}"
        return load_settings(tmp_path / name, database_url=url)

    yield make
    with admin.connect() as conn:
        for database in created:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)'))
    admin.dispose()


def destroy(settings: Settings, vault: Path) -> None:
    """Lose the server: keep the key file in the vault, delete the data dir and the database."""
    vault.mkdir(exist_ok=True)
    shutil.copy2(settings.resolved_key_file, vault / "sparekey.key")
    shutil.rmtree(settings.data_dir)
    if settings.database_url:
        name = settings.database_url.rsplit("/", 1)[1]
        admin = create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE "{name}" WITH (FORCE)'))
        admin.dispose()


def restore_into(settings: Settings, backup: Path, clock: FixedClock, vault: Path | None) -> None:
    """The operator's steps on a new machine: the key file from the vault, then restore."""
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    if vault is not None:
        shutil.copy2(vault / "sparekey.key", settings.resolved_key_file)
    db = Database(settings.resolved_database_url)
    try:
        restore_backup(
            backup, db=db, resolve_kek=kek_resolver(settings), clock=clock, caller=OPERATOR
        )
    finally:
        db.dispose()


def backup(app: Sparekey, path: Path, **options: object) -> Manifest:
    return create_backup(
        path,
        db=app.db,
        keyring=app.keyring,
        auditor=app.audit,
        clock=app.clock,
        caller=OPERATOR,
        **options,  # type: ignore[arg-type]
    )


def verify(settings: Settings, path: Path) -> Manifest:
    return verify_backup(path, keyring=kek_keyring(kek_resolver(settings)))


@dataclass(frozen=True, kw_only=True)
class Enrolled:
    user_id: str
    totp: str  # base32 seed
    hotp: str
    last_totp: str  # the code last accepted
    used_backup: str
    unused_backup: str


def populate(app: Sparekey, clock: FixedClock) -> list[Enrolled]:
    """Three users with TOTP, HOTP and backup codes; each signs in with one TOTP code, one HOTP
    code (counter 1) and one backup code."""
    people = []
    for n in range(3):
        user = f"drill-user-{n}"
        app.users.create(
            user_id=user, display_name=f"Drill {n}", email=f"{user}@example.org", caller=APP
        )
        codes = app.backup_codes.regenerate(user, caller=APP).codes  # no factor yet: no step-up
        totp = app.factors.enroll(user, type=FactorType.TOTP, caller=APP)
        totp_seed = b32encode(totp.secret)
        app.factors.confirm(user, totp.factor.id, code=totp_code(totp_seed, clock.now()))
        people.append((user, totp_seed, codes))
    clock.advance(30)
    added = []
    for user, totp_seed, codes in people:  # the second factor, stepped up with the first
        signed_in = app.verification.verify(user, totp_code(totp_seed, clock.now()), caller=APP)
        stepped_up = Assurance(token=signed_in.assurance_token)
        hotp = app.factors.enroll(user, type=FactorType.HOTP, caller=APP, assurance=stepped_up)
        hotp_seed = b32encode(hotp.secret)
        app.factors.confirm(
            user, hotp.factor.id, code=hotp_code(hotp_seed, 0), assurance=stepped_up
        )
        added.append((user, totp_seed, hotp_seed, codes))
    clock.advance(30)
    enrolled = []
    for user, totp_seed, hotp_seed, codes in added:
        code = totp_code(totp_seed, clock.now())
        assert app.verification.verify(user, code, caller=APP).verified
        assert app.verification.verify(user, hotp_code(hotp_seed, 1), caller=APP).verified
        assert app.verification.verify(user, codes[0], caller=APP).verified
        enrolled.append(
            Enrolled(
                user_id=user,
                totp=totp_seed,
                hotp=hotp_seed,
                last_totp=code,
                used_backup=codes[0],
                unused_backup=codes[1],
            )
        )
    return enrolled


@dataclass(frozen=True)
class AuditState:
    sealed: int
    checkpoints: int
    last_seq: int
    last_digest: bytes
    events: list[tuple[int, str, int | None]]


def audit_state(app: Sparekey) -> AuditState:
    report = app.audit.verify()
    assert report.ok, report.problem
    with app.db.read() as conn:
        last_seq, last_digest = audit_repo.chain_state(conn, lock=False)
    events = [(r.id, r.event, r.seq) for r in app.audit.export()]
    return AuditState(report.sealed, report.checkpoints, last_seq, last_digest, events)


DRILLS = [
    pytest.param("sqlite", "sqlite", id="sqlite"),
    pytest.param("postgres", "postgres", id="postgres", marks=pytest.mark.postgres),
    pytest.param("sqlite", "postgres", id="sqlite-to-postgres", marks=pytest.mark.postgres),
    pytest.param("postgres", "sqlite", id="postgres-to-sqlite", marks=pytest.mark.postgres),
]


@pytest.mark.parametrize(("source", "target"), DRILLS)
def test_restore_drill(
    source: str, target: str, new_settings: NewSettings, clock: FixedClock, tmp_path: Path
) -> None:
    settings = new_settings("origin", source)
    initialize(settings, clock=clock)
    app = Sparekey.open(settings, clock=clock)
    people = populate(app, clock)
    api_key = app.api_keys.create(name="drill", scopes=[Scope.VERIFY], caller=APP)
    revoked = app.api_keys.create(name="gone", scopes=[Scope.VERIFY], caller=APP)
    app.api_keys.revoke(revoked.key.id, caller=APP)
    app.audit.seal_all()
    before = audit_state(app)
    path = tmp_path / "backups" / "drill.skb"
    path.parent.mkdir()
    manifest = backup(app, path)
    assert manifest.tables["users"] == 3
    assert manifest.tables["factors"] == 6
    assert manifest.tables["backup_codes"] == 30
    app.close()

    destroy(settings, tmp_path / "vault")
    restored_settings = new_settings("restored", target)
    restore_into(restored_settings, path, clock, tmp_path / "vault")

    restored = Sparekey.open(restored_settings, clock=clock)
    try:
        after = audit_state(restored)
        assert (after.sealed, after.checkpoints) == (before.sealed, before.checkpoints)
        assert (after.last_seq, after.last_digest) == (before.last_seq, before.last_digest)
        assert after.events[:-1] == before.events, "backup.created came after the snapshot"
        assert after.events[-1][1:] == ("backup.restored", None)
        assert restored.audit.seal_all() == 1
        assert restored.audit.verify().ok

        assert restored.api_keys.authenticate(api_key.token).id == api_key.key.id
        with pytest.raises(AuthenticationError, match="revoked"):
            restored.api_keys.authenticate(revoked.token)

        clock.advance(30)
        for person in people:
            verify_code = restored.verification.verify
            assert not verify_code(person.user_id, person.last_totp).verified, "step kept"
            assert verify_code(person.user_id, totp_code(person.totp, clock.now())).verified
            assert not verify_code(person.user_id, hotp_code(person.hotp, 1)).verified
            assert verify_code(person.user_id, hotp_code(person.hotp, 2)).verified
            assert not verify_code(person.user_id, person.used_backup).verified, "stays used"
            assert verify_code(person.user_id, person.unused_backup).verified
        restored.users.create(user_id="after-restore", display_name=None, email=None)
        restored.audit.seal_all()
        assert restored.audit.verify().ok, "new records continue the restored chain"
    finally:
        restored.close()


def table_counts(url: str) -> dict[str, int]:
    engine = create_engine(url)
    with engine.connect() as conn:
        counts = {
            t.name: int(conn.execute(select(func.count()).select_from(t)).scalar_one())
            for t in metadata.sorted_tables
        }
    engine.dispose()
    return counts


def test_a_backup_taken_while_users_enroll_is_one_instant(
    sparekey: Sparekey,
    settings: Settings,
    backend: str,
    new_settings: NewSettings,
    clock: FixedClock,
    tmp_path: Path,
) -> None:
    """Writes that commit while the backup reads are wholly out of it: every restored row comes
    with its audit record, and the counts are those of one moment."""
    stop = threading.Event()
    enrolled: list[str] = []
    failures: list[BaseException] = []

    def enroll_until_stopped() -> None:
        try:
            while not stop.is_set():
                user = f"busy-{len(enrolled)}"
                sparekey.users.create(user_id=user, display_name=None, email=None, caller=APP)
                sparekey.factors.enroll(user, type=FactorType.TOTP, caller=APP)
                sparekey.backup_codes.regenerate(user, caller=APP)
                enrolled.append(user)
        except BaseException as exc:  # reported in the test's thread
            failures.append(exc)

    paused = []

    def pause_once(phase: str, done: int, total: int) -> None:
        """Halfway into the snapshot, let three more users enroll before reading on."""
        if paused:
            return
        paused.append(len(enrolled))
        deadline = time.monotonic() + 20
        while len(enrolled) < paused[0] + 3 and time.monotonic() < deadline and not failures:
            time.sleep(0.01)

    worker = threading.Thread(target=enroll_until_stopped)
    worker.start()
    try:
        while len(enrolled) < 2 and not failures:
            time.sleep(0.01)
        manifest = backup(sparekey, tmp_path / "busy.skb", progress=pause_once)
    finally:
        stop.set()
        worker.join()
    assert not failures, failures
    assert len(enrolled) >= paused[0] + 3
    assert manifest.tables["users"] < len(enrolled), "users enrolled during the backup are out"

    target = new_settings("restored", backend)
    restore_into(target, tmp_path / "busy.skb", clock, vault=settings.data_dir)
    restored_counts = table_counts(target.resolved_database_url)
    assert restored_counts == {
        **manifest.tables,
        "audit_events": manifest.tables["audit_events"] + 1,
    }
    engine = create_engine(target.resolved_database_url)
    with engine.connect() as conn:
        events = dict(
            conn.execute(text("SELECT event, count(*) FROM audit_events GROUP BY event")).all()
        )
    engine.dispose()
    assert restored_counts["users"] == events["user.created"]
    assert restored_counts["factors"] == events["factor.enrolled"]
    assert restored_counts["backup_codes"] == 10 * events["backup_codes.generated"]


# -- a damaged, tampered or misplaced backup ------------------------------------------------------


def split(data: bytes) -> tuple[bytes, bytes, list[bytes]]:
    """(magic, manifest line, frames) of a backup file."""
    assert data.startswith(MAGIC)
    end = data.index(b"\n", len(MAGIC)) + 1
    manifest, body = data[len(MAGIC) : end], data[end:]
    frames = []
    while body:
        size = 4 + int.from_bytes(body[:4], "big")
        frames.append(body[:size])
        body = body[size:]
    return MAGIC, manifest, frames


def flip(data: bytes, at: int) -> bytes:
    return data[:at] + bytes([data[at] ^ 0x01]) + data[at + 1 :]


def edit_manifest(edit: Callable[[bytes], bytes]) -> Callable[[bytes], bytes]:
    def apply(data: bytes) -> bytes:
        magic, manifest, frames = split(data)
        changed = edit(manifest)
        assert changed != manifest
        return magic + changed + b"".join(frames)

    return apply


def edit_frames(edit: Callable[[list[bytes]], list[bytes]]) -> Callable[[bytes], bytes]:
    def apply(data: bytes) -> bytes:
        magic, manifest, frames = split(data)
        assert len(frames) >= 4
        return magic + manifest + b"".join(edit(frames))

    return apply


def _wrapped_key_flipped(manifest: bytes) -> bytes:
    at = manifest.index(b'"wrapped_key":"') + len(b'"wrapped_key":"') + 10
    replacement = b"B" if manifest[at : at + 1] != b"B" else b"C"
    return manifest[:at] + replacement + manifest[at + 1 :]


def _checksum_flipped(manifest: bytes) -> bytes:
    at = manifest.index(b'"body_sha256":"') + len(b'"body_sha256":"')
    replacement = b"0" if manifest[at : at + 1] != b"0" else b"1"
    return manifest[:at] + replacement + manifest[at + 1 :]


TAMPERING = {
    "manifest-field": (
        edit_manifest(lambda m: m.replace(b'"dialect":"sqlite"', b'"dialect":"sqlitf"')),
        "its manifest was changed",
    ),
    "manifest-count": (
        edit_manifest(lambda m: m.replace(b'"users":1', b'"users":2')),
        "its manifest was changed",
    ),
    "manifest-spacing": (
        edit_manifest(lambda m: m.replace(b'"format":1', b'"format": 1')),
        "its manifest was changed",
    ),
    "manifest-syntax": (edit_manifest(lambda m: b"[" + m[1:]), "manifest is not readable"),
    "wrapped-key": (edit_manifest(_wrapped_key_flipped), "its key does not unwrap"),
    "checksum": (edit_manifest(_checksum_flipped), "the checksum in its manifest differs"),
    "chunk-byte": (
        edit_frames(lambda f: [*f[:2], flip(f[2], 40), *f[3:]]),
        "chunk 3 was changed",
    ),
    "chunks-swapped": (
        edit_frames(lambda f: [f[1], f[0], *f[2:]]),
        "chunk 1 was changed or moved",
    ),
    "last-chunk-dropped": (edit_frames(lambda f: f[:-1]), "backup is truncated"),
    "cut-inside-a-chunk": (lambda data: data[: len(data) - 10], "backup is truncated"),
    "cut-inside-the-manifest": (lambda data: data[: len(MAGIC) + 20], "backup is truncated"),
    "chunk-appended": (edit_frames(lambda f: [*f, f[1]]), "data follows its last chunk"),
    "not-a-backup": (lambda data: b"SQLite format 3\x00" + data[16:], "not a Sparekey backup"),
}


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
@pytest.mark.parametrize("case", TAMPERING)
def test_a_damaged_backup_is_refused_and_nothing_is_written(
    sparekey: Sparekey,
    settings: Settings,
    new_settings: NewSettings,
    clock: FixedClock,
    tmp_path: Path,
    case: str,
) -> None:
    tamper, message = TAMPERING[case]
    sparekey.users.create(user_id="alice", display_name=None, email=None)
    good = tmp_path / "good.skb"
    backup(sparekey, good, chunk_size=256)
    verify(settings, good)
    bad = tmp_path / "bad.skb"
    bad.write_bytes(tamper(good.read_bytes()))

    with pytest.raises(BackupDamagedError, match=message):
        verify(settings, bad)
    target = new_settings("restored", "sqlite")
    target.data_dir.mkdir()
    shutil.copy2(settings.resolved_key_file, target.resolved_key_file)
    with pytest.raises(BackupDamagedError, match=message):
        restore_into(target, bad, clock, vault=None)
    assert sorted(p.name for p in target.data_dir.iterdir()) == ["sparekey.key"]


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
def test_another_deployments_key_cannot_open_it(
    sparekey: Sparekey, new_settings: NewSettings, clock: FixedClock, tmp_path: Path
) -> None:
    path = tmp_path / "b.skb"
    backup(sparekey, path)
    stranger = new_settings("stranger", "sqlite")
    initialize(stranger, clock=clock)
    with pytest.raises(BackupError, match="cannot open this backup without its KEK"):
        verify(stranger, path)
    target = new_settings("restored", "sqlite")
    target.data_dir.mkdir()
    shutil.copy2(stranger.resolved_key_file, target.resolved_key_file)
    with pytest.raises(BackupError, match="without its KEK"):
        restore_into(target, path, clock, vault=None)
    assert sorted(p.name for p in target.data_dir.iterdir()) == ["sparekey.key"]


def test_a_deployment_with_data_is_never_restored_over(
    sparekey: Sparekey, settings: Settings, clock: FixedClock, tmp_path: Path
) -> None:
    sparekey.users.create(user_id="alice", display_name=None, email=None)
    path = tmp_path / "b.skb"
    backup(sparekey, path)
    sparekey.users.create(user_id="bob", display_name=None, email=None)
    counts = table_counts(settings.resolved_database_url)
    with pytest.raises(BackupError, match="already holds Sparekey data"):
        restore_into(settings, path, clock, vault=None)
    assert table_counts(settings.resolved_database_url) == counts


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
def test_a_backup_from_before_a_kek_rotation_needs_the_retired_kek(
    sparekey: Sparekey,
    settings: Settings,
    new_settings: NewSettings,
    clock: FixedClock,
    tmp_path: Path,
) -> None:
    sparekey.users.create(user_id="alice", display_name=None, email=None)
    old = backup(sparekey, tmp_path / "old.skb")
    rotation = sparekey.keys.rotate_kek(sparekey.new_kek())
    assert rotation.previous == [old.kek_id]
    new = backup(sparekey, tmp_path / "new.skb")
    assert new.kek_id == rotation.current

    assert verify(settings, tmp_path / "old.skb") == old, "the key file keeps the retired KEK"
    target = new_settings("restored", "sqlite")
    restore_into(target, tmp_path / "old.skb", clock, vault=settings.data_dir)
    assert table_counts(target.resolved_database_url)["users"] == 1

    sparekey.destroy_kek(old.kek_id, caller=OPERATOR)
    with pytest.raises(BackupError, match=f"without its KEK: .*{old.kek_id}"):
        verify(settings, tmp_path / "old.skb")
    assert verify(settings, tmp_path / "new.skb") == new


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
def test_a_backup_of_another_schema_revision_is_refused(
    sparekey: Sparekey,
    settings: Settings,
    new_settings: NewSettings,
    clock: FixedClock,
    tmp_path: Path,
) -> None:
    """A backup made by a newer release (here: code with a synthetic migration 0015)."""
    newer = Database(
        settings.resolved_database_url, migrations=synthetic_migrations(tmp_path, ADD_NOTES)
    )
    path = tmp_path / "newer.skb"
    try:
        newer.upgrade()
        create_backup(
            path,
            db=newer,
            keyring=sparekey.keyring,
            auditor=sparekey.audit,
            clock=clock,
            caller=OPERATOR,
        )
    finally:
        newer.dispose()
    target = new_settings("restored", "sqlite")
    target.data_dir.mkdir()
    shutil.copy2(settings.resolved_key_file, target.resolved_key_file)
    with pytest.raises(BackupError, match="schema revision 0015"):
        restore_into(target, path, clock, vault=None)
    assert sorted(p.name for p in target.data_dir.iterdir()) == ["sparekey.key"]


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
def test_an_existing_file_is_never_replaced(sparekey: Sparekey, tmp_path: Path) -> None:
    backups = tmp_path / "backups"
    backups.mkdir()
    path = backups / "b.skb"
    path.write_bytes(b"last week's backup")
    with pytest.raises(BackupError, match="already exists"):
        backup(sparekey, path)
    assert path.read_bytes() == b"last week's backup"

    def appears_meanwhile(phase: str, done: int, total: int) -> None:
        if not late.exists():
            late.write_bytes(b"written by someone else during the backup")

    late = backups / "late.skb"
    with pytest.raises(BackupError, match="already exists"):
        backup(sparekey, late, progress=appears_meanwhile)
    assert late.read_bytes() == b"written by someone else during the backup"
    assert sorted(p.name for p in backups.iterdir()) == ["b.skb", "late.skb"], "no temporary file"
    assert "backup.created" not in [r.event for r in sparekey.audit.export()]


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
def test_the_file_holds_no_secret_and_no_user_in_clear(
    sparekey: Sparekey, settings: Settings, clock: FixedClock, tmp_path: Path
) -> None:
    people = populate(sparekey, clock)
    token = sparekey.api_keys.create(name="app", scopes=[Scope.VERIFY]).token
    path = tmp_path / "b.skb"
    manifest = backup(sparekey, path)
    assert oct(path.stat().st_mode & 0o777) == "0o600"
    assert "backup.created" in [r.event for r in sparekey.audit.export()]
    data = path.read_bytes()
    _, header, _ = split(data)
    assert set(Manifest.parse(header).tables) == set(metadata.tables)
    assert manifest.kek_id.encode() in header
    for person in people:
        for seed in (person.totp, person.hotp):
            for form in forms_of(b32decode(seed)):
                assert form not in data
        for clear in (person.user_id, "@example.org", person.used_backup, person.unused_backup):
            assert clear.encode() not in data
            assert clear.replace("-", "").encode() not in data
    assert token.split("_", 2)[2].encode() not in data


def test_only_the_seeded_tables_start_with_rows(sqlite_template: Path) -> None:
    """A restore replaces what migrations seed; everything else must start empty (a new seeded
    table belongs in SEEDED_TABLES)."""
    seeded = {name for name, rows in table_counts(f"sqlite:///{sqlite_template}").items() if rows}
    assert seeded == SEEDED_TABLES


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
def test_a_newer_format_or_a_missing_file_is_said_so(settings: Settings, tmp_path: Path) -> None:
    newer = tmp_path / "newer.skb"
    newer.write_bytes(b"SPAREKEY-BACKUP-2\n{}\n")
    with pytest.raises(BackupError, match="newer format"):
        verify(settings, newer)
    with pytest.raises(BackupError, match="no backup at"):
        verify(settings, tmp_path / "missing.skb")
