"""Index images by (batch_id, name): status pages read a batch's images in name order.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-03
"""

from __future__ import annotations

from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Without it, counting a batch's declared files that have no upload compared every declared
    # file with every image of the batch (10^6 row visits for 1,000 images, per status request).
    op.create_index("ix_images_batch_name", "images", ["batch_id", "name"])


def downgrade() -> None:
    op.drop_index("ix_images_batch_name", table_name="images")
