"""Deterministic versions and per-function concurrency; cached runs; idempotency keys.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-23
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from toolvault.server.db.tables import UTCDateTime

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("function_versions") as batch:
        batch.add_column(
            sa.Column("max_concurrency", sa.Integer(), server_default="0", nullable=False)
        )
        batch.add_column(
            sa.Column("deterministic", sa.Boolean(), server_default=sa.false(), nullable=False)
        )
    with op.batch_alter_table("executions") as batch:
        batch.add_column(
            sa.Column("cached", sa.Boolean(), server_default=sa.false(), nullable=False)
        )
        batch.add_column(sa.Column("cached_from", sa.Uuid(), nullable=True))
    op.create_table(
        "idempotency_keys",
        sa.Column("key", sa.String(length=128), nullable=False),
        sa.Column("fingerprint", sa.String(length=64), nullable=False),
        sa.Column("execution_id", sa.Uuid(), nullable=True),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("key", name="pk_idempotency_keys"),
    )
    op.create_index("ix_idempotency_keys_created_at", "idempotency_keys", ["created_at"])


def downgrade() -> None:
    op.drop_table("idempotency_keys")
    with op.batch_alter_table("executions") as batch:
        batch.drop_column("cached_from")
        batch.drop_column("cached")
    with op.batch_alter_table("function_versions") as batch:
        batch.drop_column("deterministic")
        batch.drop_column("max_concurrency")
