"""Web sessions and single-use portal links for the self-service pages.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from sparekey.storage.tables import UtcDateTime

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "web_sessions",
        sa.Column("id_digest", sa.LargeBinary(32), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("subject", sa.String(128), nullable=False),
        sa.Column("csrf_secret", sa.String(64), nullable=False),
        sa.Column("created_at", UtcDateTime, nullable=False),
        sa.Column("last_seen_at", UtcDateTime, nullable=False),
        sa.Column("expires_at", UtcDateTime, nullable=False),
        sa.Column("step_up_token", sa.String(2048)),
        sa.Column("step_up_expires_at", UtcDateTime),
        sa.PrimaryKeyConstraint("id_digest", name="pk_web_sessions"),
    )
    op.create_index("ix_web_sessions_subject", "web_sessions", ["subject"])
    op.create_index("ix_web_sessions_expires_at", "web_sessions", ["expires_at"])
    op.create_table(
        "portal_links",
        sa.Column("token_digest", sa.LargeBinary(32), nullable=False),
        sa.Column("user_id", sa.String(128), nullable=False),
        sa.Column("created_at", UtcDateTime, nullable=False),
        sa.Column("expires_at", UtcDateTime, nullable=False),
        sa.Column("used_at", UtcDateTime),
        sa.PrimaryKeyConstraint("token_digest", name="pk_portal_links"),
        sa.ForeignKeyConstraint(
            ["user_id"], ["users.id"], name="fk_portal_links_user_id_users", ondelete="CASCADE"
        ),
    )
    op.create_index("ix_portal_links_expires_at", "portal_links", ["expires_at"])


def downgrade() -> None:
    op.drop_index("ix_portal_links_expires_at", table_name="portal_links")
    op.drop_table("portal_links")
    op.drop_index("ix_web_sessions_expires_at", table_name="web_sessions")
    op.drop_index("ix_web_sessions_subject", table_name="web_sessions")
    op.drop_table("web_sessions")
