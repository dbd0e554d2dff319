"""Files: what each execution got and left in out/, and the bytes of what it left.

Executions recorded before this had no files ("[]").

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-04
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from toolvault.server.db.tables import UTCDateTime

revision: str = "0011"
down_revision: str | None = "0010"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # A plain ADD COLUMN, never a batch copy (see 0009).
    op.add_column("executions", sa.Column("files", sa.Text(), server_default="[]", nullable=False))
    op.create_table(
        "execution_outputs",
        sa.Column("execution_id", sa.Uuid(), nullable=False),
        sa.Column("name", sa.String(length=255), nullable=False),
        sa.Column("content", sa.LargeBinary(), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("execution_id", "name", name="pk_execution_outputs"),
    )
    op.create_index("ix_execution_outputs_created_at", "execution_outputs", ["created_at"])


def downgrade() -> None:
    op.drop_table("execution_outputs")
    with op.batch_alter_table("executions") as batch:
        batch.drop_column("files")
