"""Soft delete, restore and purge (table trash) and the record of every deletion (table deletion_log)

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-06 20:30:00.000000

Why: retention rules and a DELETE with a grace period (issue #11 item 6) keep the bytes of a deleted study for a
while, so that it can be restored, and every deletion is recorded with who or which rule asked for it
(``adapters.index.trash``, ``services.trash``). Both tables start empty: deletions before the upgrade were
immediate and were not recorded.

Nodes running the previous version keep working during a rolling upgrade as long as nothing is soft-deleted:
they do not know that a key in ``trash`` is referenced, so an old node's ``verify --repair`` would take a trashed
blob for an orphan. Upgrade every node before setting ``delete_grace_days`` or adding a delete rule.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0009'
down_revision = '0008'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('trash',
    sa.Column('key', sa.String(length=128), nullable=False),
    sa.Column('sop_uid', sa.String(length=64), nullable=False),
    sa.Column('study_uid', sa.String(length=64), nullable=False),
    sa.Column('series_uid', sa.String(length=64), nullable=False),
    sa.Column('blob_size', sa.BigInteger(), nullable=False),
    sa.Column('blob_sha256', sa.String(length=64), nullable=False),
    sa.Column('superseded', sa.Boolean(), nullable=False),
    sa.Column('deleted_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('purge_after', sa.DateTime(timezone=True), nullable=False),
    sa.Column('reason', sa.String(length=256), nullable=True),
    sa.Column('deleted_by', sa.String(length=256), nullable=True),
    sa.PrimaryKeyConstraint('key', name=op.f('pk_trash'))
    )
    op.create_index('ix_trash_purge_after', 'trash', ['purge_after'], unique=False)
    op.create_index('ix_trash_study_uid', 'trash', ['study_uid'], unique=False)
    op.create_table('deletion_log',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True, nullable=False),
    sa.Column('at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('study_uid', sa.String(length=64), nullable=False),
    sa.Column('series_uid', sa.String(length=64), nullable=True),
    sa.Column('sop_uid', sa.String(length=64), nullable=True),
    sa.Column('instances', sa.Integer(), nullable=False),
    sa.Column('reason', sa.String(length=256), nullable=True),
    sa.Column('by', sa.String(length=256), nullable=True),
    sa.Column('action', sa.String(length=16), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_deletion_log'))
    )
    op.create_index('ix_deletion_log_study_uid', 'deletion_log', ['study_uid'], unique=False)
    op.create_index('ix_deletion_log_at', 'deletion_log', ['at'], unique=False)


def downgrade() -> None:
    op.drop_index('ix_deletion_log_at', table_name='deletion_log')
    op.drop_index('ix_deletion_log_study_uid', table_name='deletion_log')
    op.drop_table('deletion_log')
    op.drop_index('ix_trash_purge_after', table_name='trash')
    op.drop_index('ix_trash_study_uid', table_name='trash')
    op.drop_table('trash')
