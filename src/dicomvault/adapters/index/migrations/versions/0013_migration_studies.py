"""Migration state per (peer, study) (table migration_studies)

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-07 10:00:00.000000

Why: ``dicomvault migrate`` (issue #12 item 5) pulls a legacy PACS's studies one by one; each study's state
(queued, done, skipped, failed, with the last error) is kept in the index so that a migration killed midway
continues where it stopped and a verified study is never fetched again. Starts empty.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0013'
down_revision = '0012'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('migration_studies',
    sa.Column('peer', sa.String(length=16), nullable=False),
    sa.Column('study_uid', sa.String(length=64), nullable=False),
    sa.Column('state', sa.String(length=16), nullable=False),
    sa.Column('study_date', sa.String(length=8), nullable=False),
    sa.Column('expected', sa.Integer(), nullable=True),
    sa.Column('received', sa.Integer(), nullable=False),
    sa.Column('attempts', sa.Integer(), nullable=False),
    sa.Column('bytes', sa.BigInteger(), nullable=False),
    sa.Column('last_error', sa.String(length=1024), nullable=True),
    sa.Column('queued_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('peer', 'study_uid', name=op.f('pk_migration_studies'))
    )
    op.create_index('ix_migration_studies_peer_state', 'migration_studies', ['peer', 'state'], unique=False)


def downgrade() -> None:
    op.drop_index('ix_migration_studies_peer_state', table_name='migration_studies')
    op.drop_table('migration_studies')
