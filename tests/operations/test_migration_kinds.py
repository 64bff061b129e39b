"""Every migration from 0014 on says its kind, and does only what that kind allows.

An expand migration runs while nodes of the release before still serve, so it may only add what
old code does not notice: new tables, nullable columns or columns with a server default, new
non-unique indexes, foreign keys old code's deletes will not trip over. A contract migration may
drop, rename and tighten, and must raise the oldest code the database supports to its own revision.
Each migration runs one step on a scratch database, whose schema is compared before and after.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import pytest
from sqlalchemy import Connection, create_engine, inspect, text

from sparekey.storage.database import COMPAT_SINCE, MIGRATIONS, Database
from tests.operations.synthetic import ADD_NOTES, NOTE_NOT_NULL, Synthetic, synthetic_migrations

# Old code deletes none of these rows, so a foreign key to them needs no ON DELETE: data keys are
# destroyed only when no record names them (services/keys.py), which the foreign keys enforce.
NEVER_DELETED_BY_OLD_CODE = {"data_keys"}


@dataclass(frozen=True)
class Column:
    type: str
    nullable: bool
    default: str | None


@dataclass(frozen=True)
class Shape:
    columns: dict[str, dict[str, Column]]
    indexes: dict[str, set[tuple[str, tuple[str, ...], bool]]]  # name, columns, unique
    uniques: dict[str, set[tuple[str, ...]]]
    foreign_keys: dict[str, set[tuple[tuple[str, ...], str, str | None]]]  # referred, ON DELETE
    checks: dict[str, set[str]]
    compat: tuple[str, str] | None


def shape(conn: Connection) -> Shape:
    inspector = inspect(conn)
    tables = [t for t in inspector.get_table_names() if t != "alembic_version"]

    def columns(table: str) -> dict[str, Column]:
        return {
            c["name"]: Column(
                str(c["type"]), bool(c["nullable"]), None if c["default"] is None else "set"
            )
            for c in inspector.get_columns(table)
        }

    def foreign_keys(table: str) -> set[tuple[tuple[str, ...], str, str | None]]:
        found = set()
        for fk in inspector.get_foreign_keys(table):
            ondelete = (fk.get("options") or {}).get("ondelete")
            found.add((tuple(fk["constrained_columns"]), fk["referred_table"], ondelete))
        return found

    compat = None
    if "schema_compat" in tables:
        row = conn.execute(
            text("SELECT oldest_code_revision, oldest_code_release FROM schema_compat")
        ).one()
        compat = (str(row[0]), str(row[1]))
    return Shape(
        columns={t: columns(t) for t in tables},
        indexes={
            t: {
                (str(i["name"]), tuple(str(c) for c in i["column_names"]), bool(i["unique"]))
                for i in inspector.get_indexes(t)
            }
            for t in tables
        },
        uniques={
            t: {tuple(u["column_names"]) for u in inspector.get_unique_constraints(t)}
            for t in tables
        },
        foreign_keys={t: foreign_keys(t) for t in tables},
        checks={t: {str(c["sqltext"]) for c in inspector.get_check_constraints(t)} for t in tables},
        compat=compat,
    )


def expand_problems(before: Shape, after: Shape) -> list[str]:
    """What in the step from ``before`` to ``after`` old code could trip over."""
    problems = []
    for table, old_columns in before.columns.items():
        if table not in after.columns:
            problems.append(f"drops table {table}")
            continue
        new_columns = after.columns[table]
        for name, old in old_columns.items():
            new = new_columns.get(name)
            if new is None:
                problems.append(f"drops column {table}.{name}")
            elif new.type != old.type:
                problems.append(f"changes the type of {table}.{name}")
            elif old.nullable and not new.nullable:
                problems.append(f"makes {table}.{name} NOT NULL")
        for name, new in new_columns.items():
            if name not in old_columns and not new.nullable and new.default is None:
                problems.append(f"adds NOT NULL column {table}.{name} without a server default")
        for name, _, _ in before.indexes[table] - after.indexes[table]:
            problems.append(f"drops or changes index {name}")
        for name, _, unique in after.indexes[table] - before.indexes[table]:
            if unique:
                problems.append(f"adds unique index {name} to existing table {table}")
        if after.uniques[table] - before.uniques[table]:
            problems.append(f"adds a unique constraint to existing table {table}")
        if after.checks[table] - before.checks[table]:
            problems.append(f"adds a check constraint to existing table {table}")
    for table, keys in after.foreign_keys.items():
        for columns, referred, ondelete in keys - before.foreign_keys.get(table, set()):
            if (
                referred in before.columns
                and referred not in NEVER_DELETED_BY_OLD_CODE
                and ondelete is None
            ):
                problems.append(
                    f"adds a foreign key {table}({', '.join(columns)}) to {referred} without ON "
                    "DELETE: old code deleting those rows would fail"
                )
    if before.compat is not None and after.compat != before.compat:
        problems.append("changes the oldest supported code (only contract migrations may)")
    return problems


def contract_problems(revision: str, after: Shape) -> list[str]:
    if after.compat is None or after.compat[0] != revision:
        return [f"does not raise schema_compat.oldest_code_revision to {revision}"]
    if not re.fullmatch(r"\d+\.\d+\.\d+", after.compat[1]):
        return [f"names no release (like 1.2.0) in oldest_code_release: {after.compat[1]!r}"]
    return []


def step_problems(url: str, migrations: Path, revision: str) -> list[str]:
    """Migrate a scratch database to just before ``revision``, then through it, and judge."""
    db = Database(url, migrations=migrations)
    engine = create_engine(url)
    try:
        chain = db.chain()
        index = [m.revision for m in chain].index(revision)
        if index:
            db.migrate(chain[index - 1].revision)
        with engine.connect() as conn:
            before = shape(conn)
        db.migrate(revision)
        with engine.connect() as conn:
            after = shape(conn)
    finally:
        engine.dispose()
        db.dispose()
    if chain[index].kind == "contract":
        return contract_problems(revision, after)
    return expand_problems(before, after)


def _revisions_to_check() -> list[str]:
    db = Database("sqlite:///unused.db")  # reads the migrations, never connects
    revisions = [m.revision for m in db.chain()]
    db.dispose()
    return revisions[revisions.index(COMPAT_SINCE) :]


@pytest.mark.parametrize("revision", _revisions_to_check())
def test_each_migration_does_only_what_its_kind_allows(empty_url: str, revision: str) -> None:
    assert step_problems(empty_url, MIGRATIONS, revision) == []


def test_0014_records_0_2_0_as_the_oldest_code(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'm.db'}"
    db = Database(url)
    db.migrate(COMPAT_SINCE)
    db.dispose()
    engine = create_engine(url)
    with engine.connect() as conn:
        assert shape(conn).compat == (COMPAT_SINCE, "0.2.0")
    engine.dispose()


# -- the check itself catches what it must ------------------------------------------------------

BAD_EXPANDS = {
    "drops column users.display_name": 'op.drop_column("users", "display_name")',
    "drops table portal_links": 'op.drop_table("portal_links")',
    "drops or changes index ix_audit_events_occurred_at": (
        'op.drop_index("ix_audit_events_occurred_at", table_name="audit_events")'
    ),
    "adds NOT NULL column users.locale without a server default": (
        'op.add_column("users", sa.Column("locale", sa.String(8), nullable=False))'
    ),
    "adds unique index ix_users_display_name to existing table users": (
        'op.create_index("ix_users_display_name", "users", ["display_name"], unique=True)'
    ),
    "adds a foreign key synthetic_tags(user_id) to users without ON DELETE": (
        'op.create_table("synthetic_tags", sa.Column("id", sa.Integer, primary_key=True),'
        ' sa.Column("user_id", sa.String(128), sa.ForeignKey("users.id")))'
    ),
    "changes the oldest supported code": (
        'op.execute(schema_compat.update().values(oldest_code_revision="0015"))'
    ),
}


@pytest.mark.parametrize("problem", sorted(BAD_EXPANDS))
def test_an_expand_migration_that_old_code_would_trip_over_is_caught(
    problem: str, tmp_path: Path
) -> None:
    bad = Synthetic("0015", "expand", BAD_EXPANDS[problem])
    found = step_problems(
        f"sqlite:///{tmp_path / 'm.db'}", synthetic_migrations(tmp_path, bad), "0015"
    )
    assert any(p.startswith(problem) for p in found), found


def test_an_expand_that_tightens_a_column_and_a_contract_that_forgets_the_record_are_caught(
    tmp_path: Path,
) -> None:
    tighten = Synthetic("0016", "expand", NOTE_NOT_NULL.upgrade.split("op.execute")[0])
    migrations = synthetic_migrations(tmp_path / "a", ADD_NOTES, tighten)
    found = step_problems(f"sqlite:///{tmp_path / 'a.db'}", migrations, "0016")
    assert found == ["makes synthetic_notes.note NOT NULL"]
    forgetful = Synthetic("0016", "contract", tighten.upgrade)
    migrations = synthetic_migrations(tmp_path / "b", ADD_NOTES, forgetful)
    found = step_problems(f"sqlite:///{tmp_path / 'b.db'}", migrations, "0016")
    assert found == ["does not raise schema_compat.oldest_code_revision to 0016"]


def test_good_expand_and_contract_migrations_pass(tmp_path: Path) -> None:
    migrations = synthetic_migrations(tmp_path, ADD_NOTES, NOTE_NOT_NULL)
    url = f"sqlite:///{tmp_path / 'm.db'}"
    assert step_problems(url, migrations, "0015") == []
    assert step_problems(url, migrations, "0016") == []
