"""The storage dashboard's figures after a known ingest (SQLite; PostgreSQL in the suite's second phase), the job
queue's counts and failures, the fixity report, and the cache."""

from __future__ import annotations

import io
import json
import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from pydicom.uid import generate_uid

from dicomvault.bootstrap import Archive
from dicomvault.ports.dashboard import UNKNOWN, Tally, Totals
from dicomvault.ports.jobs import JobState
from dicomvault.services.dashboard import DashboardService, Figures, short_error
from tests.helpers import make_ct


def known_ingest(archive: Archive) -> dict[str, int]:
    """Two studies: 3 CT instances from a modality, 2 MR instances uploaded; returns the bytes per modality."""
    sizes: dict[str, int] = {"CT": 0, "MR": 0}
    ct_study, ct_series = generate_uid(), generate_uid()
    for n in range(3):
        blob = make_ct(study=ct_study, series=ct_series, seed=n, InstanceNumber=n + 1)
        sizes["CT"] += archive.ingest.ingest(io.BytesIO(blob), source="dimse:CT_SCANNER").blob.size
    mr_study, mr_series = generate_uid(), generate_uid()
    for n in range(2):
        blob = make_ct(study=mr_study, series=mr_series, seed=10 + n, Modality="MR", PatientID="PID-2")
        sizes["MR"] += archive.ingest.ingest(io.BytesIO(blob), source="dicomweb").blob.size
    return sizes


def dashboard(archive: Archive) -> DashboardService:
    assert archive.dashboard is not None
    return archive.dashboard


def test_figures_after_a_known_ingest(archive: Archive) -> None:
    sizes = known_ingest(archive)
    total = sizes["CT"] + sizes["MR"]
    figures = dashboard(archive).figures(7)
    assert figures.totals == Totals(patients=2, studies=2, series=2, instances=5, bytes=total)
    assert sorted(figures.by_modality, key=lambda t: t.label) == [
        Tally("CT", 3, sizes["CT"]), Tally("MR", 2, sizes["MR"])]
    assert {t.label: (t.instances, t.bytes) for t in figures.by_source} == {
        "dimse:CT_SCANNER": (3, sizes["CT"]), "dicomweb": (2, sizes["MR"])}
    assert figures.by_store == [Tally("default", 5, total)]
    # every day of the window, oldest first, today's bucket holding all five
    today = datetime.now(UTC).strftime("%Y-%m-%d")
    assert len(figures.by_day) == 7 and figures.by_day[-1] == Tally(today, 5, total)
    assert all(t.instances == 0 for t in figures.by_day[:-1])
    assert len(figures.last_hour) == 60 and figures.received_last_hour == Tally("last hour", 5, total)
    assert figures.fixity.finished is None and figures.jobs == [] and figures.failures == []


def test_an_instance_without_modality_or_source_is_counted_under_none(archive: Archive) -> None:
    blob = make_ct(Modality="")
    size = archive.ingest.ingest(io.BytesIO(blob)).blob.size
    figures = dashboard(archive).figures(30)
    assert figures.by_modality == [Tally(UNKNOWN, 1, size)]
    assert figures.by_source == [Tally(UNKNOWN, 1, size)]
    assert len(figures.by_day) == 30


def test_received_ranges_count_by_day_and_minute_in_utc(archive: Archive) -> None:
    known_ingest(archive)
    figures = archive.dashboard._figures if archive.dashboard else None  # the port itself
    assert figures is not None
    now = datetime.now(UTC)
    by_minute = figures.received(now - timedelta(minutes=5), "minute")
    assert sum(t.instances for t in by_minute) == 5
    assert all(len(t.label) == 16 for t in by_minute)
    assert figures.received(now + timedelta(minutes=2), "minute") == []


def test_job_counts_and_last_failures(archive: Archive) -> None:
    assert archive.jobs is not None
    archive.jobs.enqueue("fixity", {"sop_uid": "1.2.3"})
    archive.jobs.enqueue("fixity", {"sop_uid": "1.2.4"}, run_at=datetime.now(UTC) + timedelta(hours=1))
    failing = archive.jobs.enqueue("route-deliver", {"destination": "PACS"})
    claimed = archive.jobs.claim("w1", kinds=["route-deliver"])
    assert claimed is not None and claimed.id == failing
    long_error = "connection refused by 10.0.0.9:104\nTraceback (most recent call last): ..." + "x" * 500
    assert archive.jobs.fail(failing, long_error, None) == JobState.FAILED
    figures = dashboard(archive).figures(7)
    counts = {c.kind: (c.queued, c.running, c.failed) for c in figures.jobs}
    assert counts == {"fixity": (2, 0, 0), "route-deliver": (0, 0, 1)}
    assert [(f.id, f.kind, f.error) for f in figures.failures] == [
        (failing, "route-deliver", "connection refused by 10.0.0.9:104")]


def test_short_error_keeps_the_first_line_truncated() -> None:
    assert short_error(None) == "" and short_error("  \n") == ""
    assert short_error("a\nb") == "a"
    cut = short_error("y" * 1000)
    assert len(cut) == 240 and cut.endswith("…")


def test_fixity_status_from_the_last_scan_report(archive: Archive, settings_data_dir: Path) -> None:
    report = settings_data_dir / "fixity" / "last-report.json"
    report.parent.mkdir(parents=True)
    damage = {"sop_uid": "1.2", "key": "k", "store": "default", "problem": "corrupt", "detail": ""}
    report.write_text(json.dumps({"finished": "2026-12-01T03:00:00+00:00", "checked": 12, "missing": [damage],
                                  "corrupt": [damage, damage], "data_loss": [damage], "clean": False}))
    status = dashboard(archive).fixity()
    assert status.finished == datetime(2026, 12, 1, 3, tzinfo=UTC)
    assert (status.checked, status.bad_copies, status.data_loss, status.clean) == (12, 3, 1, False)
    report.write_text("{not json")
    assert dashboard(archive).fixity().problem == "the report cannot be read"


@pytest.fixture
def settings_data_dir(archive: Archive) -> Path:
    return archive.settings.data_dir


def test_figures_are_cached_for_the_ttl(archive: Archive) -> None:
    service = dashboard(archive)
    clock = [0.0]
    cached = DashboardService(service._figures, archive.jobs, Path("/nonexistent/report.json"), ttl=30.0,
                              clock=lambda: clock[0])
    first = cached.figures(7)
    known_ingest(archive)
    assert cached.figures(7) is first  # within the TTL: not computed again
    clock[0] = 31.0
    again: Figures = cached.figures(7)
    assert again is not first and again.totals.instances == 5
    with pytest.raises(ValueError):
        cached.figures(8)


def test_copies_per_store_are_refreshed_in_the_background_after_their_ttl(archive: Archive) -> None:
    service = dashboard(archive)
    clock = [0.0]
    cached = DashboardService(service._figures, archive.jobs, Path("/nonexistent/report.json"), ttl=30.0,
                              store_ttl=300.0, clock=lambda: clock[0])
    assert cached.figures(7).by_store == []
    known_ingest(archive)
    clock[0] = 301.0
    assert cached.figures(7).by_store == []  # the previous figure, while a thread computes the new one
    for _ in range(200):
        if not cached._refreshing.is_set():
            break
        threading.Event().wait(0.05)
    clock[0] = 400.0
    assert [t.instances for t in cached.figures(7).by_store] == [5]
