"""Recovery cases: an email/SMS code checked inside the case, as identity evidence.

Revision ID: 0013
Revises: 0012
Create Date: 2027-01-19
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from sparekey.storage.tables import UtcDateTime

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("recovery_cases", recreate="never") as batch:
        batch.add_column(sa.Column("fallback_verified_at", UtcDateTime, nullable=True))
        batch.add_column(sa.Column("fallback_factor_id", sa.String(32), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("recovery_cases", recreate="never") as batch:
        batch.drop_column("fallback_factor_id")
        batch.drop_column("fallback_verified_at")
