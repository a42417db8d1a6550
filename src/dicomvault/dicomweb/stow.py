"""STOW-RS (PS3.18 10.5): ``POST /studies`` and ``POST /studies/{study}``.

Each body part is spooled as it arrives and handed to ``IngestService.ingest`` in a worker thread; the response
is sent only after every part's ingest returned, i.e. after each stored object is durable and indexed.

Request: ``multipart/related; type="application/dicom"; boundary=…`` (parts ``application/dicom``, or without a
Content-Type), or a single ``application/dicom`` body. Anything else: 415.

Response (``application/dicom+json``, Store Instances Response Module, PS3.18 Annex I): RetrieveURL (0008,1190) of
the study when all stored instances belong to one study; ReferencedSOPSequence (0008,1199) with
ReferencedSOPClassUID, ReferencedSOPInstanceUID, RetrieveURL (and WarningReason when there is a warning);
FailedSOPSequence (0008,1198) with the UIDs when known, FailureReason (0008,1197) and the reason as text in
Error Comment (0000,0902), LO, at most 64 characters like a DIMSE Error Comment, no patient data (the text of the
domain error: "PatientID is missing", "the object is truncated: …"). Each failed part is also logged at INFO
with its position in the request, the Failure Reason and the full reason text (never a UID).

Failure Reason values (PS3.18 Table I.2-2, implementation-specific values in the standard's ranges), one table
(``stow_status.FAILURE_REASON``) from the type of the domain error ingest raised, the same verdicts as C-STORE's:
- ``0xA700`` (42752) out of resources: the index or storage is unavailable, or the disk is full (retry later);
- ``0xA701`` (42753) refused, out of resources: the object exceeds a configured limit (a deflated data set inflating
  beyond ``max_inflated_bytes`` or ``max_inflate_ratio``); permanent until the limit is raised;
- ``0xA900`` (43264) data set does not match SOP class: a required identifying UID is missing or invalid
  (``InvalidIdentity``), or native pixel data is shorter than Rows × Columns × Samples × Bits Allocated × Frames
  describes (``DamagedPixelData``);
- ``0xA901`` (43265) the instance's Study Instance UID differs from the study in the request URL;
- ``0xC000`` (49152) cannot understand: the part is not a DICOM object or is empty (``NotDicom``), is truncated or
  malformed (``MalformedDicom``), or is not ``application/dicom``;
- ``0x0111`` (273) duplicate SOP instance: different content under a stored SOP Instance UID and the duplicate
  policy is ``reject``;
- ``0x0110`` (272) processing failure: anything unexpected.
Warning Reason: ``0xB000`` (45056) coercion: the instance replaced (policy ``replace``) or superseded (policy
``keep-both``) earlier content with the same SOP Instance UID; ``0xB007`` (45063) data set does not match SOP class:
stored under ``pixel_length_policy = accept-and-flag`` although its pixel data is short. Re-sending identical
content is a plain success. A failed or warned item also carries the reason as text in Error Comment (0000,0902),
the attribute a C-STORE response gives the same reason in (no patient data).

A failed part is named in FailedSOPSequence by the UIDs the domain error carries (read while parsing it); only
when it carries none (an object too broken to read them) are they looked for in the part again (``identity``).

HTTP status: 200 all stored; 202 some failed or warnings; 409 none stored (503 if every failure was 0xA700, a
reason to retry later; never for 0xA701);
400 malformed/truncated multipart with nothing stored (with something stored: 202 and a ``Warning`` header);
413 body over ``max_upload_bytes`` (checked on Content-Length before reading, and while streaming a chunked body;
the rest of the body is then read and discarded for at most ``http_header_timeout`` seconds, so that a client
that writes its whole body before reading gets the answer instead of a connection reset); 415 wrong media type.

Parts are spooled to ``<data_dir>/spool`` (``prepare_spool``), never to the system temporary folder.
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool
from starlette.requests import ClientDisconnect

from dicomvault.dicomweb.errors import error_response, report_unexpected
from dicomvault.dicomweb.multipart import MultipartError, Part, iter_parts, parse_media_type, read_single
from dicomvault.dicomweb.security import Principal, require_scope
from dicomvault.dicomweb.stow_status import (
    CANNOT_UNDERSTAND,
    OUT_OF_RESOURCES,
    PROCESSING_FAILURE,
    RETRY_LATER,
    WARNING_COERCION,
    WARNING_DATASET_MISMATCH,
    failure_reason,
)
from dicomvault.domain.errors import DicomVaultError, WrongStudy
from dicomvault.domain.records import StoreOutcome
from dicomvault.services.header import identity

if TYPE_CHECKING:
    from dicomvault.services.ingest import IngestService

log = logging.getLogger(__name__)
router = APIRouter(tags=["STOW-RS"])

DICOM_JSON = "application/dicom+json"
#: parts stored concurrently within one request
PIPELINE = 4


@dataclass
class PartResult:
    sop_class_uid: str | None = None
    sop_instance_uid: str | None = None
    study_uid: str | None = None
    failure: int | None = None
    warning: int | None = None
    #: why it failed or was stored with a warning, without patient data (the domain error's message); empty for a
    #: part stored without a warning
    reason: str = ""


def prepare_spool(data_dir: Path) -> Path:
    """Create (if needed) and return ``<data_dir>/spool``, where STOW-RS parts larger than the in-memory spool
    go (as unnamed files: nothing is left behind by a crash)."""
    folder = Path(data_dir) / "spool"
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def error_comment(reason: str) -> str:
    """``reason`` as an Error Comment (LO): printable ASCII without backslash, at most 64 characters."""
    text = re.sub(r"\s+", " ", reason).strip().replace("\\", "/")
    text = "".join(c if " " <= c <= "~" else "?" for c in text)
    return text if len(text) <= 64 else text[:61].rstrip() + "..."


def store_part(ingest: IngestService, part: Part, target_study: str | None,
               source: str = "stow:anonymous") -> PartResult:
    """Store one part (blocking: runs in a worker thread); never raises for a bad instance."""
    ctype = part.content_type
    if ctype not in ("", "application/dicom"):
        cls, sop, study = identity(part.file)
        return PartResult(cls, sop, study, failure=CANNOT_UNDERSTAND, reason=f"part of type {ctype} is not DICOM")
    stream = cast("Any", part.file)
    try:
        res = ingest.ingest(stream, source=source, target_study=target_study)
    except WrongStudy as exc:  # the response names the study the part belongs to
        return PartResult(exc.sop_class_uid or None, exc.sop_instance_uid or None, exc.study_uid or None,
                          failure=failure_reason(exc), reason=exc.message)
    except DicomVaultError as exc:
        cls, sop = _named(exc, part)
        return PartResult(cls, sop, failure=failure_reason(exc), reason=exc.message)
    except OSError as exc:
        log.error("STOW-RS part not stored: %s", type(exc).__name__)
        cls, sop, study = identity(part.file)
        cause = os.strerror(exc.errno) if exc.errno else type(exc).__name__
        return PartResult(cls, sop, study, failure=OUT_OF_RESOURCES, reason=f"storage error: {cause}")
    except Exception as exc:
        error_id = report_unexpected(exc, "STOW-RS part")
        cls, sop, study = identity(part.file)
        return PartResult(cls, sop, study, failure=PROCESSING_FAILURE,
                          reason=f"unexpected {type(exc).__name__} (error id {error_id})")
    if res.pixel_problem is not None:
        return PartResult(res.sop_class_uid, res.sop_instance_uid, res.study_uid,
                          warning=WARNING_DATASET_MISMATCH, reason=res.pixel_problem)
    warning = WARNING_COERCION if res.outcome in (StoreOutcome.REPLACED, StoreOutcome.VERSIONED) else None
    return PartResult(res.sop_class_uid, res.sop_instance_uid, res.study_uid, warning=warning, reason=res.warning or "")


def _named(exc: DicomVaultError, part: Part) -> tuple[str | None, str | None]:
    """(SOP Class UID, SOP Instance UID) naming a refused part: those the error carries (``InvalidDicom`` and
    ``Conflict`` do once ingest could read them), else whatever can still be read from the part."""
    cls = getattr(exc, "sop_class_uid", "") or None
    sop = getattr(exc, "sop_instance_uid", "") or None
    if cls is None or sop is None:
        read_cls, read_sop, _ = identity(part.file)
        cls, sop = cls or read_cls, sop or read_sop
    return cls, sop


def _ui(value: str | None) -> dict[str, Any]:
    return {"vr": "UI", "Value": [value]} if value else {"vr": "UI"}


def response_body(results: list[PartResult], base: str, target_study: str | None) -> dict[str, Any]:
    """The Store Instances Response Module as DICOM JSON."""
    referenced: list[dict[str, Any]] = []
    failed: list[dict[str, Any]] = []
    studies: set[str] = set()
    for r in results:
        if r.failure is not None:
            failure: dict[str, Any] = {"00081150": _ui(r.sop_class_uid), "00081155": _ui(r.sop_instance_uid),
                                       "00081197": {"vr": "US", "Value": [r.failure]}}
            if r.reason:
                failure["00000902"] = {"vr": "LO", "Value": [error_comment(r.reason)]}
            failed.append(failure)
            continue
        assert r.study_uid is not None
        studies.add(r.study_uid)
        item: dict[str, Any] = {
            "00081150": _ui(r.sop_class_uid),
            "00081155": _ui(r.sop_instance_uid),
            "00081190": {"vr": "UR", "Value": [f"{base}/studies/{r.study_uid}/instances/{r.sop_instance_uid}"]},
        }
        if r.warning is not None:
            item["00081196"] = {"vr": "US", "Value": [r.warning]}
            if r.reason:
                item["00000902"] = {"vr": "LO", "Value": [error_comment(r.reason)]}
        referenced.append(item)
    body: dict[str, Any] = {}
    study = target_study or (next(iter(studies)) if len(studies) == 1 else None)
    body["00081190"] = {"vr": "UR", "Value": [f"{base}/studies/{study}"]} if study else {"vr": "UR"}
    if failed:
        body["00081198"] = {"vr": "SQ", "Value": failed}
    body["00081199"] = {"vr": "SQ", "Value": referenced}
    return body


def http_status(results: list[PartResult]) -> int:
    failures = [r.failure for r in results if r.failure is not None]
    if not failures:
        return 202 if any(r.warning is not None for r in results) else 200
    if len(failures) < len(results):
        return 202
    return 503 if all(f in RETRY_LATER for f in failures) else 409


async def _parts(request: Request, max_bytes: int | None) -> Any:
    """The request's parts (async iterator), or an error response for a wrong media type."""
    spool_dir: Path | None = getattr(request.app.state, "spool_dir", None)
    media, params = parse_media_type(request.headers.get("content-type", ""))
    if media == "application/dicom":
        part = await read_single(request.stream(), {"content-type": "application/dicom"}, max_bytes=max_bytes,
                                 spool_dir=spool_dir)

        async def one() -> Any:
            yield part

        return one()
    if media != "multipart/related":
        return error_response(415, "STOW-RS accepts multipart/related; type=\"application/dicom\" or "
                                   "application/dicom")
    root_type = params.get("type", "application/dicom").strip().lower()
    if root_type != "application/dicom":
        return error_response(415, f"multipart/related type {root_type!r} is not supported "
                                   "(only application/dicom parts)")
    return iter_parts(request.stream(), params.get("boundary", ""), max_bytes=max_bytes, spool_dir=spool_dir)


async def _stored(ingest: IngestService, part: Part, target_study: str | None, source: str) -> PartResult:
    try:
        return await run_in_threadpool(store_part, ingest, part, target_study, source)
    finally:
        part.close()


def stow_source(who: Principal) -> str:
    """What the index records as the sender of a STOW-RS part: ``stow:<token name | OIDC subject | anonymous>``
    (lifecycle rules select by it: ``source = "<client>"``; ``instances.source`` holds 128 characters)."""
    return f"stow:{who.name}"[:128]


async def _store(request: Request, target_study: str | None, who: Principal) -> JSONResponse:
    archive = request.app.state.archive
    max_bytes = archive.settings.max_upload_bytes or None
    declared = request.headers.get("content-length")
    if max_bytes and declared and declared.isdigit() and int(declared) > max_bytes:
        return error_response(413, f"request body exceeds the limit of {max_bytes} bytes")
    base = str(request.base_url).rstrip("/") + "/dicom-web"
    # Up to PIPELINE parts are stored concurrently while the next ones arrive (their fsyncs overlap); results keep
    # the request's order. Memory stays bounded: at most PIPELINE spooled parts are held at once.
    pending: list[asyncio.Task[PartResult]] = []
    results: list[PartResult] = []
    problem: MultipartError | None = None
    try:
        parts = await _parts(request, max_bytes)
        if isinstance(parts, JSONResponse):
            return parts
        async for part in parts:
            if len(pending) >= PIPELINE:
                results.append(await pending.pop(0))
            pending.append(asyncio.create_task(_stored(archive.ingest, part, target_study, stow_source(who))))
    except MultipartError as exc:
        problem = exc
    except ClientDisconnect:
        log.info("STOW-RS client disconnected after %d part(s)", len(results) + len(pending))
        return error_response(400, "client disconnected before the request body was complete")
    finally:
        # Every started store completes before we answer (or give up): never acknowledge or drop half-done work.
        results += [await t for t in pending]
        pending.clear()
    for position, r in enumerate(results, 1):
        if r.failure is not None:
            log.info("STOW-RS part %d of %d not stored: %s (Failure Reason 0x%04X)", position, len(results),
                     r.reason, r.failure)
    if problem is not None and not any(r.failure is None for r in results):
        return error_response(problem.status, problem.message)
    if not results:
        return error_response(400, "the request contains no DICOM part")
    headers = {}
    if problem is not None:
        headers["Warning"] = f'299 dicomvault "{problem.message}; {len(results)} part(s) processed"'
    status = http_status(results)
    if problem is not None and status == 200:
        status = 202
    if status == 503:
        headers["Retry-After"] = "5"
    return JSONResponse(response_body(results, base, target_study), status_code=status, media_type=DICOM_JSON,
                        headers=headers)


@router.post("/studies", summary="Store instances (STOW-RS)")
async def store_instances(request: Request, who: Principal = Depends(require_scope("write"))) -> JSONResponse:
    return await _store(request, None, who)


@router.post("/studies/{study}", summary="Store instances of one study (STOW-RS)")
async def store_study_instances(
    study: str, request: Request, who: Principal = Depends(require_scope("write"))
) -> JSONResponse:
    return await _store(request, study.strip(), who)
