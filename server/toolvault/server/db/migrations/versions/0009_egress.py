"""Egress: the hosts each version may reach, and the requests each execution made.

Versions stored before this reach nothing ("[]"); executions recorded before this made
no request.

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-04
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # A plain ADD COLUMN, never a batch copy: on SQLite that would drop the triggers on
    # function_versions (migration 0007).
    for table in ("function_versions", "executions"):
        op.add_column(table, sa.Column("egress", sa.Text(), server_default="[]", nullable=False))


def downgrade() -> None:
    for table in ("function_versions", "executions"):
        with op.batch_alter_table(table) as batch:
            batch.drop_column("egress")
