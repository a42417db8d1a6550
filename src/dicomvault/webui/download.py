"""A study as a zip file (``/ui/studies/{uid}/download.zip``), streamed as it is written (``services.study_zip``).

The first object is read before the answer starts, so that a study the archive cannot read now (on an archive
storage class, a store down) gets an error page with its status instead of a 200 whose body stops; an object that
fails later cuts the download (the browser reports it failed). Share links' visitors get no download: what they
see may one day be de-identified on the fly, which a zip of the stored bytes would bypass.
"""

from __future__ import annotations

import itertools
from typing import Annotated, Any

from fastapi import APIRouter, Depends
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse

from dicomvault.domain.errors import NotFound
from dicomvault.services.study_zip import StudyLayout, safe_name, stream_zip
from dicomvault.webui.page_auth import PageUser, require_page
from dicomvault.webui.study_page import load_study, study_series

router = APIRouter(prefix="/ui", include_in_schema=False)


def _prepared(archive: Any, uid: str) -> tuple[str, Any]:
    """(download file name, the zip's chunks with the first already read); raises ``NotFound``."""
    study, _ = load_study(archive, uid)
    records = archive.retrieve.locate(study_uid=uid)
    if not records:
        raise NotFound("no such study")
    series = {s.uid: safe_name(f"S{s.number if s.number is not None else 0:03d}_{s.modality}", "SERIES")
              for s in study_series(archive, uid)}
    date = study.study_date.replace("-", "")
    patient = safe_name(study.patient_id, "PATIENT", limit=16)
    layout = StudyLayout(patient=patient, study=safe_name(f"{date}_{study.accession}", "STUDY"), series=series)
    chunks = stream_zip(archive.retrieve, records, layout)
    first = next(chunks, b"")
    return safe_name(f"{patient}_{date}_{study.accession}", "study", limit=48) + ".zip", itertools.chain([first],
                                                                                                        chunks)


@router.get("/studies/{uid}/download.zip")
async def download_zip(request: Request, uid: str,
                       user: Annotated[PageUser, Depends(require_page("read"))]) -> Response:
    if user.principal.study is not None:
        raise HTTPException(403, "a shared study cannot be downloaded")
    name, chunks = await run_in_threadpool(_prepared, request.app.state.archive, uid)
    return StreamingResponse(chunks, media_type="application/zip", headers={
        "content-disposition": f'attachment; filename="{name}"', "cache-control": "no-store",
        "x-content-type-options": "nosniff"})
