"""Lossless compression at rest: recipes of compressed blobs and the reasons objects were left uncompressed

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-06 23:00:00.000000

Why: the compression policy (issue #11 item 4, ``services.compression``) replaces a native object's blob with a
losslessly compressed Part 10 object; ``blob_originals`` keeps, per compressed blob, what rebuilds the object as
received byte for byte and its SHA-256; ``compression_skips`` the reason an object was left as it is. Both start
empty: nothing was compressed before.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0011'
down_revision = '0010'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('blob_originals',
    sa.Column('key', sa.String(length=128), nullable=False),
    sa.Column('original_sha256', sa.String(length=64), nullable=False),
    sa.Column('original_size', sa.BigInteger(), nullable=False),
    sa.Column('original_syntax', sa.String(length=64), nullable=False),
    sa.Column('pixel_length', sa.BigInteger(), nullable=False),
    sa.Column('layout', sa.Text(), nullable=False),
    sa.Column('head', sa.LargeBinary(), nullable=False),
    sa.Column('tail', sa.LargeBinary(), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('key', name=op.f('pk_blob_originals'))
    )
    op.create_table('compression_skips',
    sa.Column('key', sa.String(length=128), nullable=False),
    sa.Column('reason', sa.String(length=256), nullable=False),
    sa.Column('recorded_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('key', name=op.f('pk_compression_skips'))
    )


def downgrade() -> None:
    op.drop_table('compression_skips')
    op.drop_table('blob_originals')
