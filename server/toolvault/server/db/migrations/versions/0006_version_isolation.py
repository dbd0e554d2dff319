"""The isolation of each function version: warm workers or a fresh process per call.

Every existing version gets ``warm``, the default, which its sha256 already stands for
(the canonical content leaves the default out).

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-04
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("function_versions") as batch:
        batch.add_column(
            sa.Column("isolation", sa.String(length=8), server_default="warm", nullable=False)
        )


def downgrade() -> None:
    with op.batch_alter_table("function_versions") as batch:
        batch.drop_column("isolation")
