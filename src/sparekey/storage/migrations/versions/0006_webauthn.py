"""WebAuthn: credentials beside their factor row, a per-user handle, and ceremony challenges.

A WebAuthn factor keeps no secret: the OTP columns of ``factors`` become nullable.

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-23
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from alembic import op

from sparekey.storage.tables import UtcDateTime

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

_OTP_COLUMNS: list[tuple[str, sa.types.TypeEngine[Any]]] = [
    ("algorithm", sa.String(8)),
    ("digits", sa.SmallInteger()),
    ("secret", sa.LargeBinary()),
    ("secret_key_id", sa.Integer()),
]


def upgrade() -> None:
    with op.batch_alter_table("factors") as batch:
        for name, type_ in _OTP_COLUMNS:
            batch.alter_column(name, existing_type=type_, nullable=True)
    with op.batch_alter_table("users", recreate="never") as batch:
        batch.add_column(sa.Column("webauthn_handle", sa.LargeBinary(64)))
    op.create_index("ix_users_webauthn_handle", "users", ["webauthn_handle"], unique=True)
    op.create_table(
        "webauthn_credentials",
        sa.Column("factor_id", sa.String(32), nullable=False),
        sa.Column("user_id", sa.String(128), nullable=False),
        sa.Column("credential_id", sa.LargeBinary(1023), nullable=False),
        sa.Column("public_key", sa.LargeBinary(), nullable=False),
        sa.Column("sign_count", sa.BigInteger(), nullable=False),
        sa.Column("aaguid", sa.String(36), nullable=False),
        sa.Column("transports", sa.String(200), nullable=False),
        sa.Column("attestation_format", sa.String(32), nullable=False),
        sa.Column("backup_eligible", sa.Boolean(), nullable=False),
        sa.Column("backed_up", sa.Boolean(), nullable=False),
        sa.Column("discoverable", sa.Boolean()),
        sa.PrimaryKeyConstraint("factor_id", name="pk_webauthn_credentials"),
        sa.ForeignKeyConstraint(
            ["factor_id"],
            ["factors.id"],
            name="fk_webauthn_credentials_factor_id_factors",
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["user_id"],
            ["users.id"],
            name="fk_webauthn_credentials_user_id_users",
            ondelete="CASCADE",
        ),
    )
    op.create_index(
        "ix_webauthn_credentials_credential_id",
        "webauthn_credentials",
        ["credential_id"],
        unique=True,
    )
    op.create_index("ix_webauthn_credentials_user_id", "webauthn_credentials", ["user_id"])
    op.create_table(
        "webauthn_challenges",
        sa.Column("challenge_hash", sa.LargeBinary(32), nullable=False),
        sa.Column("ceremony", sa.String(16), nullable=False),
        sa.Column("user_id", sa.String(128)),
        sa.Column("user_verification", sa.String(16), nullable=False),
        sa.Column("created_at", UtcDateTime, nullable=False),
        sa.Column("expires_at", UtcDateTime, nullable=False),
        sa.PrimaryKeyConstraint("challenge_hash", name="pk_webauthn_challenges"),
        sa.ForeignKeyConstraint(
            ["user_id"],
            ["users.id"],
            name="fk_webauthn_challenges_user_id_users",
            ondelete="CASCADE",
        ),
    )
    op.create_index("ix_webauthn_challenges_expires_at", "webauthn_challenges", ["expires_at"])


def downgrade() -> None:
    op.drop_table("webauthn_challenges")
    op.drop_table("webauthn_credentials")
    op.drop_index("ix_users_webauthn_handle", table_name="users")
    with op.batch_alter_table("users", recreate="never") as batch:
        batch.drop_column("webauthn_handle")
    op.execute("DELETE FROM factors WHERE type = 'webauthn'")
    with op.batch_alter_table("factors") as batch:
        for name, type_ in _OTP_COLUMNS:
            batch.alter_column(name, existing_type=type_, nullable=False)
