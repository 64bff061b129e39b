"""Email and SMS factors: a changed destination is unconfirmed until a code sent there is confirmed.

Revision ID: 0012
Revises: 0011
Create Date: 2027-01-12
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("factors", recreate="never") as batch:
        batch.add_column(
            sa.Column(
                "destination_unconfirmed",
                sa.Boolean(),
                nullable=False,
                server_default=sa.false(),
            )
        )


def downgrade() -> None:
    with op.batch_alter_table("factors", recreate="never") as batch:
        batch.drop_column("destination_unconfirmed")
