"""Rolling upgrades: the database records the oldest code that may run against it.

Every migration from this one on says whether it is an ``expand`` migration (additive: old code
keeps working) or a ``contract`` migration (it drops, renames or tightens, and raises the oldest
code recorded here to its own revision). See docs/decisions/0017-rolling-upgrades.md.

Revision ID: 0014
Revises: 0013
Create Date: 2026-12-02
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0014"
down_revision = "0013"
branch_labels = None
depends_on = None
kind = "expand"


def upgrade() -> None:
    compat = op.create_table(
        "schema_compat",
        sa.Column("id", sa.Integer, nullable=False, autoincrement=False),
        sa.Column("oldest_code_revision", sa.String(32), nullable=False),
        sa.Column("oldest_code_release", sa.String(32), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_schema_compat"),
        sa.CheckConstraint("id = 1", name="ck_schema_compat_one_row"),
    )
    # Sparekey 0.2.0 is the first release that reads this record: code of 0.1.0 migrates on every
    # start and cannot start against a schema it does not know.
    op.bulk_insert(
        compat, [{"id": 1, "oldest_code_revision": "0014", "oldest_code_release": "0.2.0"}]
    )


def downgrade() -> None:
    op.drop_table("schema_compat")
