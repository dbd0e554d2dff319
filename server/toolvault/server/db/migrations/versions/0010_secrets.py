"""Secrets of namespaces, stored encrypted; the secret names each version declares.

Every existing version declares none (``[]``), which its sha256 already stands for
(the canonical content leaves an empty list out).

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-04
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from toolvault.server.db.tables import UTCDateTime

revision: str = "0010"
down_revision: str | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "secrets",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(128), nullable=False),
        sa.Column("namespace", sa.String(32), nullable=False),
        sa.Column("ciphertext", sa.Text(), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("updated_at", UTCDateTime(), nullable=False),
        sa.Column("updated_by", sa.String(64), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_secrets"),
        sa.UniqueConstraint("name", name="uq_secrets_name"),
    )
    op.create_index("ix_secrets_namespace", "secrets", ["namespace", "name"])
    with op.batch_alter_table("function_versions") as batch:
        batch.add_column(sa.Column("secrets", sa.Text(), server_default="[]", nullable=False))


def downgrade() -> None:
    with op.batch_alter_table("function_versions") as batch:
        batch.drop_column("secrets")
    op.drop_index("ix_secrets_namespace", table_name="secrets")
    op.drop_table("secrets")
