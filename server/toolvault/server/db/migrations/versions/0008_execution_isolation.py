"""How each execution's sandbox ran: in a warm worker or in a process of its own.

Executions recorded before this say nothing (""), as do cached ones, for which no
sandbox ran.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-04
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("executions") as batch:
        batch.add_column(
            sa.Column("isolation", sa.String(length=8), server_default="", nullable=False)
        )


def downgrade() -> None:
    with op.batch_alter_table("executions") as batch:
        batch.drop_column("isolation")
