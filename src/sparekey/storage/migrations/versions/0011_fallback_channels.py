"""Email and SMS factors: their destination, its waiting period, and the current sent code.

Revision ID: 0011
Revises: 0010
Create Date: 2027-01-10
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from sparekey.storage.tables import UtcDateTime

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("factors", recreate="never") as batch:
        batch.add_column(sa.Column("destination", sa.String(320)))
        batch.add_column(sa.Column("usable_after", UtcDateTime))
    op.create_table(
        "fallback_codes",
        sa.Column("factor_id", sa.String(32), nullable=False),
        sa.Column("user_id", sa.String(128), nullable=False),
        sa.Column("digest", sa.LargeBinary(32), nullable=False),
        sa.Column("mac_key_id", sa.Integer(), nullable=False),
        sa.Column("sent_at", UtcDateTime, nullable=False),
        sa.Column("expires_at", UtcDateTime, nullable=False),
        sa.Column("used_at", UtcDateTime),
        sa.PrimaryKeyConstraint("factor_id", name="pk_fallback_codes"),
        sa.ForeignKeyConstraint(
            ["factor_id"],
            ["factors.id"],
            name="fk_fallback_codes_factor_id_factors",
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["user_id"], ["users.id"], name="fk_fallback_codes_user_id_users", ondelete="CASCADE"
        ),
        sa.ForeignKeyConstraint(
            ["mac_key_id"], ["data_keys.id"], name="fk_fallback_codes_mac_key_id_data_keys"
        ),
    )
    op.create_index("ix_fallback_codes_user_id", "fallback_codes", ["user_id"])


def downgrade() -> None:
    op.drop_index("ix_fallback_codes_user_id", table_name="fallback_codes")
    op.drop_table("fallback_codes")
    with op.batch_alter_table("factors", recreate="never") as batch:
        batch.drop_column("usable_after")
        batch.drop_column("destination")
