"""Recovery: operators, recovery cases with approvals and temporary access passes, trusted
contacts, and what readiness needs (backup codes proven saved, drills).

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-23
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from sparekey.storage.tables import UtcDateTime

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("users", recreate="never") as batch:
        batch.add_column(sa.Column("backup_codes_proven_at", UtcDateTime))
        batch.add_column(sa.Column("last_drill_at", UtcDateTime))
    op.create_table(
        "operators",
        sa.Column("id", sa.String(32), nullable=False),
        sa.Column("name", sa.String(100), nullable=False),
        sa.Column("role", sa.String(16), nullable=False),
        sa.Column("user_id", sa.String(128), nullable=False),
        sa.Column("created_at", UtcDateTime, nullable=False),
        sa.Column("disabled_at", UtcDateTime),
        sa.PrimaryKeyConstraint("id", name="pk_operators"),
        sa.ForeignKeyConstraint(["user_id"], ["users.id"], name="fk_operators_user_id_users"),
    )
    op.create_index("ix_operators_name", "operators", ["name"], unique=True)
    op.create_index("ix_operators_user_id", "operators", ["user_id"], unique=True)
    with op.batch_alter_table("api_keys", recreate="never") as batch:
        batch.add_column(sa.Column("operator_id", sa.String(32)))
    op.create_index("ix_api_keys_operator_id", "api_keys", ["operator_id"])
    op.create_table(
        "trusted_contacts",
        sa.Column("user_id", sa.String(128), nullable=False),
        sa.Column("contact_id", sa.String(128), nullable=False),
        sa.Column("created_at", UtcDateTime, nullable=False),
        sa.PrimaryKeyConstraint("user_id", "contact_id", name="pk_trusted_contacts"),
        sa.ForeignKeyConstraint(
            ["user_id"], ["users.id"], name="fk_trusted_contacts_user_id_users", ondelete="CASCADE"
        ),
        sa.ForeignKeyConstraint(
            ["contact_id"],
            ["users.id"],
            name="fk_trusted_contacts_contact_id_users",
            ondelete="CASCADE",
        ),
    )
    op.create_index("ix_trusted_contacts_contact_id", "trusted_contacts", ["contact_id"])
    op.create_table(
        "recovery_cases",
        sa.Column("id", sa.String(32), nullable=False),
        sa.Column("user_id", sa.String(128), nullable=False),
        sa.Column("state", sa.String(20), nullable=False),
        sa.Column("approval", sa.String(16), nullable=False),
        sa.Column("approvals_needed", sa.Integer(), nullable=False),
        sa.Column("reason", sa.String(500)),
        sa.Column("requested_by", sa.String(100), nullable=False),
        sa.Column("created_at", UtcDateTime, nullable=False),
        sa.Column("updated_at", UtcDateTime, nullable=False),
        sa.Column("evidence", sa.Text()),
        sa.Column("verified_by", sa.String(100)),
        sa.Column("waiting_until", UtcDateTime),
        sa.Column("pass_digest", sa.LargeBinary(32)),
        sa.Column("pass_mac_key_id", sa.Integer()),
        sa.Column("pass_expires_at", UtcDateTime),
        sa.Column("pass_redeemed_at", UtcDateTime),
        sa.Column("closed_at", UtcDateTime),
        sa.Column("closed_by", sa.String(100)),
        sa.Column("close_reason", sa.String(500)),
        sa.PrimaryKeyConstraint("id", name="pk_recovery_cases"),
        sa.ForeignKeyConstraint(
            ["user_id"], ["users.id"], name="fk_recovery_cases_user_id_users", ondelete="CASCADE"
        ),
        sa.ForeignKeyConstraint(
            ["pass_mac_key_id"],
            ["data_keys.id"],
            name="fk_recovery_cases_pass_mac_key_id_data_keys",
        ),
    )
    op.create_index("ix_recovery_cases_user_id_state", "recovery_cases", ["user_id", "state"])
    op.create_index("ix_recovery_cases_state", "recovery_cases", ["state"])
    op.create_table(
        "recovery_approvals",
        sa.Column("case_id", sa.String(32), nullable=False),
        sa.Column("approver", sa.String(100), nullable=False),
        sa.Column("approved_at", UtcDateTime, nullable=False),
        sa.PrimaryKeyConstraint("case_id", "approver", name="pk_recovery_approvals"),
        sa.ForeignKeyConstraint(
            ["case_id"],
            ["recovery_cases.id"],
            name="fk_recovery_approvals_case_id_recovery_cases",
            ondelete="CASCADE",
        ),
    )


def downgrade() -> None:
    op.drop_table("recovery_approvals")
    op.drop_index("ix_recovery_cases_state", table_name="recovery_cases")
    op.drop_index("ix_recovery_cases_user_id_state", table_name="recovery_cases")
    op.drop_table("recovery_cases")
    op.drop_index("ix_trusted_contacts_contact_id", table_name="trusted_contacts")
    op.drop_table("trusted_contacts")
    op.drop_index("ix_api_keys_operator_id", table_name="api_keys")
    with op.batch_alter_table("api_keys", recreate="never") as batch:
        batch.drop_column("operator_id")
    op.drop_index("ix_operators_user_id", table_name="operators")
    op.drop_index("ix_operators_name", table_name="operators")
    op.drop_table("operators")
    with op.batch_alter_table("users", recreate="never") as batch:
        batch.drop_column("last_drill_at")
        batch.drop_column("backup_codes_proven_at")
