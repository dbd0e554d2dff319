"""Functions, versions, aliases and executions.

Revision ID: 0001
Revises:
Create Date: 2026-11-22
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from toolvault.server.db.tables import UTCDateTime

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "functions",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("latest_version", sa.Integer(), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("updated_at", UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_functions"),
        sa.UniqueConstraint("name", name="uq_functions_name"),
    )
    op.create_table(
        "function_versions",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("function_id", sa.Integer(), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("sha256", sa.String(length=64), nullable=False),
        sa.Column("source", sa.Text(), nullable=False),
        sa.Column("entrypoint", sa.String(length=128), nullable=False),
        sa.Column("description", sa.Text(), nullable=False),
        sa.Column("input_schema", sa.Text(), nullable=True),
        sa.Column("output_schema", sa.Text(), nullable=True),
        sa.Column("timeout_ms", sa.Integer(), nullable=False),
        sa.Column("memory_mb", sa.Integer(), nullable=False),
        sa.Column("max_output_bytes", sa.Integer(), nullable=False),
        sa.Column("allowed_imports", sa.Text(), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.ForeignKeyConstraint(
            ["function_id"],
            ["functions.id"],
            name="fk_function_versions_function_id_functions",
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name="pk_function_versions"),
        sa.UniqueConstraint(
            "function_id", "sha256", name="uq_function_versions_function_id_sha256"
        ),
        sa.UniqueConstraint(
            "function_id", "version", name="uq_function_versions_function_id_version"
        ),
    )
    op.create_table(
        "aliases",
        sa.Column("function_id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("updated_at", UTCDateTime(), nullable=False),
        sa.ForeignKeyConstraint(
            ["function_id", "version"],
            ["function_versions.function_id", "function_versions.version"],
            name="fk_aliases_function_id_function_versions",
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["function_id"],
            ["functions.id"],
            name="fk_aliases_function_id_functions",
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("function_id", "name", name="pk_aliases"),
    )
    op.create_table(
        "executions",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("function_name", sa.String(length=64), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("sha256", sa.String(length=64), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("args_json", sa.Text(), nullable=False),
        sa.Column("args_truncated", sa.Boolean(), nullable=False),
        sa.Column("result_json", sa.Text(), nullable=False),
        sa.Column("result_truncated", sa.Boolean(), nullable=False),
        sa.Column("stdout_tail", sa.Text(), nullable=False),
        sa.Column("stderr_tail", sa.Text(), nullable=False),
        sa.Column("error_type", sa.String(length=200), nullable=False),
        sa.Column("error_message", sa.Text(), nullable=False),
        sa.Column("traceback", sa.Text(), nullable=False),
        sa.Column("start_time", UTCDateTime(), nullable=False),
        sa.Column("duration_ms", sa.Float(), nullable=False),
        sa.Column("cpu_time_ms", sa.Float(), nullable=False),
        sa.Column("peak_memory_bytes", sa.BigInteger(), nullable=False),
        sa.Column("caller", sa.String(length=256), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_executions"),
    )
    op.create_index("ix_executions_start_time", "executions", ["start_time", "id"])
    op.create_index(
        "ix_executions_function_name", "executions", ["function_name", "start_time", "id"]
    )
    op.create_index("ix_executions_status", "executions", ["status", "start_time", "id"])


def downgrade() -> None:
    op.drop_table("executions")
    op.drop_table("aliases")
    op.drop_table("function_versions")
    op.drop_table("functions")
