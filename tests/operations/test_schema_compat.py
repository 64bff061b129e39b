"""Expand and contract migrations, and which code may start against which schema.

The code of today has no contract migration yet, so the future is played with synthetic
migrations after today's head (tests/operations/synthetic.py): an expand migration that adds a
table, a contract migration that tightens it and raises the oldest supported code. The code of
today then stands where an older release will stand against a newer schema.
"""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
from sqlalchemy import create_engine, inspect, text

from sparekey.cli.common import OPERATOR
from sparekey.domain.errors import BackupError
from sparekey.domain.ports import FixedClock
from sparekey.runtime import Sparekey, initialize, migrate_schema
from sparekey.services.backup import create_backup
from sparekey.settings import Settings, load_settings
from sparekey.storage.database import Database, SchemaError, SchemaUpgrade
from tests.conftest import START
from tests.operations.synthetic import ADD_NOTES, NOTE_NOT_NULL, Synthetic, synthetic_migrations

HEAD = "0014"

ADD_MORE = Synthetic(
    "0017",
    "expand",
    'op.create_table("synthetic_more", sa.Column("id", sa.Integer, primary_key=True))',
    downgrade='op.drop_table("synthetic_more")',
)


def settings_for(url: str, tmp_path: Path, **overrides: object) -> Settings:
    return load_settings(tmp_path / "data", database_url=url, **overrides)


def compat(url: str) -> tuple[str, str]:
    engine = create_engine(url)
    with engine.connect() as conn:
        row = conn.execute(
            text("SELECT oldest_code_revision, oldest_code_release FROM schema_compat")
        ).one()
    engine.dispose()
    return str(row[0]), str(row[1])


def revisions(upgrade: SchemaUpgrade) -> list[str]:
    return [m.revision for m in upgrade.applied]


def upgrade(url: str, migrations: Path | None = None, *, contract: bool = False) -> SchemaUpgrade:
    db = Database(url) if migrations is None else Database(url, migrations=migrations)
    try:
        return db.upgrade(contract=contract)
    finally:
        db.dispose()


def current(url: str) -> str | None:
    db = Database(url)
    try:
        return db.current_revision()
    finally:
        db.dispose()


def test_a_new_database_gets_every_migration_and_records_the_oldest_code(empty_url: str) -> None:
    db = Database(empty_url)
    try:
        first = db.upgrade()
        assert revisions(first)[-1] == HEAD
        assert len(first.applied) == int(HEAD)
        assert first.after.revision == HEAD
        assert not first.after.behind
        assert revisions(db.upgrade()) == []  # nothing twice
    finally:
        db.dispose()
    assert compat(empty_url) == (HEAD, "0.2.0")


def test_expand_migrations_run_and_contract_ones_wait_for_the_operator(
    empty_url: str, tmp_path: Path
) -> None:
    upgrade(empty_url)
    future = Database(
        empty_url, migrations=synthetic_migrations(tmp_path, ADD_NOTES, NOTE_NOT_NULL)
    )
    try:
        expanded = future.upgrade()
        assert revisions(expanded) == ["0015"]
        assert expanded.after.revision == "0015"
        assert not expanded.after.behind
        note = expanded.after.contracts_note()
        assert note is not None
        assert "0016" in note
        assert "sparekey migrate --contract" in note
        assert compat(empty_url) == (HEAD, "0.2.0")  # an expand migration leaves it alone
        assert revisions(future.upgrade(contract=True)) == ["0016"]
    finally:
        future.dispose()
    assert compat(empty_url) == ("0016", "0.9.0")


def test_todays_code_runs_on_an_expanded_schema_and_is_refused_after_a_contract(
    empty_url: str, tmp_path: Path
) -> None:
    settings = settings_for(empty_url, tmp_path)
    clock = FixedClock(START)
    initialize(settings, clock=clock)
    future = Database(
        empty_url, migrations=synthetic_migrations(tmp_path, ADD_NOTES, NOTE_NOT_NULL)
    )
    future.upgrade()

    today = Database(empty_url)
    status = today.schema_status()
    today.dispose()
    assert status.ahead
    assert status.supports_this_code
    assert status.refusal() is None
    result = initialize(settings, clock=clock)
    assert result.schema_note is not None
    assert "revision 0015" in result.schema_note
    assert "without migrating" in result.schema_note
    assert future.current_revision() == "0015"  # never downgraded
    app = Sparekey.open(settings, clock=clock)
    alice = app.users.create(user_id="alice", display_name=None, email=None)
    assert alice.id == "alice"  # it works on the expanded schema
    app.close()

    future.upgrade(contract=True)
    future.dispose()
    for start in (lambda: initialize(settings, clock=clock), lambda: Sparekey.open(settings)):
        with pytest.raises(SchemaError) as refused:
            start()
        message = str(refused.value)
        assert "needs Sparekey 0.9.0 or later" in message
        assert "migration 0016" in message
        assert "\n" not in message
    with pytest.raises(SchemaError, match=r"needs Sparekey 0\.9\.0"):
        migrate_schema(settings)


def test_a_pending_contract_migration_blocks_the_expand_migrations_after_it(
    empty_url: str, tmp_path: Path
) -> None:
    upgrade(empty_url)
    future = Database(
        empty_url, migrations=synthetic_migrations(tmp_path, ADD_NOTES, NOTE_NOT_NULL, ADD_MORE)
    )
    try:
        assert future.schema_status().required == "0017"
        with pytest.raises(SchemaError, match=r"contract migration 0016 .*--contract"):
            future.upgrade()
        assert future.current_revision() == HEAD  # refused before anything ran
        assert revisions(future.upgrade(contract=True)) == ["0015", "0016", "0017"]
    finally:
        future.dispose()


def test_with_auto_migrate_off_only_the_migrate_command_changes_the_schema(
    empty_url: str, tmp_path: Path
) -> None:
    settings = settings_for(empty_url, tmp_path, auto_migrate=False)
    with pytest.raises(SchemaError, match=r"no Sparekey schema yet.*run `sparekey migrate`"):
        initialize(settings)
    assert current(empty_url) is None
    assert revisions(migrate_schema(settings))[-1] == HEAD
    assert initialize(settings).admin_token is not None


@pytest.mark.parametrize("migrators", [4])
def test_migrators_starting_at_once_apply_each_migration_once(
    empty_url: str, migrators: int
) -> None:
    databases = [Database(empty_url) for _ in range(migrators)]
    results: list[SchemaUpgrade] = []
    errors: list[BaseException] = []
    barrier = threading.Barrier(migrators)

    def run(db: Database) -> None:
        barrier.wait()
        try:
            results.append(db.upgrade())
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(db,)) for db in databases]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    for db in databases:
        db.dispose()
    assert errors == []
    applied = sorted(r for result in results for r in revisions(result))
    assert applied == [f"{n:04d}" for n in range(1, int(HEAD) + 1)]
    assert compat(empty_url) == (HEAD, "0.2.0")


def test_code_older_than_the_schema_makes_no_backup(empty_url: str, tmp_path: Path) -> None:
    """Its backup would leave out what the newer migrations added, and a restore would lose it."""
    settings = settings_for(empty_url, tmp_path)
    initialize(settings)
    upgrade(empty_url, synthetic_migrations(tmp_path, ADD_NOTES))
    app = Sparekey.open(settings)
    try:
        with pytest.raises(BackupError, match="release whose migrations end at 0015"):
            create_backup(
                tmp_path / "b.skb",
                db=app.db,
                keyring=app.keyring,
                auditor=app.audit,
                clock=app.clock,
                caller=OPERATOR,
            )
    finally:
        app.close()
    assert not (tmp_path / "b.skb").exists()


def test_a_migration_without_a_kind_is_refused(tmp_path: Path) -> None:
    unknown = Synthetic("0015", "sideways", "pass")
    with pytest.raises(SchemaError, match="migration 0015 must declare kind expand or contract"):
        upgrade(f"sqlite:///{tmp_path / 'm.db'}", synthetic_migrations(tmp_path, unknown))


def test_the_compat_record_is_schema_bookkeeping_not_data(empty_url: str) -> None:
    """Backups carry the tables of storage.tables.metadata; schema_compat is not one of them,
    and a restore's own migrations write it."""
    from sparekey.storage.tables import metadata

    upgrade(empty_url)
    engine = create_engine(empty_url)
    with engine.connect() as conn:
        assert "schema_compat" in inspect(conn).get_table_names()
    engine.dispose()
    assert "schema_compat" not in metadata.tables
