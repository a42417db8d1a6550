"""api token expiry (api_tokens.expires_at)

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-02 10:00:00.000000

Why: API tokens never expired; a token may now carry an expiry time (``dicomvault token create NAME --expires-in
90d``), after which requests bearing it are refused with 401. Existing tokens keep no expiry (NULL). A nullable
column with no default: no table rewrite on PostgreSQL, a plain ALTER TABLE ADD COLUMN on SQLite.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0005'
down_revision = '0004'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('api_tokens', schema=None) as batch_op:
        batch_op.add_column(sa.Column('expires_at', sa.DateTime(timezone=True), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('api_tokens', schema=None) as batch_op:
        batch_op.drop_column('expires_at')
