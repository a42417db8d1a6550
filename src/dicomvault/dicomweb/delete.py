"""DELETE of studies, series and instances (the ``delete`` scope).

Not part of PS3.18 proper, but the de facto DICOMweb extension that dcm4chee, Orthanc and Google's healthcare API
offer: ``DELETE /studies/{s}``, ``…/series/{se}``, ``…/instances/{i}`` answer 204 (no content) once the index rows
are gone and the released blobs removed, 404 when nothing matched. See ``services.lifecycle`` for the ordering
that keeps a crash harmless. With ``delete_grace_days`` > 0 the delete is a soft delete (``services.trash``): the
study is gone from every query and retrieval at once, its blobs stay in the trash, restorable, until the purge.
A study younger than ``retention_min_days`` is refused with 409 and a JSON reason. The deletion log records the
caller (the principal's name).
"""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response

from dicomvault.dicomweb.security import Principal, require_scope
from dicomvault.dicomweb.wado_common import services
from dicomvault.domain.trash import Deletion

router = APIRouter(tags=["Delete"])
delete_scope = Depends(require_scope("delete"))


def _delete(request: Request, who: Principal, study: str, series: str | None, sop: str | None) -> Response:
    archive = services(request)
    deletion = Deletion(f"http:{who.name}", "DICOMweb DELETE")
    if archive.trash is not None:
        archive.trash.delete(study, series, sop, deletion=deletion)
    else:
        archive.lifecycle.delete(study, series, sop, deletion=deletion)
    return Response(status_code=204)


@router.delete("/studies/{study}", status_code=204, summary="Delete a study")
def delete_study(request: Request, study: str, who: Principal = delete_scope) -> Response:
    return _delete(request, who, study, None, None)


@router.delete("/studies/{study}/series/{series}", status_code=204, summary="Delete a series")
def delete_series(request: Request, study: str, series: str, who: Principal = delete_scope) -> Response:
    return _delete(request, who, study, series, None)


@router.delete("/studies/{study}/series/{series}/instances/{sop}", status_code=204, summary="Delete an instance")
def delete_instance(request: Request, study: str, series: str, sop: str, who: Principal = delete_scope) -> Response:
    return _delete(request, who, study, series, sop)
