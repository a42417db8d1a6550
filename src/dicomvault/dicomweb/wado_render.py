"""WADO-RS rendered resources and thumbnails (PS3.18 8.3.5, 10.4.1.1.3/.4).

``…/rendered`` and ``…/thumbnail`` at study, series, instance and frame level, as ``image/jpeg`` (default) or
``image/png``. Query parameters: ``window=center,width[,linear|linear_exact|sigmoid]``,
``viewport=vw,vh[,sx,sy,sw,sh]`` (the image is scaled to fit, aspect kept), ``quality=1..100`` (JPEG);
``annotation``, ``charset`` and ``iccprofile`` are accepted and ignored.

Which image: a study or series renders its first image instance (thumbnail: the middle instance); an instance
renders frame 1 (thumbnail: the middle frame, as viewers' study browsers show); a frame list renders each frame
(several frames: one multipart part per frame). Thumbnails are at most 128 pixels on their long side unless a
viewport says otherwise. Objects without pixel data (SR, PDF) answer 406.
"""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import Response

from dicomvault.dicomweb import multipart_writer as mw
from dicomvault.dicomweb import negotiation as neg
from dicomvault.dicomweb.security import Principal
from dicomvault.dicomweb.wado_common import not_acceptable, parse_frame_list, read_scope, services
from dicomvault.domain.errors import NotFound, Unsupported
from dicomvault.domain.records import InstanceRecord
from dicomvault.services import render as rd

router: APIRouter = APIRouter(tags=["WADO-RS rendered"])


def choose_media(accept_header: str | None) -> str:
    accept = neg.parse_accept(accept_header)
    if not accept:
        return rd.JPEG
    for a in accept:
        for media in rd.MEDIA_TYPES:
            if a.inner == media:
                return media
        if a.matches(rd.JPEG) or a.media in ("*/*", "multipart/*"):
            return rd.JPEG
    raise not_acceptable("a rendered image (image/jpeg, image/png)")


def options(request: Request, thumbnail: bool) -> rd.RenderOptions:
    q = request.query_params
    return rd.RenderOptions(
        media_type=choose_media(request.headers.get("accept")),
        quality=rd.parse_quality(q.get("quality")),
        window=rd.parse_window(q.get("window")),
        viewport=rd.parse_viewport(q.get("viewport")),
        max_side=rd.THUMBNAIL_SIZE if thumbnail else None,
    )


def _pick(request: Request, study: str, series: str | None, thumbnail: bool) -> InstanceRecord:
    records = services(request).retrieve.locate(study_uid=study, series_uid=series)
    if not records:
        raise NotFound("no instances match")
    images = [r for r in records if r.rows is not None or r.frame_index is not None]
    if not images:
        raise Unsupported("no instance here has image pixel data to render")
    return images[(len(images) - 1) // 2] if thumbnail else images[0]


def _one(request: Request, record: InstanceRecord, frame: int, thumbnail: bool) -> Response:
    opts = options(request, thumbnail)
    data = services(request).render.render(record, frame, opts)
    return Response(data, media_type=opts.media_type)


def _level(request: Request, study: str, series: str | None, thumbnail: bool) -> Response:
    opts = options(request, thumbnail)  # validate parameters before any lookup
    record = _pick(request, study, series, thumbnail)
    frame = rd.RenderService.middle_frame(record) if thumbnail else 1
    return Response(services(request).render.render(record, frame, opts), media_type=opts.media_type)


def _frames(request: Request, study: str, series: str, sop: str, frames: str, thumbnail: bool) -> Response:
    numbers = parse_frame_list(frames)
    opts = options(request, thumbnail)
    record = services(request).retrieve.instance(study, series, sop)
    total = record.number_of_frames or 1
    for n in numbers:
        if n > total:
            raise NotFound(f"frame {n} does not exist (the instance has {total})")
    renderer = services(request).render
    if len(numbers) == 1:
        return Response(renderer.render(record, numbers[0], opts), media_type=opts.media_type)
    images = [renderer.render(record, n, opts) for n in numbers[:64]]
    boundary = mw.new_boundary()
    body = b"".join(mw.stream_parts(boundary, (mw.PartSpec(opts.media_type, [img]) for img in images)))
    return Response(body, media_type=mw.content_type(boundary, opts.media_type))


@router.get("/studies/{study}/rendered", summary="Rendered study (first image)")
def study_rendered(request: Request, study: str, _who: Principal = read_scope) -> Response:
    return _level(request, study, None, False)


@router.get("/studies/{study}/thumbnail", summary="Study thumbnail")
def study_thumbnail(request: Request, study: str, _who: Principal = read_scope) -> Response:
    return _level(request, study, None, True)


@router.get("/studies/{study}/series/{series}/rendered", summary="Rendered series (first image)")
def series_rendered(request: Request, study: str, series: str, _who: Principal = read_scope) -> Response:
    return _level(request, study, series, False)


@router.get("/studies/{study}/series/{series}/thumbnail", summary="Series thumbnail")
def series_thumbnail(request: Request, study: str, series: str, _who: Principal = read_scope) -> Response:
    return _level(request, study, series, True)


@router.get("/studies/{study}/series/{series}/instances/{sop}/rendered", summary="Rendered instance (frame 1)")
def instance_rendered(request: Request, study: str, series: str, sop: str, _who: Principal = read_scope) -> Response:
    record = services(request).retrieve.instance(study, series, sop)
    return _one(request, record, 1, False)


@router.get("/studies/{study}/series/{series}/instances/{sop}/thumbnail", summary="Instance thumbnail")
def instance_thumbnail(request: Request, study: str, series: str, sop: str, _who: Principal = read_scope) -> Response:
    record = services(request).retrieve.instance(study, series, sop)
    return _one(request, record, rd.RenderService.middle_frame(record), True)


@router.get("/studies/{study}/series/{series}/instances/{sop}/frames/{frames}/rendered", summary="Rendered frames")
def frames_rendered(request: Request, study: str, series: str, sop: str, frames: str,
                    _who: Principal = read_scope) -> Response:
    return _frames(request, study, series, sop, frames, False)


@router.get("/studies/{study}/series/{series}/instances/{sop}/frames/{frames}/thumbnail", summary="Frame thumbnail")
def frames_thumbnail(request: Request, study: str, series: str, sop: str, frames: str,
                     _who: Principal = read_scope) -> Response:
    return _frames(request, study, series, sop, frames, True)
