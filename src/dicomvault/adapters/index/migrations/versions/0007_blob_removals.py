"""Blob removals: claim before delete (table blob_removals)

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-02 10:00:00.000000

Why: a DELETE of a study racing a re-send of the same bytes lost acknowledged objects (issue #9). Deleting a
content-addressed blob now goes through a claim recorded here (``adapters.index.removals``); a store checks the
row of its blob's key in its own transaction. The table starts empty: removals released before the upgrade
were already carried out (or left as orphans for ``verify --repair``), so nothing needs to be filled in.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0007'
down_revision = '0006'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('blob_removals',
    sa.Column('key', sa.String(length=128), nullable=False),
    sa.Column('released_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('claimed_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('claim_id', sa.String(length=32), nullable=True),
    sa.Column('removed_at', sa.DateTime(timezone=True), nullable=True),
    sa.PrimaryKeyConstraint('key', name=op.f('pk_blob_removals'))
    )


def downgrade() -> None:
    op.drop_table('blob_removals')
