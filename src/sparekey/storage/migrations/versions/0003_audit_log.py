"""The audit log: events, the hash chain's state, and signed checkpoints.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-22
"""

from __future__ import annotations

from datetime import UTC, datetime

import sqlalchemy as sa
from alembic import op

from sparekey.storage.tables import BigId, UtcDateTime

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "audit_events",
        sa.Column("id", BigId, nullable=False, autoincrement=True),
        sa.Column("occurred_at", UtcDateTime, nullable=False),
        sa.Column("event", sa.String(64), nullable=False),
        sa.Column("outcome", sa.String(16), nullable=False),
        sa.Column("actor_type", sa.String(16), nullable=False),
        sa.Column("actor_id", sa.String(64)),
        sa.Column("details", sa.Text, nullable=False),
        sa.Column("user_id", sa.String(128)),
        sa.Column("ip", sa.String(64)),
        sa.Column("user_agent", sa.String(400)),
        sa.Column("personal_digest", sa.LargeBinary(32), nullable=False),
        sa.Column("record_mac", sa.LargeBinary(32), nullable=False),
        sa.Column("mac_key_id", sa.Integer, nullable=False),
        sa.Column("seq", sa.BigInteger),
        sa.Column("chain_digest", sa.LargeBinary(32)),
        sa.PrimaryKeyConstraint("id", name="pk_audit_events"),
        sa.UniqueConstraint("seq", name="uq_audit_events_seq"),
        sa.ForeignKeyConstraint(
            ["mac_key_id"], ["data_keys.id"], name="fk_audit_events_mac_key_id_data_keys"
        ),
    )
    op.create_index("ix_audit_events_user_id_id", "audit_events", ["user_id", "id"])
    op.create_index("ix_audit_events_occurred_at", "audit_events", ["occurred_at"])
    chain = op.create_table(
        "audit_chain",
        sa.Column("id", sa.Integer, nullable=False),
        sa.Column("last_seq", sa.BigInteger, nullable=False),
        sa.Column("last_digest", sa.LargeBinary(32), nullable=False),
        sa.Column("updated_at", UtcDateTime, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_audit_chain"),
    )
    # The one row the sealer locks: the chain is empty, its digest the genesis value.
    op.bulk_insert(
        chain,
        [
            {
                "id": 1,
                "last_seq": 0,
                "last_digest": bytes(32),
                "updated_at": datetime(2026, 1, 1, tzinfo=UTC),
            }
        ],
    )
    op.create_table(
        "audit_checkpoints",
        sa.Column("seq", sa.BigInteger, nullable=False, autoincrement=False),
        sa.Column("chain_digest", sa.LargeBinary(32), nullable=False),
        sa.Column("created_at", UtcDateTime, nullable=False),
        sa.Column("signing_key_id", sa.Integer, nullable=False),
        sa.Column("signature", sa.LargeBinary(64), nullable=False),
        sa.PrimaryKeyConstraint("seq", name="pk_audit_checkpoints"),
        sa.ForeignKeyConstraint(
            ["signing_key_id"],
            ["data_keys.id"],
            name="fk_audit_checkpoints_signing_key_id_data_keys",
        ),
    )


def downgrade() -> None:
    op.drop_table("audit_checkpoints")
    op.drop_table("audit_chain")
    op.drop_index("ix_audit_events_occurred_at", table_name="audit_events")
    op.drop_index("ix_audit_events_user_id_id", table_name="audit_events")
    op.drop_table("audit_events")
