"""DELETE of studies, series and instances (the ``delete`` scope).

Not part of PS3.18 proper, but the de facto DICOMweb extension that dcm4chee, Orthanc and Google's healthcare API
offer: ``DELETE /studies/{s}``, ``…/series/{se}``, ``…/instances/{i}`` answer 204 (no content) once the index rows
are gone and the released blobs removed, 404 when nothing matched. See ``services.lifecycle`` for the ordering
that keeps a crash harmless.
"""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response

from dicomvault.dicomweb.security import Principal, require_scope
from dicomvault.dicomweb.wado_common import services

router = APIRouter(tags=["Delete"])
delete_scope = Depends(require_scope("delete"))


def _delete(request: Request, study: str, series: str | None, sop: str | None) -> Response:
    services(request).lifecycle.delete(study, series, sop)
    return Response(status_code=204)


@router.delete("/studies/{study}", status_code=204, summary="Delete a study")
def delete_study(request: Request, study: str, _who: Principal = delete_scope) -> Response:
    return _delete(request, study, None, None)


@router.delete("/studies/{study}/series/{series}", status_code=204, summary="Delete a series")
def delete_series(request: Request, study: str, series: str, _who: Principal = delete_scope) -> Response:
    return _delete(request, study, series, None)


@router.delete("/studies/{study}/series/{series}/instances/{sop}", status_code=204, summary="Delete an instance")
def delete_instance(request: Request, study: str, series: str, sop: str, _who: Principal = delete_scope) -> Response:
    return _delete(request, study, series, sop)
