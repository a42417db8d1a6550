"""Copy a whole index database into another, empty one (SQLite → PostgreSQL when a node becomes a cluster).

The index cannot be rebuilt from the blob store alone at full fidelity (the blob store is content-addressed: it
keeps no record of which SOP Instance UID a blob is the *current* version of, nor of jobs, tokens, or the
archive's counters' history), so moving engines means copying rows. Rows keep their ids, tables are copied in
foreign-key order from one read snapshot of the source into one transaction on the target: the target ends up
with all of it or nothing.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Engine, Table, func, select, text

# Imported for their side effect: their tables join ``metadata``, so every table of the schema is copied.
from dicomvault.adapters.index import job_queue as _job_queue  # noqa: F401
from dicomvault.adapters.index import sessions as _sessions  # noqa: F401
from dicomvault.adapters.index import shares as _shares  # noqa: F401
from dicomvault.adapters.index import tokens as _tokens  # noqa: F401
from dicomvault.adapters.index.tables import metadata
from dicomvault.domain.errors import Conflict

BATCH = 2000


def _utc(row: Any) -> dict[str, Any]:
    """SQLite hands back naive datetimes (written as UTC); PostgreSQL would read them in the session time zone."""
    return {k: (v.replace(tzinfo=UTC) if isinstance(v, datetime) and v.tzinfo is None else v)
            for k, v in row._mapping.items()}


def copy_index(
    source: Engine, target: Engine, *, progress: Callable[[str, int], None] | None = None
) -> dict[str, int]:
    """Copy every row of every index table from ``source`` to ``target`` (both already migrated to the same
    revision); returns rows copied per table. Raises ``Conflict`` if the target holds any row already."""
    tables: list[Table] = list(metadata.sorted_tables)
    with target.connect() as tconn:
        busy = [t.name for t in tables if tconn.execute(select(func.count()).select_from(t)).scalar_one()]
    if busy:
        raise Conflict(f"the target index is not empty (tables with rows: {', '.join(busy)})")
    counts: dict[str, int] = {}
    with source.connect() as sconn, sconn.begin(), target.connect() as tconn, tconn.begin():
        for table in tables:
            n = 0
            with sconn.execution_options(stream_results=True, yield_per=BATCH).execute(
                    select(table).order_by(*table.primary_key.columns)) as result:
                for batch in result.partitions(BATCH):
                    tconn.execute(table.insert(), [_utc(r) for r in batch])
                    n += len(batch)
                    if progress is not None:
                        progress(table.name, n)
            counts[table.name] = n
            if target.dialect.name == "postgresql" and "id" in table.c and n:
                tconn.execute(text(f"SELECT setval(pg_get_serial_sequence('{table.name}', 'id'), "
                                   f"(SELECT max(id) FROM {table.name}))"))
        for table in tables:  # verify before committing
            got = tconn.execute(select(func.count()).select_from(table)).scalar_one()
            if got != counts[table.name]:
                raise RuntimeError(f"copy of {table.name} incomplete: {got} of {counts[table.name]} rows")
    return counts
