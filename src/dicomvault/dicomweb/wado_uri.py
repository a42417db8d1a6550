"""WADO-URI (PS3.18 chapter 9) at the site-level path ``/wado`` (included without the ``/dicom-web`` prefix).

``GET /wado?requestType=WADO&studyUID=…&seriesUID=…&objectUID=…`` with
- ``contentType``: ``image/jpeg`` (default for image objects), ``image/png``, ``application/dicom`` (default for
  objects without pixel data); a comma list is tried in order; ``*/*`` = the default;
- ``application/dicom``: ``transferSyntax`` (absent = Explicit VR Little Endian, as PS3.18 says, except lossy or
  undecodable pixel data, sent as stored); ``anonymize=yes`` is refused (406) rather than silently ignored;
- images: ``frameNumber`` (default 1), ``windowCenter`` + ``windowWidth`` (both or neither), ``rows`` /
  ``columns`` (the image is scaled to fit, aspect kept), ``imageQuality`` (JPEG, 1-100); ``annotation``,
  ``charset``, ``region``, ``presentationUID`` and ``presentationSeriesUID`` are accepted and ignored.
Missing or malformed parameters answer 400 with the JSON error body.
"""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import Response, StreamingResponse

from dicomvault.dicomweb import share_scope
from dicomvault.dicomweb.security import Principal
from dicomvault.dicomweb.wado import _target_syntax
from dicomvault.dicomweb.wado_common import read_scope, services
from dicomvault.domain.errors import InvalidQuery, Unsupported
from dicomvault.services import render as rd

router = APIRouter(tags=["WADO-URI"])
DICOM = "application/dicom"
_SUPPORTED = (rd.JPEG, rd.PNG, DICOM)


def _required(params: dict[str, str], name: str) -> str:
    value = params.get(name, "").strip()
    if not value:
        raise InvalidQuery(f"WADO-URI parameter {name} is required")
    return value


def _int(params: dict[str, str], name: str, lo: int, hi: int) -> int | None:
    raw = params.get(name, "").strip()
    if not raw:
        return None
    try:
        value = int(raw)
    except ValueError:
        raise InvalidQuery(f"{name} must be an integer") from None
    if not lo <= value <= hi:
        raise InvalidQuery(f"{name} must be between {lo} and {hi}")
    return value


def _content_type(raw: str | None, image: bool) -> str:
    if not raw:
        return rd.JPEG if image else DICOM
    for item in raw.split(","):
        media = item.split(";")[0].strip().lower()
        if media in ("*/*", "image/*") and image:
            return rd.JPEG
        if media == "*/*":
            return DICOM
        if media in _SUPPORTED and (image or media == DICOM):
            return media
    raise Unsupported("contentType names no media type this object can be provided in")


def _window(params: dict[str, str]) -> rd.Window | None:
    center, width = params.get("windowCenter", "").strip(), params.get("windowWidth", "").strip()
    if not center and not width:
        return None
    if not center or not width:
        raise InvalidQuery("windowCenter and windowWidth must be given together")
    return rd.parse_window(f"{center},{width}")


@router.get("/wado", summary="WADO-URI retrieve")
def wado_uri(request: Request, _who: Principal = read_scope) -> Response:
    params = {k: v for k, v in request.query_params.items()}
    if _required(params, "requestType").upper() != "WADO":
        raise InvalidQuery("requestType must be WADO")
    study, series, sop = (_required(params, n) for n in ("studyUID", "seriesUID", "objectUID"))
    svc = services(request)
    share_scope.require_study(share_scope.shared_study(request), study)
    record = svc.retrieve.instance(study, series, sop)
    share_scope.require_study(share_scope.shared_study(request), record.study_uid)  # the object's own study
    image = record.rows is not None or record.frame_index is not None
    media = _content_type(params.get("contentType"), image)
    if media == DICOM:
        if params.get("anonymize", "").strip().lower() == "yes":
            raise Unsupported("anonymized retrieval is not offered")
        requested = params.get("transferSyntax", "").strip() or None
        ts = _target_syntax(record, requested, svc.retrieve)
        if ts == record.transfer_syntax_uid:
            return StreamingResponse(svc.retrieve.iter_bytes(record), media_type=DICOM,
                                     headers={"Content-Length": str(record.blob.size)})
        if svc.retrieve.streams(record, ts):  # a deflated object inflated as it is sent
            return StreamingResponse(svc.retrieve.iter_transcoded(record, ts), media_type=DICOM)
        return Response(svc.retrieve.transcoded(record, ts), media_type=DICOM)
    frame = _int(params, "frameNumber", 1, 1 << 31) or 1
    rows = _int(params, "rows", 1, 8192)
    columns = _int(params, "columns", 1, 8192)
    viewport = None
    if rows or columns:
        viewport = rd.Viewport(columns or 8192, rows or 8192)
    options = rd.RenderOptions(media_type=media, quality=_int(params, "imageQuality", 1, 100) or 90,
                               window=_window(params), viewport=viewport)
    if not image:
        raise Unsupported("the object has no pixel data to render")
    if frame > (record.number_of_frames or 1):
        raise InvalidQuery(f"frameNumber {frame} exceeds the number of frames ({record.number_of_frames or 1})")
    data = svc.render.render(record, frame, options)
    return Response(data, media_type=media)

