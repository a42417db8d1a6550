"""``GET /metrics``: the archive's Prometheus metrics (``services.metrics``) in the text exposition format.

Read scope, like every other read: where anonymous reads are allowed (loopback by default) a scraper needs no
credential; elsewhere give it an API token with the read scope (Prometheus ``authorization`` / bearer token).

Two registries are exposed: the process-wide one (counters and gauges of the work this process does) and one per
app holding the storage dashboard's collector (``services.dashboard_metrics``: figures of the whole index, read
from the dashboard's cache), made at the first scrape.
"""

from __future__ import annotations

import threading

from fastapi import APIRouter, Depends, Request, Response
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, CollectorRegistry, generate_latest

from dicomvault.dicomweb.security import Principal, require_scope
from dicomvault.services.dashboard import DashboardService
from dicomvault.services.dashboard_metrics import DashboardCollector

router = APIRouter(tags=["Metrics"])

_made = threading.Lock()


def archive_registry(request: Request) -> CollectorRegistry:
    """This app's registry of archive-wide figures (the dashboard's collector), registered once per app."""
    state = request.app.state
    with _made:
        registry = getattr(state, "metrics_registry", None)
        if not isinstance(registry, CollectorRegistry):
            registry = CollectorRegistry(auto_describe=False)
            dashboard = getattr(state.archive, "dashboard", None)
            if isinstance(dashboard, DashboardService):
                registry.register(DashboardCollector(dashboard))
            state.metrics_registry = registry
    return registry


@router.get("/metrics", summary="Prometheus metrics", include_in_schema=False)
def metrics(request: Request, _who: Principal = Depends(require_scope("read"))) -> Response:
    body = generate_latest(REGISTRY) + generate_latest(archive_registry(request))
    return Response(body, media_type=CONTENT_TYPE_LATEST)
