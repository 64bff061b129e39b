"""The notification outbox: one row per (event, channel), delivered by the worker.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-22
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from sparekey.storage.tables import BigId, UtcDateTime

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "outbox",
        sa.Column("id", BigId, nullable=False, autoincrement=True),
        sa.Column("event_id", sa.String(36), nullable=False),
        sa.Column("event", sa.String(64), nullable=False),
        sa.Column("channel", sa.String(16), nullable=False),
        sa.Column("recipient", sa.String(320)),
        sa.Column("payload", sa.Text, nullable=False),
        sa.Column("created_at", UtcDateTime, nullable=False),
        sa.Column("attempts", sa.Integer, nullable=False),
        sa.Column("next_attempt_at", UtcDateTime),
        sa.Column("delivered_at", UtcDateTime),
        sa.Column("failed_at", UtcDateTime),
        sa.Column("last_error", sa.String(500)),
        sa.Column("locked_until", UtcDateTime),
        sa.PrimaryKeyConstraint("id", name="pk_outbox"),
    )
    op.create_index("ix_outbox_event_id_channel", "outbox", ["event_id", "channel"], unique=True)
    op.create_index("ix_outbox_next_attempt_at", "outbox", ["next_attempt_at"])


def downgrade() -> None:
    op.drop_index("ix_outbox_next_attempt_at", table_name="outbox")
    op.drop_index("ix_outbox_event_id_channel", table_name="outbox")
    op.drop_table("outbox")
