"""Web sessions (table web_sessions)

Revision ID: 0015
Revises: 0014
Create Date: 2026-12-07 02:00:00.000000

Why: the archive's web pages and the viewer authenticate a browser with a session cookie (issue #13: login, share
links); sessions are kept in the index, as SHA-256 hashes of their secrets, so that every node accepts them and a
logout or a revoked share link ends them everywhere. Starts empty.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0015'
down_revision = '0014'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('web_sessions',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True, nullable=False),
    sa.Column('secret_hash', sa.String(length=64), nullable=False),
    sa.Column('principal', sa.String(length=256), nullable=False),
    sa.Column('kind', sa.String(length=16), nullable=False),
    sa.Column('scopes', sa.String(length=256), nullable=False),
    sa.Column('csrf', sa.String(length=64), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('expires_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('revoked_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('token_id', sa.Integer(), nullable=True),
    sa.Column('share_id', sa.Integer(), nullable=True),
    sa.Column('study_uid', sa.String(length=64), nullable=True),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_web_sessions')),
    sa.UniqueConstraint('secret_hash', name=op.f('uq_web_sessions_secret_hash'))
    )
    op.create_index('ix_web_sessions_share', 'web_sessions', ['share_id'], unique=False)
    op.create_index('ix_web_sessions_expires', 'web_sessions', ['expires_at'], unique=False)


def downgrade() -> None:
    op.drop_index('ix_web_sessions_expires', table_name='web_sessions')
    op.drop_index('ix_web_sessions_share', table_name='web_sessions')
    op.drop_table('web_sessions')
