"""The peer registry (table peers)

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-06 23:30:00.000000

Why: remote systems (PACS, modalities, viewers) were known only from the configuration file, so each node of a
cluster had its own list. ``dicomvault peers add`` and ``/admin/peers`` now keep them in the index (issue #12);
configuration-file peers keep working next to them. Starts empty.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0012'
down_revision = '0011'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('peers',
    sa.Column('aet', sa.String(length=16), nullable=False),
    sa.Column('host', sa.String(length=255), nullable=False),
    sa.Column('port', sa.Integer(), nullable=False),
    sa.Column('permissions', sa.String(length=128), nullable=False),
    sa.Column('move_destination', sa.Boolean(), nullable=False),
    sa.Column('hosts', sa.Text(), nullable=False),
    sa.Column('tls', sa.Boolean(), nullable=False),
    sa.Column('dicomweb_url', sa.String(length=1024), nullable=True),
    sa.Column('dicomweb_token', sa.String(length=4096), nullable=True),
    sa.Column('transfer_syntaxes', sa.Text(), nullable=False),
    sa.Column('description', sa.String(length=256), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('aet', name=op.f('pk_peers'))
    )


def downgrade() -> None:
    op.drop_table('peers')
