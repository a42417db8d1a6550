"""Storage tiers: verified copies of blobs (table blob_copies) and the last read of a study (studies.last_read_at)

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-10 10:00:00.000000

Why: an archive may keep its blobs on several named stores (issue #11); the index records which stores hold a
verified copy of each blob (``adapters.index.tiers``), so that a tier move can refuse to drop the last copy and
reads know where to look. Every blob referenced before the upgrade lives on the only store there was, the one
called ``default``: one row (key, 'default', NULL) per distinct blob key of instances and prior versions, in one
INSERT … SELECT (a million instances take seconds, not a row-by-row loop). ``verified_at`` NULL says the copy was
never verified by a tier process; fixity fills it in later. ``studies.last_read_at`` (nullable, a plain ADD COLUMN
on both engines) feeds the ``not_read_days`` lifecycle condition; NULL means never read.

Nodes running the previous version keep working during a rolling upgrade: they never read the new table or
column (their stores record no copies; ``iter_uncopied_blobs`` finds those blobs afterwards).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0008'
down_revision = '0007'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('blob_copies',
    sa.Column('key', sa.String(length=128), nullable=False),
    sa.Column('store', sa.String(length=32), nullable=False),
    sa.Column('verified_at', sa.DateTime(timezone=True), nullable=True),
    sa.PrimaryKeyConstraint('key', 'store', name=op.f('pk_blob_copies'))
    )
    op.create_index('ix_blob_copies_store', 'blob_copies', ['store', 'key'], unique=False)
    # 'default' is domain.tiers.DEFAULT_STORE, spelled out: a migration must not change when the code does.
    # verified_at is left out of the column list (NULL): PostgreSQL would type a bare NULL of a UNION as text.
    op.execute(sa.text(
        "INSERT INTO blob_copies (key, store) "
        "SELECT k, 'default' FROM (SELECT blob_key AS k FROM instances "
        "UNION SELECT blob_key FROM instance_versions) AS referenced"
    ))
    op.add_column('studies', sa.Column('last_read_at', sa.DateTime(timezone=True), nullable=True))


def downgrade() -> None:
    # A plain DROP COLUMN, not batch_alter_table: on SQLite a batch rebuild drops and re-creates ``studies``, and
    # with foreign keys on that DROP TABLE cascades into series and study_qido. SQLite >= 3.35 drops the column
    # in place.
    op.drop_column('studies', 'last_read_at')
    op.drop_index('ix_blob_copies_store', table_name='blob_copies')
    op.drop_table('blob_copies')
