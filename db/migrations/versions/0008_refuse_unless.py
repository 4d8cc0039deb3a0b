"""PostgreSQL: ``photoenhance_refuse_unless(ok, reason)``, which aborts the statement it is part of.

The worker's path writes its common group (new keys started, claims completed, one batch) as one
statement in an implicit transaction (``db.statements.WRITE_GROUP``), so that the batch row is
locked for that statement's end and its commit only, with no round trip to the worker between.
What the worker used to check before committing, the statement now checks itself; plain SQL has
no way to abort a statement, so this function raises SQLSTATE ``PE001`` when ``ok`` is not true,
which rolls back everything the statement did. SQLite has no such path and gets nothing.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-05
"""

from __future__ import annotations

from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None

# VOLATILE (the default, said here on purpose): the planner must neither fold a call with constant
# arguments at plan time nor skip one whose result it thinks it knows.
_CREATE = """
CREATE OR REPLACE FUNCTION photoenhance_refuse_unless(ok boolean, reason text) RETURNS boolean
LANGUAGE plpgsql VOLATILE AS $$
BEGIN
    IF ok IS NOT TRUE THEN
        RAISE EXCEPTION USING ERRCODE = 'PE001', MESSAGE = 'refused: ' || reason;
    END IF;
    RETURN true;
END
$$
"""


def upgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute(_CREATE)


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP FUNCTION IF EXISTS photoenhance_refuse_unless(boolean, text)")
