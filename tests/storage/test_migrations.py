"""Migrations upgrade and downgrade cleanly, and the schema they build is the one the code uses."""

from collections.abc import Iterator
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import MetaData, create_engine, inspect, text

from sparekey.storage.database import Database
from sparekey.storage.tables import metadata, schema_metadata
from tests.conftest import PG_ADMIN_URL


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def empty_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'm.db'}"
        return
    name = f"sparekey_migrations_{request.node.name[-12:].strip('[]')}_{id(tmp_path) % 10_000}"
    admin = create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}"'))
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    yield PG_ADMIN_URL.rsplit("/", 1)[0] + f"/{name}"
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


def test_upgrade_matches_the_tables_then_downgrade_leaves_nothing(empty_url: str) -> None:
    db = Database(empty_url)
    db.migrate()
    assert db.current_revision() == "0014"
    everything = MetaData()
    for table in (*metadata.tables.values(), *schema_metadata.tables.values()):
        table.to_metadata(everything)
    with db.engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn), everything)
    assert diff == [], "migrations and storage/tables.py disagree"
    db.downgrade("base")
    with db.engine.connect() as conn:
        assert set(inspect(conn).get_table_names()) <= {"alembic_version"}
    db.migrate()
    assert db.current_revision() == "0014"
    db.dispose()
