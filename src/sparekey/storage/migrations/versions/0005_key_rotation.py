"""Key rotation: signing keys keep their public half after the private half is destroyed.

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-23
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from sparekey.storage.tables import UtcDateTime

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("data_keys", recreate="never") as batch:
        batch.add_column(sa.Column("public_key", sa.LargeBinary))
        batch.add_column(sa.Column("retired_at", UtcDateTime))


def downgrade() -> None:
    with op.batch_alter_table("data_keys", recreate="never") as batch:
        batch.drop_column("retired_at")
        batch.drop_column("public_key")
