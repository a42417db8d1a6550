"""Share links (tables share_links, share_uses)

Revision ID: 0016
Revises: 0015
Create Date: 2026-12-07 03:00:00.000000

Why: a link opens one study to whoever holds it (issue #13 item 6); links live in the index, as SHA-256 hashes of
their secrets (and an scrypt hash of an optional password), so every node accepts them and a revocation holds
everywhere; every use is recorded in share_uses. Starts empty.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0016'
down_revision = '0015'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('share_links',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True, nullable=False),
    sa.Column('secret_hash', sa.String(length=64), nullable=False),
    sa.Column('study_uid', sa.String(length=64), nullable=False),
    sa.Column('created_by', sa.String(length=256), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('expires_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('revoked_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('password_hash', sa.String(length=256), nullable=True),
    sa.Column('failed_attempts', sa.Integer(), nullable=False),
    sa.Column('locked_until', sa.DateTime(timezone=True), nullable=True),
    sa.Column('uses', sa.Integer(), nullable=False),
    sa.Column('last_used_at', sa.DateTime(timezone=True), nullable=True),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_share_links')),
    sa.UniqueConstraint('secret_hash', name=op.f('uq_share_links_secret_hash'))
    )
    op.create_index('ix_share_links_study', 'share_links', ['study_uid'], unique=False)
    op.create_table('share_uses',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True, nullable=False),
    sa.Column('share_id', sa.Integer(), nullable=False),
    sa.Column('at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('what', sa.String(length=16), nullable=False),
    sa.Column('client', sa.String(length=64), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_share_uses'))
    )
    op.create_index('ix_share_uses_share', 'share_uses', ['share_id', 'at'], unique=False)


def downgrade() -> None:
    op.drop_index('ix_share_uses_share', table_name='share_uses')
    op.drop_table('share_uses')
    op.drop_index('ix_share_links_study', table_name='share_links')
    op.drop_table('share_links')
