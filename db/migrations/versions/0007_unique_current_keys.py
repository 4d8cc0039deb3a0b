"""Partial unique indexes: one current version per key, one holder per result key of a batch.

Until now the worker's path read a started key and its result key again under the batch lock
(PostgreSQL), so that two workers starting new keys at once could not both count one key or both
take one result key. The database now refuses the second of such rows itself (the second
transaction waits for the first, then fails with a unique violation and is retried), and the
batch lock is held for fewer statements.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-04
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


# Written out, not imported from db.models: a migration stays what it was when it ran.
_INDEXES = (
    ("uq_images_current_key", ["bucket", "key"], "state IN ('pending', 'processing', 'completed', 'failed')"),
    ("uq_images_result_key", ["batch_id", "output_key"],
     "state IN ('processing', 'completed') AND output_key IS NOT NULL"),
)


def upgrade() -> None:
    _refuse_rows_the_indexes_would_refuse()
    for name, columns, where in _INDEXES:
        op.create_index(name, "images", columns, unique=True,
                        postgresql_where=sa.text(where), sqlite_where=sa.text(where))


def _refuse_rows_the_indexes_would_refuse() -> None:
    """Stop, naming them, at rows that break what the indexes assert (left by a race the old
    check missed): which version stays current is the operator's call, not a migration's."""
    bind = op.get_bind()
    for name, columns, where in _INDEXES:
        listed = ", ".join(columns)
        found = bind.execute(sa.text(
            f"SELECT {listed}, COUNT(*) AS n FROM images WHERE {where} GROUP BY {listed} HAVING COUNT(*) > 1 LIMIT 5"
        )).all()
        if found:
            shown = "; ".join(" ".join(str(v) for v in row[:-1]) + f" ({row[-1]} rows)" for row in found)
            raise RuntimeError(f"{name}: images share ({listed}) where only one may: {shown}. "
                               "Mark all but one of each superseded, then upgrade again.")


def downgrade() -> None:
    op.drop_index("uq_images_result_key", table_name="images")
    op.drop_index("uq_images_current_key", table_name="images")
