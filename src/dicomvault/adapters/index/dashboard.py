"""SqlStorageFigures: ``ports.dashboard.StorageFigures`` as a few aggregate statements on the index.

Chosen to stay cheap on a 1,000,000-instance index (``benchmarks/dashboard_scale.py``: SQLite, warm cache, figures
in ``docs/dashboard.md``):

* totals come from the study rows' counters (``num_instances``, ``size_bytes``, kept by ingest), not from
  counting instances: one row per study is read (2 ms);
* instances by time of receipt are range scans of the covering index ``(stored_at, blob_size)`` (migration 0017),
  one per day or minute: each range is read in index order and summed, with no sort (a GROUP BY on the day would
  make SQLite sort every row of the period first): 25 ms for 90 days, 0.1 s for 365; the same statements on
  PostgreSQL;
* per modality and per source: one scan of the covering index ``(source, series_fk, blob_size)`` grouped in
  index order, joined to the series (for their modality) after grouping: 0.2 s;
* per store: the copy rows joined to their instances by blob key, the one figure that reads instance rows (about
  3 s): ``services.dashboard`` computes it once, then refreshes it in the background every 5 minutes.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Literal, TypeVar

from sqlalchemy import Connection, DateTime, Engine, and_, bindparam, func, select

from dicomvault.adapters.index import postgres
from dicomvault.adapters.index.tables import blob_copies, instances, patients, series, studies
from dicomvault.ports.dashboard import UNKNOWN, Tally, Totals

T = TypeVar("T")

#: most buckets one ``received`` call may ask for (a year of days; a day of minutes)
MAX_BUCKETS = 1500

_STEP = {"day": timedelta(days=1), "minute": timedelta(minutes=1)}
_LABEL = {"day": "%Y-%m-%d", "minute": "%Y-%m-%d %H:%M"}


class SqlStorageFigures:
    """Implements ``ports.dashboard.StorageFigures`` (see the module docstring for the cost of each figure)."""

    def __init__(self, engine: Engine, *, retries: int = 5) -> None:
        self.engine = engine
        self._dialect = engine.dialect.name
        self._retries = retries
        at = instances.c.stored_at
        when = DateTime(timezone=True)
        self._range = select(func.count(), func.coalesce(func.sum(instances.c.blob_size), 0)).where(
            and_(at >= bindparam("lo", type_=when), at < bindparam("hi", type_=when)))

    def _reading(self, fn: Callable[[Connection], T]) -> T:
        def run() -> T:
            with self.engine.connect() as conn:
                return fn(conn)

        return postgres.run_with_retries(run, dialect=self._dialect, retries=self._retries)

    def _db(self, value: datetime) -> datetime:
        """Aware UTC for PostgreSQL, naive UTC for SQLite (which stores text: the same form compares rightly)."""
        value = (value if value.tzinfo is not None else value.replace(tzinfo=UTC)).astimezone(UTC)
        return value if self._dialect == "postgresql" else value.replace(tzinfo=None)

    def totals(self) -> Totals:
        def run(conn: Connection) -> Totals:
            n_studies, n_instances, n_bytes = conn.execute(select(
                func.count(), func.coalesce(func.sum(studies.c.num_instances), 0),
                func.coalesce(func.sum(studies.c.size_bytes), 0))).one()
            n_patients = conn.execute(select(func.count()).select_from(patients)).scalar_one()
            n_series = conn.execute(select(func.count()).select_from(series)).scalar_one()
            return Totals(int(n_patients), int(n_studies), int(n_series), int(n_instances), int(n_bytes))

        return self._reading(run)

    def received(self, since: datetime, bucket: Literal["day", "minute"]) -> list[Tally]:
        step = _STEP[bucket]
        since = since.astimezone(UTC)
        start = (since.replace(hour=0, minute=0, second=0, microsecond=0) if bucket == "day"
                 else since.replace(second=0, microsecond=0))
        now = datetime.now(UTC)
        edges: list[datetime] = []
        at = start
        while at <= now and len(edges) < MAX_BUCKETS:
            edges.append(at)
            at += step

        def run(conn: Connection) -> list[Tally]:
            out: list[Tally] = []
            for lo in edges:
                n, size = conn.execute(self._range, {"lo": self._db(max(lo, since)),
                                                     "hi": self._db(lo + step)}).one()
                if n:
                    out.append(Tally(lo.strftime(_LABEL[bucket]), int(n), int(size)))
            return out

        return self._reading(run)

    def by_modality_and_source(self) -> tuple[list[Tally], list[Tally]]:
        grouped = (select(instances.c.source, instances.c.series_fk, func.count().label("n"),
                          func.coalesce(func.sum(instances.c.blob_size), 0).label("size"))
                   .group_by(instances.c.source, instances.c.series_fk).subquery())
        stmt = (select(series.c.modality, grouped.c.source, func.sum(grouped.c.n), func.sum(grouped.c.size))
                .select_from(grouped.join(series, series.c.id == grouped.c.series_fk))
                .group_by(series.c.modality, grouped.c.source))

        def run(conn: Connection) -> tuple[list[Tally], list[Tally]]:
            modality: dict[str, tuple[int, int]] = {}
            source: dict[str, tuple[int, int]] = {}
            for mod, src, n, size in conn.execute(stmt):
                for into, label in ((modality, (mod or "").strip() or UNKNOWN), (source, src or UNKNOWN)):
                    was = into.get(label, (0, 0))
                    into[label] = (was[0] + int(n), was[1] + int(size or 0))
            return _largest_first(modality), _largest_first(source)

        return self._reading(run)

    def by_store(self) -> list[Tally]:
        stmt = (select(blob_copies.c.store, func.count(), func.coalesce(func.sum(instances.c.blob_size), 0))
                .select_from(blob_copies.join(instances, instances.c.blob_key == blob_copies.c.key))
                .group_by(blob_copies.c.store).order_by(blob_copies.c.store))
        return self._reading(lambda conn: [Tally(store, int(n), int(size)) for store, n, size in conn.execute(stmt)])


def _largest_first(tallies: dict[str, tuple[int, int]]) -> list[Tally]:
    return [Tally(label, n, size) for label, (n, size) in
            sorted(tallies.items(), key=lambda item: (-item[1][1], -item[1][0], item[0]))]
