"""The storage dashboard's figures (``/ui/dashboard``) and the same figures as Prometheus metrics (``/metrics``).

Why one service with a cache: what is stored, where, how it grows and what is failing are aggregates over the whole
index; on a large index they cost tenths of a second to seconds (``adapters.index.dashboard``), and a page left open
with auto-refresh, several people and a Prometheus scraping every 15 s must not each run them. Figures are computed
at most once per ``ttl`` (30 s) per process, and the per-store figure (the one that reads instance rows: seconds on
a million instances) at most once per ``store_ttl`` (5 min), in a background thread after the first time; while one
thread recomputes, the others answer the previous figures instead of waiting.

Nothing here names a patient: job errors are shown truncated, and the fixity figure is counts from the last
scheduled scan's report (``data_dir/fixity/last-report.json``, ``jobs.handlers.fixity_scan_handler``).
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from dicomvault.ports.dashboard import StorageFigures, Tally, Totals
from dicomvault.ports.jobs import JobQueue, JobState

log = logging.getLogger(__name__)

#: the time windows the page offers (days of receipt); anything else is refused by the page
DAY_CHOICES: tuple[int, ...] = (7, 30, 90, 365)
DEFAULT_DAYS = 90
#: most labels of one breakdown (modalities, sources, stores); the rest are summed under ``OTHER``
MAX_CATEGORIES = 40
OTHER = "(other)"
#: the last failed jobs shown, and how much of each error text
LAST_FAILURES = 10
ERROR_CHARS = 240
#: a fixity report larger than this is not parsed for the dashboard (a scan that found massive damage)
MAX_REPORT_BYTES = 64 * 1024 * 1024


@dataclass(frozen=True)
class JobCount:
    kind: str
    queued: int = 0
    running: int = 0
    failed: int = 0


@dataclass(frozen=True)
class JobFailure:
    id: int
    kind: str
    when: datetime
    attempts: int
    error: str


@dataclass(frozen=True)
class FixityStatus:
    """The last scheduled fixity scan, from its report; ``finished`` None: no report yet."""

    finished: datetime | None = None
    checked: int = 0
    missing: int = 0
    corrupt: int = 0
    data_loss: int = 0
    clean: bool | None = None
    problem: str | None = None  # the report exists but could not be read

    @property
    def bad_copies(self) -> int:
        return self.missing + self.corrupt


@dataclass(frozen=True)
class Figures:
    computed_at: datetime
    days: int
    totals: Totals
    #: one entry per UTC day of the window, oldest first (days without instances count 0)
    by_day: list[Tally]
    #: one entry per minute of the last hour, oldest first
    last_hour: list[Tally]
    by_modality: list[Tally]
    by_source: list[Tally]
    by_store: list[Tally]
    jobs: list[JobCount] = field(default_factory=list)
    failures: list[JobFailure] = field(default_factory=list)
    fixity: FixityStatus = field(default_factory=FixityStatus)

    @property
    def received_last_hour(self) -> Tally:
        return Tally("last hour", sum(t.instances for t in self.last_hour), sum(t.bytes for t in self.last_hour))


class DashboardService:
    def __init__(self, figures: StorageFigures, jobs: JobQueue | None, fixity_report: Path, *,
                 ttl: float = 30.0, store_ttl: float = 300.0, clock: Callable[[], float] = time.monotonic) -> None:
        self._figures = figures
        self._jobs = jobs
        self._report = fixity_report
        self._ttl = ttl
        self._store_ttl = store_ttl
        self._clock = clock
        self._lock = threading.Lock()
        self._cached: dict[int, tuple[float, Figures]] = {}
        self._stores: tuple[float, list[Tally]] | None = None
        self._refreshing = threading.Event()

    def figures(self, days: int = DEFAULT_DAYS) -> Figures:
        """The figures with ``days`` days of receipt (one of ``DAY_CHOICES``), at most ``ttl`` seconds old — or
        older while another thread is computing them."""
        if days not in DAY_CHOICES:
            raise ValueError(f"days must be one of {DAY_CHOICES}")
        cached = self._cached.get(days)
        if cached is not None and self._clock() - cached[0] < self._ttl:
            return cached[1]
        if cached is not None and not self._lock.acquire(blocking=False):
            return cached[1]  # someone is computing: the previous figures meanwhile
        if cached is None:
            self._lock.acquire()
        try:
            again = self._cached.get(days)
            if again is not None and self._clock() - again[0] < self._ttl:
                return again[1]  # computed while this thread waited
            fresh = self._compute(days)
            self._cached[days] = (self._clock(), fresh)
            return fresh
        finally:
            self._lock.release()

    def forget(self) -> None:
        """Drop the cached figures (the next call computes them)."""
        with self._lock:
            self._cached.clear()
            self._stores = None

    def _compute(self, days: int) -> Figures:
        now = datetime.now(UTC)
        first_day = (now - timedelta(days=days - 1)).replace(hour=0, minute=0, second=0, microsecond=0)
        hour_ago = (now - timedelta(minutes=59)).replace(second=0, microsecond=0)
        modality, source = self._figures.by_modality_and_source()
        return Figures(
            computed_at=now, days=days, totals=self._figures.totals(),
            by_day=_dense(self._figures.received(first_day, "day"), first_day, now, timedelta(days=1), "%Y-%m-%d"),
            last_hour=_dense(self._figures.received(hour_ago, "minute"), hour_ago, now, timedelta(minutes=1),
                             "%Y-%m-%d %H:%M"),
            by_modality=_top(modality), by_source=_top(source), by_store=_top(self._store_figures()),
            jobs=self._job_counts(), failures=self._failures(), fixity=self.fixity(),
        )

    def _store_figures(self) -> list[Tally]:
        """Copies per store: computed here the first time, then refreshed by a background thread once older than
        ``store_ttl`` while the previous figures are shown (on a large index this join takes seconds)."""
        known = self._stores
        if known is None:
            fresh = self._figures.by_store()
            self._stores = (self._clock(), fresh)
            return fresh
        if self._clock() - known[0] >= self._store_ttl and not self._refreshing.is_set():
            self._refreshing.set()
            threading.Thread(target=self._refresh_stores, name="dashboard-stores", daemon=True).start()
        return known[1]

    def _refresh_stores(self) -> None:
        try:
            self._stores = (self._clock(), self._figures.by_store())
        except Exception as exc:  # a background refresh must not die silently, nor take anything down
            log.warning("dashboard: copies per store not refreshed: %s", type(exc).__name__)
        finally:
            self._refreshing.clear()

    def _job_counts(self) -> list[JobCount]:
        if self._jobs is None:
            return []
        per_kind: dict[str, dict[str, int]] = {}
        for (state, kind), n in self._jobs.counts().items():
            per_kind.setdefault(kind, {})[state.value] = n
        return [JobCount(kind, c.get(JobState.QUEUED.value, 0), c.get(JobState.RUNNING.value, 0),
                         c.get(JobState.FAILED.value, 0)) for kind, c in sorted(per_kind.items())]

    def _failures(self) -> list[JobFailure]:
        if self._jobs is None:
            return []
        return [JobFailure(j.id, j.kind, j.updated_at, j.attempts, short_error(j.last_error))
                for j in self._jobs.list(JobState.FAILED, limit=LAST_FAILURES)]

    def fixity(self) -> FixityStatus:
        """The last scheduled fixity scan's outcome (read from its report)."""
        try:
            size = self._report.stat().st_size
        except FileNotFoundError:
            return FixityStatus()
        except OSError as exc:
            return FixityStatus(problem=f"the report cannot be read: {exc.strerror}")
        if size > MAX_REPORT_BYTES:
            return FixityStatus(problem=f"the report is too large to show here ({size} bytes): read {self._report}")
        try:
            document: dict[str, Any] = json.loads(self._report.read_text(encoding="utf-8"))
            finished = datetime.fromisoformat(str(document["finished"]))
            return FixityStatus(
                finished=finished if finished.tzinfo else finished.replace(tzinfo=UTC),
                checked=int(document.get("checked") or 0), missing=len(document.get("missing") or []),
                corrupt=len(document.get("corrupt") or []), data_loss=len(document.get("data_loss") or []),
                clean=bool(document.get("clean")))
        except (OSError, ValueError, KeyError, TypeError) as exc:
            log.warning("dashboard: the fixity report %s cannot be read: %s", self._report, type(exc).__name__)
            return FixityStatus(problem="the report cannot be read")


def short_error(text: str | None) -> str:
    """A job's error for a page: its first line, at most ``ERROR_CHARS`` characters."""
    if not text:
        return ""
    line = text.strip().splitlines()[0] if text.strip() else ""
    return line if len(line) <= ERROR_CHARS else line[:ERROR_CHARS - 1] + "…"


def _dense(found: list[Tally], start: datetime, end: datetime, step: timedelta, fmt: str) -> list[Tally]:
    """Every bucket from ``start`` to ``end``, those without instances as zeros."""
    have = {t.label: t for t in found}
    out: list[Tally] = []
    at = start
    while at <= end:
        label = at.strftime(fmt)
        out.append(have.get(label) or Tally(label, 0, 0))
        at += step
    return out


def _top(tallies: list[Tally]) -> list[Tally]:
    """At most ``MAX_CATEGORIES`` labels: the largest, and the rest summed as ``OTHER`` (bounded metric labels)."""
    if len(tallies) <= MAX_CATEGORIES:
        return tallies
    head, rest = tallies[:MAX_CATEGORIES - 1], tallies[MAX_CATEGORIES - 1:]
    return [*head, Tally(OTHER, sum(t.instances for t in rest), sum(t.bytes for t in rest))]
