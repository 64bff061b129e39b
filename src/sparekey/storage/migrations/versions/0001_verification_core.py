"""The verification core: data keys, users, factors, backup codes, API keys.

Revision ID: 0001
Revises:
Create Date: 2026-11-22
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from sparekey.storage.tables import UtcDateTime

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "data_keys",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("purpose", sa.String(16), nullable=False),
        sa.Column("wrapped", sa.LargeBinary, nullable=False),
        sa.Column("kek_id", sa.String(200), nullable=False),
        sa.Column("active", sa.Boolean, nullable=False),
        sa.Column("created_at", UtcDateTime, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_data_keys"),
    )
    op.create_table(
        "users",
        sa.Column("id", sa.String(128), nullable=False),
        sa.Column("display_name", sa.String(200)),
        sa.Column("email", sa.String(320)),
        sa.Column("created_at", UtcDateTime, nullable=False),
        sa.Column("updated_at", UtcDateTime, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_users"),
    )
    op.create_index("ix_users_email", "users", ["email"])
    op.create_table(
        "factors",
        sa.Column("id", sa.String(32), nullable=False),
        sa.Column("user_id", sa.String(128), nullable=False),
        sa.Column("type", sa.String(16), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("label", sa.String(100)),
        sa.Column("algorithm", sa.String(8), nullable=False),
        sa.Column("digits", sa.SmallInteger, nullable=False),
        sa.Column("period", sa.Integer),
        sa.Column("secret", sa.LargeBinary, nullable=False),
        sa.Column("secret_key_id", sa.Integer, nullable=False),
        sa.Column("last_step", sa.BigInteger),
        sa.Column("drift", sa.Integer, nullable=False),
        sa.Column("created_at", UtcDateTime, nullable=False),
        sa.Column("confirmed_at", UtcDateTime),
        sa.Column("last_used_at", UtcDateTime),
        sa.Column("expires_at", UtcDateTime),
        sa.PrimaryKeyConstraint("id", name="pk_factors"),
        sa.ForeignKeyConstraint(
            ["user_id"], ["users.id"], name="fk_factors_user_id_users", ondelete="CASCADE"
        ),
        sa.ForeignKeyConstraint(
            ["secret_key_id"], ["data_keys.id"], name="fk_factors_secret_key_id_data_keys"
        ),
    )
    op.create_index("ix_factors_user_id_status", "factors", ["user_id", "status"])
    op.create_table(
        "backup_codes",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("user_id", sa.String(128), nullable=False),
        sa.Column("digest", sa.LargeBinary(32), nullable=False),
        sa.Column("mac_key_id", sa.Integer, nullable=False),
        sa.Column("created_at", UtcDateTime, nullable=False),
        sa.Column("used_at", UtcDateTime),
        sa.PrimaryKeyConstraint("id", name="pk_backup_codes"),
        sa.ForeignKeyConstraint(
            ["user_id"], ["users.id"], name="fk_backup_codes_user_id_users", ondelete="CASCADE"
        ),
        sa.ForeignKeyConstraint(
            ["mac_key_id"], ["data_keys.id"], name="fk_backup_codes_mac_key_id_data_keys"
        ),
    )
    op.create_index(
        "ix_backup_codes_user_id_digest", "backup_codes", ["user_id", "digest"], unique=True
    )
    op.create_table(
        "api_keys",
        sa.Column("id", sa.String(32), nullable=False),
        sa.Column("name", sa.String(100), nullable=False),
        sa.Column("scopes", sa.String(64), nullable=False),
        sa.Column("digest", sa.LargeBinary(32), nullable=False),
        sa.Column("mac_key_id", sa.Integer, nullable=False),
        sa.Column("created_at", UtcDateTime, nullable=False),
        sa.Column("revoked_at", UtcDateTime),
        sa.PrimaryKeyConstraint("id", name="pk_api_keys"),
        sa.ForeignKeyConstraint(
            ["mac_key_id"], ["data_keys.id"], name="fk_api_keys_mac_key_id_data_keys"
        ),
    )


def downgrade() -> None:
    op.drop_table("api_keys")
    op.drop_index("ix_backup_codes_user_id_digest", table_name="backup_codes")
    op.drop_table("backup_codes")
    op.drop_index("ix_factors_user_id_status", table_name="factors")
    op.drop_table("factors")
    op.drop_index("ix_users_email", table_name="users")
    op.drop_table("users")
    op.drop_table("data_keys")
