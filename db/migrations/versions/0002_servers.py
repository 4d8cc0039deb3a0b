"""Server-to-server clients: quota counters, who created a batch, cancelled images.

Revision ID: 0002_servers
Revises: 0001
Create Date: 2026-12-03
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002_servers"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "rate_counters",
        sa.Column("subject", sa.String(80), primary_key=True),
        sa.Column("counter", sa.String(32), primary_key=True),
        sa.Column("window_start", sa.BigInteger(), primary_key=True),
        sa.Column("amount", sa.BigInteger(), nullable=False),
    )
    with op.batch_alter_table("batches") as batch:
        batch.add_column(sa.Column("quota_subject", sa.String(80), nullable=True))
        batch.add_column(sa.Column("cancelled", sa.Integer(), nullable=False, server_default="0"))
    op.create_index("ix_batches_quota_subject_state", "batches", ["quota_subject", "state"])


def downgrade() -> None:
    op.drop_index("ix_batches_quota_subject_state", table_name="batches")
    with op.batch_alter_table("batches") as batch:
        batch.drop_column("cancelled")
        batch.drop_column("quota_subject")
    op.drop_table("rate_counters")
