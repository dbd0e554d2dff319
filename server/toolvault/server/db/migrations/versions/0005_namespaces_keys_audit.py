"""Namespaces on functions, agents and executions; API keys; the audit log.

Names grow room for a ``namespace/`` prefix; every existing object is in ``default``.
Idempotency keys are stored with the namespace they belong to; existing ones lapse.

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-22
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from toolvault.server.db.tables import UTCDateTime

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_NAMESPACED = ("functions", "agents")


def upgrade() -> None:
    for table in _NAMESPACED:
        with op.batch_alter_table(table) as batch:
            batch.alter_column("name", existing_type=sa.String(64), type_=sa.String(128))
            batch.add_column(
                sa.Column("namespace", sa.String(32), server_default="default", nullable=False)
            )
            batch.create_index(f"ix_{table}_namespace", ["namespace", "name"])
    with op.batch_alter_table("executions") as batch:
        batch.alter_column("function_name", existing_type=sa.String(64), type_=sa.String(128))
        batch.alter_column(
            "agent", existing_type=sa.String(64), type_=sa.String(128), existing_server_default=""
        )
        batch.add_column(
            sa.Column("namespace", sa.String(32), server_default="default", nullable=False)
        )
        batch.create_index("ix_executions_namespace", ["namespace", "start_time", "id"])
    with op.batch_alter_table("idempotency_keys") as batch:
        batch.alter_column("key", existing_type=sa.String(128), type_=sa.String(192))
    op.create_table(
        "api_keys",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("prefix", sa.String(32), nullable=False),
        sa.Column("salt", sa.String(32), nullable=False),
        sa.Column("digest", sa.String(64), nullable=False),
        sa.Column("role", sa.String(16), nullable=False),
        sa.Column("namespaces", sa.Text(), nullable=True),
        sa.Column("agent", sa.String(128), server_default="", nullable=False),
        sa.Column("description", sa.String(256), server_default="", nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("created_by", sa.String(64), nullable=False),
        sa.Column("revoked_at", UTCDateTime(), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_api_keys"),
        sa.UniqueConstraint("prefix", name="uq_api_keys_prefix"),
    )
    op.create_table(
        "audit_events",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("time", UTCDateTime(), nullable=False),
        sa.Column("actor", sa.String(64), nullable=False),
        sa.Column("peer", sa.String(256), nullable=False),
        sa.Column("action", sa.String(32), nullable=False),
        sa.Column("namespace", sa.String(32), nullable=False),
        sa.Column("target", sa.String(128), nullable=False),
        sa.Column("details", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_audit_events"),
    )
    op.create_index("ix_audit_events_time", "audit_events", ["time", "id"])
    op.create_index("ix_audit_events_namespace", "audit_events", ["namespace", "time", "id"])


def downgrade() -> None:
    op.drop_table("audit_events")
    op.drop_table("api_keys")
    with op.batch_alter_table("idempotency_keys") as batch:
        batch.alter_column("key", existing_type=sa.String(192), type_=sa.String(128))
    with op.batch_alter_table("executions") as batch:
        batch.drop_index("ix_executions_namespace")
        batch.drop_column("namespace")
        batch.alter_column(
            "agent", existing_type=sa.String(128), type_=sa.String(64), existing_server_default=""
        )
        batch.alter_column("function_name", existing_type=sa.String(128), type_=sa.String(64))
    for table in _NAMESPACED:
        with op.batch_alter_table(table) as batch:
            batch.drop_index(f"ix_{table}_namespace")
            batch.drop_column("namespace")
            batch.alter_column("name", existing_type=sa.String(128), type_=sa.String(64))
