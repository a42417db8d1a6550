"""Instances flagged for damaged pixel data (column instances.pixel_problem)

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-06 12:00:00.000000

Why: with the setting ``pixel_length_policy = "accept-and-flag"`` an object whose native pixel data is shorter
than its header describes is stored (the sender gets a warning) instead of refused; the index keeps the reason,
so that frames, rendered images and transcoding of it answer that reason at once instead of failing to decode,
and an administrator can list the flagged instances (``SELECT sop_uid, pixel_problem FROM instances WHERE
pixel_problem IS NOT NULL``). A nullable column: existing rows stay as they are, nodes running the previous
version keep working (they never read it).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0006'
down_revision = '0005'
branch_labels = None
depends_on = None


def upgrade() -> None:
    # A plain ADD COLUMN on both engines (no table rebuild, however many instances there are).
    op.add_column('instances', sa.Column('pixel_problem', sa.String(length=128), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('instances') as batch:
        batch.drop_column('pixel_problem')
