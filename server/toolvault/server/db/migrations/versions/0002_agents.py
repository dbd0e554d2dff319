"""Agents with revisions and capabilities; tool-call context on executions.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-22
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from toolvault.server.db.tables import UTCDateTime

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "agents",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("current_revision", sa.Integer(), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("updated_at", UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_agents"),
        sa.UniqueConstraint("name", name="uq_agents_name"),
    )
    op.create_table(
        "agent_revisions",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("agent_id", sa.Integer(), nullable=False),
        sa.Column("revision", sa.Integer(), nullable=False),
        sa.Column("spec_json", sa.Text(), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.ForeignKeyConstraint(
            ["agent_id"],
            ["agents.id"],
            name="fk_agent_revisions_agent_id_agents",
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name="pk_agent_revisions"),
        sa.UniqueConstraint("agent_id", "revision", name="uq_agent_revisions_agent_id_revision"),
    )
    op.create_table(
        "agent_capabilities",
        sa.Column("agent_id", sa.Integer(), nullable=False),
        sa.Column("capability", sa.String(length=64), nullable=False),
        sa.ForeignKeyConstraint(
            ["agent_id"],
            ["agents.id"],
            name="fk_agent_capabilities_agent_id_agents",
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("agent_id", "capability", name="pk_agent_capabilities"),
    )
    op.create_index("ix_agent_capabilities_capability", "agent_capabilities", ["capability"])
    with op.batch_alter_table("executions") as batch:
        # Room for OUTPUT_SCHEMA_MISMATCH.
        batch.alter_column("status", existing_type=sa.String(length=16), type_=sa.String(length=32))
        batch.add_column(
            sa.Column("agent", sa.String(length=64), server_default="", nullable=False)
        )
        batch.add_column(
            sa.Column("agent_revision", sa.Integer(), server_default="0", nullable=False)
        )
        batch.add_column(
            sa.Column("conversation_id", sa.String(length=128), server_default="", nullable=False)
        )
        batch.add_column(sa.Column("chain_depth", sa.Integer(), server_default="0", nullable=False))
        batch.create_index("ix_executions_agent", ["agent", "start_time", "id"])
        batch.create_index("ix_executions_conversation_id", ["conversation_id", "start_time", "id"])


def downgrade() -> None:
    with op.batch_alter_table("executions") as batch:
        batch.drop_index("ix_executions_conversation_id")
        batch.drop_index("ix_executions_agent")
        batch.drop_column("chain_depth")
        batch.drop_column("conversation_id")
        batch.drop_column("agent_revision")
        batch.drop_column("agent")
        batch.alter_column("status", existing_type=sa.String(length=32), type_=sa.String(length=16))
    op.drop_table("agent_capabilities")
    op.drop_table("agent_revisions")
    op.drop_table("agents")
