"""A generation counter of the function tables, bumped by triggers on every change.

Each replica caches what refs resolve to and reads this one row per call to know whether
its cache still holds: triggers bump it in the transaction of any insert, update or
delete of a function, version or alias, so that no writer (another replica, an older
release, a hand-written statement) can change what a ref names without it.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-04
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_TABLES = ("functions", "function_versions", "aliases")
_BUMP = "UPDATE functions_generation SET value = value + 1 WHERE id = 1"


def upgrade() -> None:
    op.create_table(
        "functions_generation",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("value", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_functions_generation"),
    )
    op.execute("INSERT INTO functions_generation (id, value) VALUES (1, 0)")
    if op.get_bind().dialect.name == "postgresql":
        # Per statement, not per row: a delete of a function with many versions bumps once.
        op.execute(
            "CREATE FUNCTION functions_generation_bump() RETURNS trigger LANGUAGE plpgsql AS "
            f"$$ BEGIN {_BUMP}; RETURN NULL; END $$"
        )
        for table in _TABLES:
            op.execute(
                f"CREATE TRIGGER {table}_generation AFTER INSERT OR UPDATE OR DELETE "
                f"ON {table} FOR EACH STATEMENT EXECUTE FUNCTION functions_generation_bump()"
            )
        return
    # SQLite has row triggers only, one event each.
    for table in _TABLES:
        for event in ("insert", "update", "delete"):
            op.execute(
                f"CREATE TRIGGER {table}_generation_{event} AFTER {event.upper()} ON {table} "
                f"BEGIN {_BUMP}; END"
            )


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        for table in _TABLES:
            op.execute(f"DROP TRIGGER {table}_generation ON {table}")
        op.execute("DROP FUNCTION functions_generation_bump()")
    else:
        for table in _TABLES:
            for event in ("insert", "update", "delete"):
                op.execute(f"DROP TRIGGER {table}_generation_{event}")
    op.drop_table("functions_generation")
