"""Upload (``/ui/upload``): DICOM files or whole folders dropped on the page, and zip files.

Why files go through STOW-RS from the browser (``static/upload.js``) and not through a page endpoint: STOW-RS is
the archive's HTTP store already, with its limits, its per-object verdicts (Failure and Warning Reasons) and the
source it records (``stow:<user>``); the page sends batches of files as ``multipart/related`` with the session
cookie and the anti-CSRF header, shows a progress bar and one line per file.

Why zips come here (``POST /ui/api/upload-zip``, the zip as the request body): a browser cannot unzip without a
library. The body is spooled (bounded by ``max_upload_bytes``), then each member is inflated with limits and
ingested (``services.zip_import``); the answer is JSON, one result per member. Both need the ``write`` scope (the
navigation hides the page otherwise) and a logged-in session: anonymous visitors never store through a page.
"""

from __future__ import annotations

import logging
import tempfile
import zipfile
from dataclasses import asdict
from pathlib import Path
from typing import IO, Annotated, Any

from fastapi import APIRouter, Depends
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response

from dicomvault.services.zip_import import SPOOL_IN_MEMORY, ZipLimits, import_zip
from dicomvault.webui.page_auth import PageUser, check_csrf, require_page
from dicomvault.webui.render import render

log = logging.getLogger(__name__)
router = APIRouter(prefix="/ui", include_in_schema=False)

#: files per STOW-RS request and bytes per request the page's script aims for (a file larger than that goes alone)
BATCH_FILES = 20
BATCH_BYTES = 50 << 20
#: when ``max_upload_bytes`` is 0 (no limit), a zip and its members are still bounded by this
UNLIMITED_ZIP = 64 << 30


def zip_limits(settings: Any) -> ZipLimits:
    """A zip holds at most what one STOW-RS request may (``max_upload_bytes``), compressed or inflated."""
    limit = settings.max_upload_bytes or UNLIMITED_ZIP
    return ZipLimits(member_bytes=limit, total_bytes=limit, max_ratio=settings.max_inflate_ratio)


@router.get("/upload")
async def upload_page(request: Request, user: Annotated[PageUser, Depends(require_page("write"))]) -> Response:
    if user.principal.study is not None:
        raise HTTPException(403, "this link opens one study only")
    settings = request.app.state.archive.settings
    return render(request, "upload.html", batch_files=BATCH_FILES, batch_bytes=BATCH_BYTES,
                  max_bytes=settings.max_upload_bytes, can_store=not user.anonymous)


async def _spool_body(request: Request, limit: int, spool_dir: Path | None) -> IO[bytes]:
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit:
        raise HTTPException(413, f"the zip exceeds the limit of {limit} bytes")
    spool = tempfile.SpooledTemporaryFile(SPOOL_IN_MEMORY, dir=str(spool_dir) if spool_dir else None)  # noqa: SIM115 (returned open)
    size = 0
    try:
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                raise HTTPException(413, f"the zip exceeds the limit of {limit} bytes")
            spool.write(chunk)
        spool.seek(0)
        return spool
    except BaseException:
        spool.close()
        raise


@router.post("/api/upload-zip")
async def upload_zip(request: Request, user: Annotated[PageUser, Depends(require_page("write"))]) -> Response:
    check_csrf(user, request.headers.get("x-csrf-token"))
    if user.principal.study is not None:
        raise HTTPException(403, "this link opens one study only")
    archive = request.app.state.archive
    limits = zip_limits(archive.settings)
    spool_dir: Path | None = getattr(request.app.state, "spool_dir", None)
    try:
        spool = await _spool_body(request, limits.total_bytes, spool_dir)
    except ClientDisconnect:
        raise HTTPException(400, "the upload was interrupted") from None
    source = f"ui:{user.principal.name}"[:128]

    def run() -> list[dict[str, Any]]:
        with spool:
            return [asdict(r) for r in import_zip(archive.ingest, spool, limits, source=source,  # type: ignore[arg-type]
                                                  spool_dir=spool_dir)]

    try:
        files = await run_in_threadpool(run)
    except zipfile.BadZipFile:
        return JSONResponse({"error": "the file is not a zip file (or a damaged one)"}, status_code=400)
    counts: dict[str, int] = {}
    for f in files:
        counts[f["status"]] = counts.get(f["status"], 0) + 1
    log.info("zip upload: %d members (%s)", len(files), ", ".join(f"{k} {v}" for k, v in sorted(counts.items())))
    return JSONResponse({"files": files, "counts": counts}, headers={"cache-control": "no-store"})
