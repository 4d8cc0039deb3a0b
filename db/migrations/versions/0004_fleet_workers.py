"""Workers: each processor worker's row (levels, device, engine version, speeds, heartbeat); the
level each image was routed to.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-03
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from db.models import UTCDateTime

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "workers",
        sa.Column("id", sa.String(128), primary_key=True),
        sa.Column("levels", sa.JSON(), nullable=False),
        sa.Column("device", sa.String(32), nullable=False),
        sa.Column("device_name", sa.String(255), nullable=False),
        sa.Column("engine_version", sa.String(64), nullable=False),
        sa.Column("speeds", sa.JSON(), nullable=False),
        sa.Column("started_at", UTCDateTime(), nullable=False),
        sa.Column("last_beat_at", UTCDateTime(), nullable=False),
    )
    with op.batch_alter_table("images") as images:
        images.add_column(sa.Column("level", sa.String(16), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("images") as images:
        images.drop_column("level")
    op.drop_table("workers")
