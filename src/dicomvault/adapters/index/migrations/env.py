"""Alembic environment: the engine comes from ``alembic_config`` (no alembic.ini, no URL in files)."""

from __future__ import annotations

from alembic import context

from dicomvault.adapters.index.tables import metadata

config = context.config
engine = config.attributes["engine"]

with engine.connect() as connection:
    context.configure(connection=connection, target_metadata=metadata, render_as_batch=True,
                      transaction_per_migration=True)
    with context.begin_transaction():
        context.run_migrations()
    if connection.in_transaction():
        connection.commit()
