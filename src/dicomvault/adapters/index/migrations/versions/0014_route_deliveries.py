"""Routing deliveries and stable-study waits (tables route_deliveries, route_stable)

Revision ID: 0014
Revises: 0013
Create Date: 2026-12-07 10:00:00.000000

Why: routing (issue #12 item 3) forwards stored instances to peers as durable jobs and must never send an
instance twice to a destination that already has it; one row per (destination, SOP Instance UID) records what
became of it (queued, sent, confirmed, failed, with attempts and the last error). Routes on stable studies wait in
route_stable until no new instance arrived for their stable_seconds. Both start empty.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0014'
down_revision = '0013'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('route_deliveries',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True, nullable=False),
    sa.Column('destination', sa.String(length=16), nullable=False),
    sa.Column('sop_uid', sa.String(length=64), nullable=False),
    sa.Column('study_uid', sa.String(length=64), nullable=False),
    sa.Column('sop_class_uid', sa.String(length=64), nullable=False),
    sa.Column('route', sa.String(length=64), nullable=False),
    sa.Column('via', sa.String(length=16), nullable=False),
    sa.Column('transfer_syntax', sa.String(length=64), nullable=True),
    sa.Column('commitment', sa.Boolean(), nullable=False),
    sa.Column('state', sa.String(length=16), nullable=False),
    sa.Column('attempts', sa.Integer(), nullable=False),
    sa.Column('last_error', sa.String(length=1024), nullable=True),
    sa.Column('claimed_by', sa.String(length=64), nullable=True),
    sa.Column('commitment_uid', sa.String(length=64), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('sent_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('confirmed_at', sa.DateTime(timezone=True), nullable=True),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_route_deliveries')),
    sa.UniqueConstraint('destination', 'sop_uid', name='uq_route_deliveries_destination_sop_uid')
    )
    op.create_index('ix_route_deliveries_destination_study', 'route_deliveries',
                    ['destination', 'study_uid', 'state'], unique=False)
    op.create_index('ix_route_deliveries_state_updated', 'route_deliveries', ['state', 'updated_at'], unique=False)
    op.create_index('ix_route_deliveries_commitment_uid', 'route_deliveries', ['commitment_uid'], unique=False)
    op.create_table('route_stable',
    sa.Column('destination', sa.String(length=16), nullable=False),
    sa.Column('study_uid', sa.String(length=64), nullable=False),
    sa.Column('due_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('destination', 'study_uid', name=op.f('pk_route_stable'))
    )
    op.create_index('ix_route_stable_due_at', 'route_stable', ['due_at'], unique=False)


def downgrade() -> None:
    op.drop_index('ix_route_stable_due_at', table_name='route_stable')
    op.drop_table('route_stable')
    op.drop_index('ix_route_deliveries_commitment_uid', table_name='route_deliveries')
    op.drop_index('ix_route_deliveries_state_updated', table_name='route_deliveries')
    op.drop_index('ix_route_deliveries_destination_study', table_name='route_deliveries')
    op.drop_table('route_deliveries')
