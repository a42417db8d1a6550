"""WADO-RS retrieval (PS3.18 10.4): instances, metadata, bulk data and frames; rendered resources are in
``wado_render`` (included here).

- Instances (study, series, instance): ``multipart/related; type="application/dicom"`` streamed from the blob store
  in 1 MiB chunks (bounded memory). The ``transfer-syntax`` parameter: ``*`` = as stored; absent = Explicit VR Little
  Endian (PS3.18 8.7.3.5), except lossy or undecodable pixel data, which is sent as stored; a UID = as stored if equal,
  else transcoded, 406 if that is impossible. A bare ``Accept: application/dicom`` is answered single-part for one
  instance (lenient; the standard requires multipart).
- Metadata: the cached DICOM JSON of each instance spliced into one array, BulkDataURIs made absolute; blobs are
  never read.
- Bulk data (``…/bulk/<tag>``): a top-level attribute's value read by byte range (a ``Range`` header gives one
  206 part); pixel data as native bytes or, encapsulated, one part per frame in its compressed media type.
- Frames: one byte-range read per frame through the ingest-time frame index, in the stored syntax (media types
  per PS3.18 Table 8.7.3-5) or, for ``application/octet-stream`` with Explicit VR Little Endian asked explicitly
  (or by default for lossless data), decoded to native bytes.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from fastapi import APIRouter, Request
from fastapi.responses import Response, StreamingResponse

from dicomvault.dicomweb import multipart_writer as mw
from dicomvault.dicomweb import negotiation as neg
from dicomvault.dicomweb import wado_render
from dicomvault.dicomweb.errors import error_response
from dicomvault.dicomweb.security import Principal
from dicomvault.dicomweb.wado_common import not_acceptable, parse_frame_list, read_scope, services
from dicomvault.domain.errors import DamagedPixelData, InvalidQuery, NotFound, Unsupported
from dicomvault.domain.records import InstanceRecord
from dicomvault.services import pixels
from dicomvault.services.retrieve import RetrieveService

router = APIRouter(tags=["WADO-RS"])

DICOM = "application/dicom"
DICOM_JSON = "application/dicom+json"
OCTET = "application/octet-stream"
#: Up to this many frames are produced before answering (errors become a clean 4xx, the body gets a length).
EAGER_FRAMES = 16
#: Metadata arrays up to this many instances are sent in one write; larger ones stream.
EAGER_METADATA = 4096
_TAG_RE = re.compile(r"^[0-9A-Fa-f]{8}$")
_PIXEL_TAGS = (0x7FE00010, 0x7FE00008, 0x7FE00009)


def base_url(request: Request) -> str:
    """Absolute ``…/dicom-web`` URL as the client addressed us. Some clients (dicomweb-client) send a Host header
    without the port; on a direct connection (no proxy headers) the listening port is then added back."""
    url = request.base_url
    server = request.scope.get("server")
    direct = not any(h in request.headers for h in ("x-forwarded-for", "x-forwarded-host", "forwarded"))
    if url.port is None and direct and server and len(server) == 2 and server[1] is not None:
        default = 443 if url.scheme == "https" else 80
        if int(server[1]) != default:
            url = url.replace(port=int(server[1]))
    return str(url).rstrip("/") + "/dicom-web"


# -- instances -------------------------------------------------------------------------------------------------


def _instance_choice(accept: list[neg.Acceptable], single: bool) -> tuple[bool, str | None]:
    """(multipart?, transfer-syntax parameter) for the first acceptable representation of instances."""
    if not accept:
        return True, None
    for a in accept:
        if a.multipart and (a.inner in ("", "*/*", "*", DICOM, "application/*")):
            return True, a.transfer_syntax
        if not a.multipart and a.inner == DICOM and single:
            return False, a.transfer_syntax
        if a.media in ("*/*", "multipart/*"):
            return True, None
    raise not_acceptable("instances")


def _target_syntax(record: InstanceRecord, requested: str | None, retrieve: RetrieveService) -> str:
    stored = record.transfer_syntax_uid
    if requested == "*":
        return stored
    if requested is None:
        default = neg.default_syntax(stored, pixels.can_decode(stored))
        # As stored when converting would exceed max_decoded_bytes, as for pixel data that cannot be decoded.
        return default if retrieve.fits(record, default) else stored
    if requested == stored:
        return stored
    decodable = stored in neg.NATIVE_SYNTAXES or pixels.can_decode(stored)
    if decodable and retrieve.can_transcode(stored, requested):
        return requested
    raise Unsupported(f"instances cannot be provided in transfer syntax {requested}")


def _instance_chunks(retrieve: RetrieveService, record: InstanceRecord, ts: str) -> Iterator[bytes]:
    if ts == record.transfer_syntax_uid:
        yield from retrieve.iter_bytes(record, chunk=mw.BATCH)
    else:
        yield from retrieve.iter_transcoded(record, ts)


def _instance_body(retrieve: RetrieveService, record: InstanceRecord, ts: str) -> Iterator[bytes]:
    """The object of ``record`` in ``ts``. An instance compressed at rest after the request selected it (its blob
    then removed: ``compress_on_ingest`` works on studies minutes old, likely being read) is answered from its
    compressed blob: its original is byte for byte the object selected, so the part's syntax and length hold."""
    chunks = _instance_chunks(retrieve, record, ts)
    try:
        first = next(chunks, None)
    except NotFound:
        current = retrieve.refreshed(record)
        if current is None or current.original is None or current.original.sha256 != record.blob.sha256:
            raise
        chunks = _instance_chunks(retrieve, current, ts)
        first = next(chunks, None)
    if first is not None:
        yield first
        yield from chunks


def _primed(chunks: Iterator[bytes]) -> Iterator[bytes]:
    """Read the first chunk now, in the request handler: when the first object cannot be read (on an archive
    storage class and not restored, a store down) the request fails with its own status (503 with Retry-After
    and the reason) before the response starts, instead of a 200 whose body is cut off. A later object that
    cannot be read still cuts the stream: checking every object first would cost a read each."""
    first = next(chunks, None)
    return chunks if first is None else itertools.chain([first], chunks)


def _retrieve(request: Request, study: str, series: str | None, sop: str | None) -> Response:
    svc = services(request).retrieve
    records = svc.locate(study_uid=study, series_uid=series, sop_uids=[sop] if sop else None)
    if not records:
        raise NotFound("no instances match")
    multipart, requested = _instance_choice(neg.parse_accept(request.headers.get("accept")), len(records) == 1)
    targets = [_target_syntax(r, requested, svc) for r in records]
    first: list[bytes] | None = None
    if len(records) == 1 and not svc.streams(records[0], targets[0]):
        first = [svc.transcoded(records[0], targets[0])]  # fail (406, 422) before any byte is sent

    def body(i: int) -> Iterator[bytes]:
        return iter(first) if first is not None else _instance_body(svc, records[i], targets[i])
    prefetch = services(request).prefetch
    body_of = prefetch.bodies(records, body) if prefetch is not None and len(records) > 1 else body
    head = _primed(body_of(0))
    if not multipart:
        record, ts = records[0], targets[0]
        headers = {"Content-Length": str(record.blob.size)} if ts == record.transfer_syntax_uid else None
        return StreamingResponse(head, media_type=f"{DICOM}; transfer-syntax={ts}", headers=headers)
    boundary = mw.new_boundary()
    ctypes = [f"{DICOM}; transfer-syntax={ts}" for ts in targets]
    parts = (mw.PartSpec(ct, head if i == 0 else body_of(i)) for i, ct in enumerate(ctypes))
    if first is not None or any(ts != r.transfer_syntax_uid for r, ts in zip(records, targets, strict=True)):
        return StreamingResponse(mw.stream_parts(boundary, parts), media_type=mw.content_type(boundary, DICOM))
    # Stored bytes only: the body's length is known before the first byte is read.
    length = mw.body_length(boundary, ((ct, r.blob.size) for ct, r in zip(ctypes, records, strict=True)))
    return StreamingResponse(mw.stream_parts_async(boundary, parts), media_type=mw.content_type(boundary, DICOM),
                             headers={"Content-Length": str(length)})


@router.get("/studies/{study}", summary="Retrieve a study")
def retrieve_study(request: Request, study: str, _who: Principal = read_scope) -> Response:
    return _retrieve(request, study, None, None)


@router.get("/studies/{study}/series/{series}", summary="Retrieve a series")
def retrieve_series(request: Request, study: str, series: str, _who: Principal = read_scope) -> Response:
    return _retrieve(request, study, series, None)


@router.get("/studies/{study}/series/{series}/instances/{sop}", summary="Retrieve an instance")
def retrieve_instance(request: Request, study: str, series: str, sop: str, _who: Principal = read_scope) -> Response:
    return _retrieve(request, study, series, sop)


# -- metadata --------------------------------------------------------------------------------------------------


def _metadata(request: Request, study: str, series: str | None, sop: str | None) -> Response:
    accept = neg.parse_accept(request.headers.get("accept"))
    if accept and not any(a.inner in (DICOM_JSON, "application/json", "*/*", "application/*", "*")
                          or a.media in ("*/*", "application/*") for a in accept):
        raise not_acceptable("metadata (application/dicom+json)")
    svc = services(request).metadata
    base = base_url(request)
    body = svc.document(study, series, sop, base, max_instances=EAGER_METADATA)
    if body is not None:
        return Response(body, media_type=DICOM_JSON)
    return StreamingResponse(svc.array_chunks(svc.documents(study, series, sop), base, study), media_type=DICOM_JSON)


@router.get("/studies/{study}/metadata", summary="Study metadata")
def study_metadata(request: Request, study: str, _who: Principal = read_scope) -> Response:
    return _metadata(request, study, None, None)


@router.get("/studies/{study}/series/{series}/metadata", summary="Series metadata")
def series_metadata(request: Request, study: str, series: str, _who: Principal = read_scope) -> Response:
    return _metadata(request, study, series, None)


@router.get("/studies/{study}/series/{series}/instances/{sop}/metadata", summary="Instance metadata")
def instance_metadata(request: Request, study: str, series: str, sop: str, _who: Principal = read_scope) -> Response:
    return _metadata(request, study, series, sop)


# -- frames ----------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class FramePlan:
    """How frames are answered: stored bytes or decoded native bytes, in which media type, single part or not."""

    decode: bool
    content_type: str
    multipart: bool


def plan_frames(accept: list[neg.Acceptable], stored_ts: str, count: int) -> FramePlan:
    stored_media, stored_label = neg.frame_media(stored_ts)
    stored_ct = f"{stored_media}; transfer-syntax={stored_label}"
    native_ct = f"{OCTET}; transfer-syntax={neg.EXPLICIT_LE}"
    decodable = stored_media == OCTET or pixels.can_decode(stored_ts)

    def default(multipart: bool) -> FramePlan:
        if stored_media == OCTET:
            return FramePlan(False, stored_ct, multipart)
        if neg.default_syntax(stored_ts, decodable) == neg.EXPLICIT_LE:
            return FramePlan(True, native_ct, multipart)
        return FramePlan(False, stored_ct, multipart)

    if not accept:
        return default(True)
    for a in accept:
        multipart = a.multipart or count > 1
        if a.inner in ("", "*", "*/*") or a.media in ("*/*", "multipart/*"):
            return default(True)  # the standard's default representation is multipart
        ts = a.transfer_syntax
        if a.matches(stored_media) and (ts in (None, "*", stored_label, stored_ts)):
            return FramePlan(False, stored_ct, multipart)
        if a.matches(OCTET) and stored_media != OCTET:
            if ts == "*":
                return FramePlan(False, stored_ct, multipart)  # what OHIF asks for: any syntax, as stored
            if ts in (None, neg.EXPLICIT_LE) and decodable:
                return FramePlan(True, native_ct, multipart)
    raise not_acceptable("frames")


def _frame_reader(request: Request, record: InstanceRecord, plan: FramePlan) -> Callable[[int], bytes]:
    retrieve = services(request).retrieve
    if plan.decode:
        return lambda n: pixels.native_frame_bytes(retrieve, record, n)
    return lambda n: retrieve.frame(record, n)


@router.get("/studies/{study}/series/{series}/instances/{sop}/frames/{frames}", summary="Retrieve frames")
def retrieve_frames(request: Request, study: str, series: str, sop: str, frames: str,
                    _who: Principal = read_scope) -> Response:
    numbers = parse_frame_list(frames)
    record = services(request).retrieve.instance(study, series, sop)
    if record.rows is None and record.frame_index is None:
        raise NotFound("the instance has no pixel data frames")
    total = record.number_of_frames or 1
    missing = [n for n in numbers if n > total]
    if missing:
        raise NotFound(f"frame {missing[0]} does not exist (the instance has {total})")
    plan = plan_frames(neg.parse_accept(request.headers.get("accept")), record.transfer_syntax_uid, len(numbers))
    read = _frame_reader(request, record, plan)
    if not plan.multipart:
        return Response(read(numbers[0]), media_type=plan.content_type)
    boundary = mw.new_boundary()
    ctype = mw.content_type(boundary, plan.content_type)
    if len(numbers) <= EAGER_FRAMES:
        data = [read(n) for n in numbers]
        body = b"".join(mw.stream_parts(boundary, (mw.PartSpec(plan.content_type, [d]) for d in data)))
        return Response(body, media_type=ctype)

    def lazy(n: int) -> Iterator[bytes]:
        yield read(n)
    head = read(numbers[0])  # fails (not restored, store down) before the response starts, like _primed
    parts = (mw.PartSpec(plan.content_type, iter([head]) if i == 0 else lazy(n)) for i, n in enumerate(numbers))
    return StreamingResponse(mw.stream_parts(boundary, parts), media_type=ctype)


# -- bulk data -------------------------------------------------------------------------------------------------


def _parse_range(header: str, size: int) -> tuple[int, int] | None:
    """``bytes=a-b`` / ``bytes=a-`` / ``bytes=-n`` → (offset, length); None if unsatisfiable or multi-range."""
    m = re.fullmatch(r"\s*bytes\s*=\s*(\d*)\s*-\s*(\d*)\s*", header)
    if not m or (not m.group(1) and not m.group(2)):
        return None
    if not m.group(1):
        n = min(int(m.group(2)), size)
        return (size - n, n) if n > 0 else None
    start = int(m.group(1))
    end = min(int(m.group(2)), size - 1) if m.group(2) else size - 1
    if start >= size or end < start:
        return None
    return start, end - start + 1


def _single_bulk(request: Request, value: pixels.BulkValue) -> Response:
    size = value.size
    ctype = f"{OCTET}; transfer-syntax={neg.EXPLICIT_LE}"
    rng = request.headers.get("range")
    if rng:
        span = _parse_range(rng, size)
        if span is None:
            value.close()
            return error_response(416, "requested range not satisfiable", {"Content-Range": f"bytes */{size}"})
        start, length = span
        return StreamingResponse(value.chunks(start, length), status_code=206, media_type=OCTET, headers={
            "Content-Range": f"bytes {start}-{start + length - 1}/{size}", "Content-Length": str(length)})
    accept = neg.parse_accept(request.headers.get("accept"))
    if accept and not accept[0].multipart and accept[0].matches(OCTET) and accept[0].inner != "*/*":
        return StreamingResponse(value.chunks(0, size), media_type=OCTET, headers={"Content-Length": str(size)})
    boundary = mw.new_boundary()
    return StreamingResponse(mw.stream_parts(boundary, [mw.PartSpec(ctype, value.chunks(0, size))]),
                             media_type=mw.content_type(boundary, OCTET))


def parse_bulk_path(value: str) -> tuple[list[tuple[int, int]], int]:
    """``<tag>`` or ``<seq>/<item>/…/<tag>`` → ([(seq tag, item index), …], tag); raises ``InvalidQuery``."""
    segments = value.strip("/").split("/")
    if len(segments) % 2 != 1 or not all(_TAG_RE.match(t) for t in segments[::2]) \
            or not all(i.isdigit() for i in segments[1::2]):
        raise InvalidQuery("bulk data is addressed by an 8-digit hexadecimal tag (nested: <seq>/<item>/<tag>)")
    path = [(int(segments[i], 16), int(segments[i + 1])) for i in range(0, len(segments) - 1, 2)]
    return path, int(segments[-1], 16)


@router.get("/studies/{study}/series/{series}/instances/{sop}/bulk/{tag:path}", summary="Retrieve bulk data")
def retrieve_bulk(request: Request, study: str, series: str, sop: str, tag: str,
                  _who: Principal = read_scope) -> Response:
    path, number = parse_bulk_path(tag)
    svc = services(request).retrieve
    record = svc.instance(study, series, sop)
    if path:
        return _single_bulk(request, pixels.bytes_value(pixels.nested_value(svc, record, path, number)))
    if number not in _PIXEL_TAGS or svc.is_deflated(record):
        return _single_bulk(request, pixels.bulk_value(svc, record, number))
    index = record.frame_index
    if record.rows is None and index is None:
        raise NotFound("the instance has no pixel data")
    problem = svc.pixel_problem(record)
    if problem is not None:  # before the response starts: a clear error, not a body cut short
        raise DamagedPixelData(problem)
    if record.original is not None:  # compressed at rest: the native value the metadata describes
        return _single_bulk(request, pixels.original_pixel_value(svc, record))
    span = index.pixel_span() if index is not None else None
    if span is not None:
        return _single_bulk(request, pixels.native_pixel_value(svc, record, *span))
    plan = plan_frames([neg.Acceptable("multipart/related", OCTET, "*", 1.0)], record.transfer_syntax_uid, 2)
    read = _frame_reader(request, record, plan)
    boundary = mw.new_boundary()

    def lazy(n: int) -> Iterator[bytes]:
        yield read(n)
    head = read(1)  # fails (not restored, store down) before the response starts
    parts = (mw.PartSpec(plan.content_type, iter([head]) if n == 1 else lazy(n))
             for n in range(1, (record.number_of_frames or 1) + 1))
    return StreamingResponse(mw.stream_parts(boundary, parts), media_type=mw.content_type(boundary, plan.content_type))

router.include_router(wado_render.router)
