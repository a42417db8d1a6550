"""Cached default QIDO-RS answer per study (table study_qido)

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-29 02:30:00.000000

Why: a study search returning hundreds of studies spent most of its time building the same DICOM JSON objects
again for every request (~25 µs per row). The index now keeps each study's default answer pre-serialized and
QIDO-RS concatenates them. They live in a table of their own, one row per study, so that the studies table
stays narrow for the searches that scan it (ModalitiesInStudy, unselective wildcards). A study without a row
here, or whose row was built for another instance count, is answered from its columns as before, so the upgrade
needs no downtime. Existing studies are filled in here, in batches, with the adapter's renderer
(``adapters.index.study_answers``): a later migration that changes the columns this renderer reads, or the answer
format, must empty this table (or rebuild it) rather than rely on this one.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0004'
down_revision = '0003'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('study_qido',
    sa.Column('study_fk', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=False, nullable=False),
    sa.Column('answer', sa.Text(), nullable=False),
    sa.Column('num_instances', sa.Integer(), nullable=False),
    sa.ForeignKeyConstraint(['study_fk'], ['studies.id'], name=op.f('fk_study_qido_study_fk_studies'),
                            ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('study_fk', name=op.f('pk_study_qido'))
    )
    from dicomvault.adapters.index import study_answers

    study_answers.backfill(op.get_bind())


def downgrade() -> None:
    op.drop_table('study_qido')
