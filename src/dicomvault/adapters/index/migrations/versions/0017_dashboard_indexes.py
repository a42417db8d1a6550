"""Covering indexes for the storage dashboard (instances by time of receipt, by source and series)

Revision ID: 0017
Revises: 0016
Create Date: 2026-12-07 03:00:00.000000

Why: the storage dashboard and ``/metrics`` (issue #13) count instances and bytes per day and minute of receipt,
per source and per modality. Without an index each of these reads every instance row — with its metadata, about
1 KB or more — (0.7-1 s per figure on 1,000,000 instances with SQLite). ``(stored_at, blob_size)`` answers the
time ranges from the index alone, in time order; ``(source, series_fk, blob_size)`` answers the per-source and
per-series sums as one ordered index scan (no sort: SQLite aggregates in index order), about 0.1 s for 1,000,000
instances. Both grow at their end as instances arrive (time; series ids of each source increase), so ingest pays
two appends, not random writes. Building them reads the instances table once (seconds per million rows; on
PostgreSQL writes to the table wait meanwhile).
"""

from __future__ import annotations

from alembic import op

revision = '0017'
down_revision = '0016'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index('ix_instances_stored_at_size', 'instances', ['stored_at', 'blob_size'], unique=False)
    op.create_index('ix_instances_source_series_size', 'instances', ['source', 'series_fk', 'blob_size'],
                    unique=False)


def downgrade() -> None:
    op.drop_index('ix_instances_source_series_size', table_name='instances')
    op.drop_index('ix_instances_stored_at_size', table_name='instances')
