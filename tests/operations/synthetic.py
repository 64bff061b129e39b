"""Migrations that do not exist yet: a copy of this code's migrations with made-up ones after its
head, to play a future release's expand and contract migrations against the code of today.

They change only a table of their own (``synthetic_notes``), so the code of today keeps working
on a database they migrated, as it would after a real expand migration.
"""

from __future__ import annotations

import shutil
import textwrap
from dataclasses import dataclass
from pathlib import Path

from sparekey.storage.database import MIGRATIONS, Database


@dataclass(frozen=True)
class Synthetic:
    revision: str
    kind: str  # "expand" or "contract" (or anything else, to test the check)
    upgrade: str  # the body of upgrade(), using op, sa and schema_compat
    downgrade: str = "pass"
    title: str = "A synthetic migration"


ADD_NOTES = Synthetic(
    "0015",
    "expand",
    """
    op.create_table(
        "synthetic_notes",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("note", sa.String(100)),
    )
    """,
    downgrade='op.drop_table("synthetic_notes")',
    title="A new table no code of today uses",
)

NOTE_NOT_NULL = Synthetic(
    "0016",
    "contract",
    """
    with op.batch_alter_table("synthetic_notes") as batch:
        batch.alter_column("note", existing_type=sa.String(100), nullable=False)
    op.execute(
        schema_compat.update().values(oldest_code_revision="0016", oldest_code_release="0.9.0")
    )
    """,
    title="Notes must be written",
)


def synthetic_migrations(where: Path, *migrations: Synthetic) -> Path:
    """A migrations directory: this code's, then ``migrations`` in order."""
    target = where / "migrations"
    shutil.copytree(MIGRATIONS, target, ignore=shutil.ignore_patterns("__pycache__"))
    db = Database(f"sqlite:///{where / 'unused.db'}")  # reads the migrations, never connects
    down = db.head_revision()
    db.dispose()
    for migration in migrations:
        source = f'''\
            """{migration.title}

            Revision ID: {migration.revision}
            Revises: {down}
            """

            import sqlalchemy as sa
            from alembic import op

            from sparekey.storage.tables import schema_compat

            revision = {migration.revision!r}
            down_revision = {down!r}
            branch_labels = None
            depends_on = None
            kind = {migration.kind!r}


            def upgrade() -> None:
            {{upgrade}}


            def downgrade() -> None:
            {{downgrade}}
            '''
        text = textwrap.dedent(source).format(
            upgrade=textwrap.indent(textwrap.dedent(migration.upgrade).strip(), "    "),
            downgrade=textwrap.indent(textwrap.dedent(migration.downgrade).strip(), "    "),
        )
        (target / "versions" / f"{migration.revision}_synthetic.py").write_text(text)
        down = migration.revision
    return target
