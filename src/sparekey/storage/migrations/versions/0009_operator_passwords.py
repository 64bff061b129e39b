"""Operator passwords for the admin console (an Argon2id hash; never the password).

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-08
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("operators") as batch:
        batch.add_column(sa.Column("password_hash", sa.String(256)))


def downgrade() -> None:
    with op.batch_alter_table("operators") as batch:
        batch.drop_column("password_hash")
