"""The storage dashboard's figures as Prometheus metrics (``/metrics``), so that an operator's Grafana draws them.

Why a custom collector and not gauges set by the code that stores: the figures are aggregates of the index that
every node of a cluster shares, and the dashboard already computes them (cached: ``services.dashboard``); the
collector reads that cache when scraped, so a scrape costs no query of its own more than once per 30 s, and every
node answers the same figures. It lives in its own ``CollectorRegistry``, made once per HTTP app
(``dicomweb.metrics``), not in the process-wide registry: tests and tools that build several apps in one process
must not register the same names twice.

Metrics (gauges): ``dicomvault_patients``, ``dicomvault_studies``, ``dicomvault_series``,
``dicomvault_stored_instances{modality}``, ``dicomvault_stored_bytes{modality}``,
``dicomvault_source_instances{source}``, ``dicomvault_source_bytes{source}``, ``dicomvault_store_copies{store}``,
``dicomvault_store_bytes{store}``, ``dicomvault_received_instances_last_hour``,
``dicomvault_received_bytes_last_hour``, ``dicomvault_jobs{state,kind}``, ``dicomvault_fixity_bad_copies``,
``dicomvault_fixity_report_data_loss_blobs``, ``dicomvault_fixity_report_timestamp_seconds`` (the last three only
once a scheduled scan wrote its report), ``dicomvault_dashboard_up`` (0 when the index did not answer).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator

from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from dicomvault.domain.errors import DicomVaultError
from dicomvault.ports.dashboard import Tally
from dicomvault.services.dashboard import DEFAULT_DAYS, DashboardService, Figures

log = logging.getLogger(__name__)


class DashboardCollector(Collector):
    def __init__(self, service: DashboardService) -> None:
        self._service = service

    def collect(self) -> Iterator[Metric]:
        up = GaugeMetricFamily("dicomvault_dashboard_up",
                               "1 when the storage figures below could be read from the index, else 0.")
        try:
            figures = self._service.figures(DEFAULT_DAYS)
        except DicomVaultError as exc:
            log.warning("metrics: the storage figures are not available: %s", exc.message)
            up.add_metric([], 0)
            yield up
            return
        up.add_metric([], 1)
        yield up
        yield from _figures(figures)


def _gauge(name: str, doc: str, value: float) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, doc, value=value)


def _labelled(name: str, doc: str, label: str, tallies: list[Tally], bytes_: bool) -> GaugeMetricFamily:
    family = GaugeMetricFamily(name, doc, labels=[label])
    for t in tallies:
        family.add_metric([t.label], t.bytes if bytes_ else t.instances)
    return family


def _figures(f: Figures) -> Iterator[Metric]:
    yield _gauge("dicomvault_patients", "Patients in the index.", f.totals.patients)
    yield _gauge("dicomvault_studies", "Studies in the index.", f.totals.studies)
    yield _gauge("dicomvault_series", "Series in the index.", f.totals.series)
    yield _labelled("dicomvault_stored_instances", "Instances stored, by the Modality of their series.",
                    "modality", f.by_modality, False)
    yield _labelled("dicomvault_stored_bytes", "Bytes of the instances stored (one copy), by Modality.",
                    "modality", f.by_modality, True)
    yield _labelled("dicomvault_source_instances", "Instances stored, by where they came from.",
                    "source", f.by_source, False)
    yield _labelled("dicomvault_source_bytes", "Bytes of the instances stored (one copy), by source.",
                    "source", f.by_source, True)
    yield _labelled("dicomvault_store_copies", "Copies of stored instances on each named store.",
                    "store", f.by_store, False)
    yield _labelled("dicomvault_store_bytes", "Bytes of the copies on each named store.", "store", f.by_store, True)
    hour = f.received_last_hour
    yield _gauge("dicomvault_received_instances_last_hour", "Instances stored over the last 60 minutes.",
                 hour.instances)
    yield _gauge("dicomvault_received_bytes_last_hour", "Bytes stored over the last 60 minutes.", hour.bytes)
    jobs = GaugeMetricFamily("dicomvault_jobs", "Background jobs queued, running or failed, by kind.",
                             labels=["state", "kind"])
    for c in f.jobs:
        for state, n in (("queued", c.queued), ("running", c.running), ("failed", c.failed)):
            jobs.add_metric([state, c.kind], n)
    yield jobs
    if f.fixity.finished is not None:
        yield _gauge("dicomvault_fixity_bad_copies",
                     "Missing or corrupt copies found by the last scheduled fixity scan.", f.fixity.bad_copies)
        yield _gauge("dicomvault_fixity_report_data_loss_blobs",
                     "Blobs with no intact copy left, in the last scheduled fixity scan's report.", f.fixity.data_loss)
        yield _gauge("dicomvault_fixity_report_timestamp_seconds",
                     "When the last scheduled fixity scan finished (Unix time).", f.fixity.finished.timestamp())
