"""The throttle of guessable codes: consecutive failures, lock and suspension on each user.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-22
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from sparekey.storage.tables import UtcDateTime

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("users") as batch:
        batch.add_column(
            sa.Column("otp_failures", sa.Integer, nullable=False, server_default=sa.text("0"))
        )
        batch.add_column(sa.Column("otp_locked_until", UtcDateTime))
        batch.add_column(sa.Column("otp_suspended_at", UtcDateTime))


def downgrade() -> None:
    with op.batch_alter_table("users") as batch:
        batch.drop_column("otp_suspended_at")
        batch.drop_column("otp_locked_until")
        batch.drop_column("otp_failures")
