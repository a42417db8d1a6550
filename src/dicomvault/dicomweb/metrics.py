"""``GET /metrics``: the archive's Prometheus metrics (``services.metrics``) in the text exposition format.

Read scope, like every other read: where anonymous reads are allowed (loopback by default) a scraper needs no
credential; elsewhere give it an API token with the read scope (Prometheus ``authorization`` / bearer token).
"""

from __future__ import annotations

from fastapi import APIRouter, Depends, Response
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, generate_latest

from dicomvault.dicomweb.security import Principal, require_scope

router = APIRouter(tags=["Metrics"])


@router.get("/metrics", summary="Prometheus metrics", include_in_schema=False)
def metrics(_who: Principal = Depends(require_scope("read"))) -> Response:
    return Response(generate_latest(REGISTRY), media_type=CONTENT_TYPE_LATEST)
