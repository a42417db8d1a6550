"""One study's page (``/ui/studies/{uid}``): patient and study, its series with thumbnails, where the copies are,
and what can be done with it (view, download, delete).

Why thumbnails as ``<img src="/dicom-web/…/thumbnail">``: the archive renders them already (WADO-RS rendered
resources, the viewer's own thumbnails, cached), the browser sends the session cookie with them (same origin,
GET needs no anti-CSRF header) and loads them lazily, so the page answers before any image is rendered.

The delete button appears to holders of the ``delete`` scope (or ``admin``); it posts a form with the session's
anti-CSRF token and deletes as DICOMweb DELETE does: into the trash for the grace period when there is one, else at
once, refused (409 page) under the retention minimum. A share link's visitor sees only the shared study's page
(any other answers 403) and no buttons that change anything.

"Send to" (scope ``write``) queues the study for a known peer as a durable delivery (``RoutingService.send_study``):
retried with backoff, never sent twice to a destination that has it, followed in ``dicomvault routes status``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any
from urllib.parse import quote

from fastapi import APIRouter, Depends, Form
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from dicomvault.domain.errors import NotFound
from dicomvault.domain.tags import Level
from dicomvault.domain.trash import Deletion
from dicomvault.services.tiering import StoreCopies
from dicomvault.webui.page_auth import PageUser, check_csrf, require_page
from dicomvault.webui.render import render
from dicomvault.webui.studies import StudyRow, study_row
from dicomvault.webui.values import element_value, person_name, shown_bytes, shown_date

router = APIRouter(prefix="/ui", include_in_schema=False)

_STUDY_RETURN = ("PatientBirthDate", "PatientSex", "ReferringPhysicianName", "StudyTime", "StudyID")


@dataclass(frozen=True)
class SeriesRow:
    uid: str
    number: int | None
    modality: str
    description: str
    body_part: str
    date: str
    instances: int | None


@dataclass(frozen=True)
class StudyView:
    study: StudyRow
    sex: str
    referring: str
    time: str
    study_id: str
    series: list[SeriesRow]
    #: the stores holding verified copies, with counts and bytes (empty: none recorded)
    locations: list[StoreCopies]
    sources: list[str]


def series_row(item: dict[str, Any]) -> SeriesRow:
    def text(tag: str) -> str:
        value = element_value(item, tag)
        return "" if value is None else str(value)

    def number(tag: str) -> int | None:
        value = element_value(item, tag)
        try:
            return int(value) if value is not None else None
        except (TypeError, ValueError):
            return None

    return SeriesRow(uid=text("0020000E"), number=number("00200011"), modality=text("00080060"),
                     description=text("0008103E"), body_part=text("00180015"), date=shown_date(text("00080021")),
                     instances=number("00201209"))


def study_series(archive: Any, uid: str) -> list[SeriesRow]:
    """The study's series in series-number order (a study holds few: they are sorted here)."""
    spec = archive.query.build_spec(Level.SERIES, {"StudyInstanceUID": uid})
    rows = [series_row(item) for item in archive.query.search_page(spec)[0]]
    return sorted(rows, key=lambda s: (s.number is None, s.number or 0, s.uid))


def load_study(archive: Any, uid: str) -> tuple[StudyRow, dict[str, Any]]:
    """The study's row and its DICOM JSON answer; raises ``NotFound`` (``InvalidQuery`` for a malformed UID)."""
    spec = archive.query.build_spec(Level.STUDY, {"StudyInstanceUID": uid}, return_keys=_STUDY_RETURN, limit=1)
    found = archive.query.search_page(spec)[0]
    if not found:
        raise NotFound("no such study")
    return study_row(found[0]), found[0]


def study_view(archive: Any, uid: str) -> StudyView:
    study, item = load_study(archive, uid)
    tiering = archive.tiering
    return StudyView(
        study=study, sex=str(element_value(item, "00100040") or ""),
        referring=person_name(item.get("00080090")), time=_shown_time(str(element_value(item, "00080030") or "")),
        study_id=str(element_value(item, "00200010") or ""), series=study_series(archive, uid),
        locations=tiering.locations(uid) if tiering is not None else [],
        sources=tiering.sources(uid) if tiering is not None else [])


def _shown_time(value: str) -> str:
    digits = value.split(".")[0]
    if len(digits) >= 4 and digits.isdigit():
        return f"{digits[:2]}:{digits[2:4]}" + (f":{digits[4:6]}" if len(digits) >= 6 else "")
    return value


def check_study_access(user: PageUser, uid: str) -> None:
    """A share link's visitor reaches its own study only."""
    if user.principal.study is not None and user.principal.study != uid:
        raise HTTPException(403, "this link opens another study")


@router.get("/studies/{uid}")
async def study_page(request: Request, uid: str,
                     user: Annotated[PageUser, Depends(require_page("read", allow_share=True))]) -> Response:
    check_study_access(user, uid)
    archive = request.app.state.archive
    view = await run_in_threadpool(study_view, archive, uid)
    shared = user.principal.study is not None
    may_send = not shared and not user.anonymous and user.principal.allows("write") and archive.routing is not None
    peers = [p.aet for p in archive.peers.all() if p.reachable or p.dicomweb_url] if may_send else []
    return render(request, "study.html", view=view, shown_bytes=shown_bytes, peers=peers,
                  sent=request.query_params.get("sent"),
                  can_delete=not shared and not user.anonymous and user.principal.allows("delete"),
                  can_download=not shared, grace_days=archive.settings.delete_grace_days,
                  can_share=not shared and archive.shares is not None and archive.shares.may_create(user.principal))


@router.post("/studies/{uid}/delete")
async def delete_study(request: Request, uid: str, user: Annotated[PageUser, Depends(require_page("delete"))],
                       csrf_token: Annotated[str | None, Form(max_length=256)] = None) -> Response:
    check_csrf(user, csrf_token)
    check_study_access(user, uid)
    archive = request.app.state.archive
    deletion = Deletion(f"ui:{user.principal.name}", "web page delete")

    def delete() -> None:
        if archive.trash is not None:
            archive.trash.delete(uid, deletion=deletion)
        else:
            archive.lifecycle.delete(uid, deletion=deletion)

    await run_in_threadpool(delete)
    return RedirectResponse("/ui/studies?deleted=1", status_code=303)


@router.post("/studies/{uid}/send")
async def send_study(request: Request, uid: str, user: Annotated[PageUser, Depends(require_page("write"))],
                     destination: Annotated[str, Form(max_length=64)],
                     csrf_token: Annotated[str | None, Form(max_length=256)] = None) -> Response:
    check_csrf(user, csrf_token)
    check_study_access(user, uid)
    archive = request.app.state.archive
    if archive.routing is None:
        raise HTTPException(503, "this archive cannot send (no routing service)")
    queued, already = await run_in_threadpool(archive.routing.send_study, destination, uid,
                                              requested_by=f"ui:{user.principal.name}")
    note = quote(f"{queued} queued for {destination}" + (f", {already} already there or queued" if already else ""))
    return RedirectResponse(f"/ui/studies/{quote(uid)}?sent={note}", status_code=303)

