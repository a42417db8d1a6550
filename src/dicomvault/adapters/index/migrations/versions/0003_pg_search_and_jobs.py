"""PostgreSQL search indexes (pg_trgm, text_pattern_ops) and the jobs table

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-28 16:00:00.000000

Why: DICOM wildcard matching becomes SQL LIKE. A prefix pattern (``DOE*``) can use a btree index only with
``text_pattern_ops`` unless the database collation is C; an infix or suffix pattern (``*SMITH*``, ``*123``)
needs a trigram GIN index. SQLite has neither and does not need them at its scale; the guard keeps one
history for both dialects. The jobs table (durable job queue, ``adapters.index.job_queue``) is created on both.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0003'
down_revision = '0002'
branch_labels = None
depends_on = None

#: (table, column) pairs searched with infix/suffix wildcards.
TRIGRAM = [
    ("patients", "patient_name_n"),
    ("patients", "patient_id"),
    ("studies", "study_description"),
    ("studies", "accession_number"),
    ("studies", "referring_physician_name_n"),
    ("series", "series_description"),
]
#: (table, column) pairs searched with prefix wildcards.
PATTERN = [
    ("patients", "patient_id"),
    ("patients", "patient_name_n"),
    ("studies", "accession_number"),
]


def _is_postgresql() -> bool:
    return bool(op.get_bind().dialect.name == "postgresql")


def upgrade() -> None:
    op.create_table('jobs',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True, nullable=False),
    sa.Column('kind', sa.String(length=64), nullable=False),
    sa.Column('payload', sa.Text(), nullable=False),
    sa.Column('state', sa.String(length=16), nullable=False),
    sa.Column('attempts', sa.Integer(), nullable=False),
    sa.Column('max_attempts', sa.Integer(), nullable=False),
    sa.Column('run_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('lease_until', sa.DateTime(timezone=True), nullable=True),
    sa.Column('worker_id', sa.String(length=128), nullable=True),
    sa.Column('last_error', sa.Text(), nullable=True),
    sa.Column('dedupe_key', sa.String(length=200), nullable=True),
    sa.Column('result', sa.Text(), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('finished_at', sa.DateTime(timezone=True), nullable=True),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_jobs'))
    )
    with op.batch_alter_table('jobs', schema=None) as batch_op:
        batch_op.create_index('ix_jobs_state_run_at', ['state', 'run_at'], unique=False)
        batch_op.create_index('ix_jobs_state_lease_until', ['state', 'lease_until'], unique=False)
    active = sa.text("state IN ('queued', 'running')")
    op.create_index('ux_jobs_dedupe_key_active', 'jobs', ['dedupe_key'], unique=True,
                    postgresql_where=active, sqlite_where=active)

    if not _is_postgresql():
        return
    op.execute("CREATE EXTENSION IF NOT EXISTS pg_trgm")
    for table, column in TRIGRAM:
        op.execute(f"CREATE INDEX IF NOT EXISTS ix_{table}_{column}_trgm ON {table} USING gin ({column} gin_trgm_ops)")
    for table, column in PATTERN:
        op.execute(f"CREATE INDEX IF NOT EXISTS ix_{table}_{column}_pattern ON {table} ({column} text_pattern_ops)")


def downgrade() -> None:
    if _is_postgresql():
        for table, column in PATTERN:
            op.execute(f"DROP INDEX IF EXISTS ix_{table}_{column}_pattern")
        for table, column in TRIGRAM:
            op.execute(f"DROP INDEX IF EXISTS ix_{table}_{column}_trgm")
        # pg_trgm stays: other objects of the database may use it.
    op.drop_index('ux_jobs_dedupe_key_active', table_name='jobs')
    with op.batch_alter_table('jobs', schema=None) as batch_op:
        batch_op.drop_index('ix_jobs_state_lease_until')
        batch_op.drop_index('ix_jobs_state_run_at')
    op.drop_table('jobs')
