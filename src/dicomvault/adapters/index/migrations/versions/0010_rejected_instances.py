"""Instances rejected by IHE IOCM rejection notes (table rejected_instances)

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-06 21:00:00.000000

Why: a rejection note may arrive before the instances it rejects (IOCM: the modality rejects what the archive
has not received yet, or re-sends it later). The archive remembers every rejected SOP Instance UID, so that an
instance arriving after its rejection is hidden at once too (``services.iocm``). Starts empty: notes received
before the upgrade hid what was there.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0010'
down_revision = '0009'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('rejected_instances',
    sa.Column('sop_uid', sa.String(length=64), nullable=False),
    sa.Column('study_uid', sa.String(length=64), nullable=False),
    sa.Column('series_uid', sa.String(length=64), nullable=False),
    sa.Column('code', sa.String(length=16), nullable=False),
    sa.Column('note_uid', sa.String(length=64), nullable=False),
    sa.Column('rejected_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('sop_uid', name=op.f('pk_rejected_instances'))
    )


def downgrade() -> None:
    op.drop_table('rejected_instances')
