"""``/ui/admin``: the operator's pages (scope admin) — background jobs (retry, cancel), API tokens (create, shown
once; revoke), the settings in effect (read-only, secrets masked) and, once it exists, the audit trail.

Every change is a POST form carrying the session's anti-CSRF token (``check_csrf``), answered with a redirect to
the page it came from (reloading the page repeats nothing); the one exception is a new token, whose secret is shown
on the answer to the POST itself, once, with ``cache-control: no-store``: it is never stored, so no later page can
show it again. The messages after a redirect are chosen from fixed texts by a code in the URL, never taken from it.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated

from fastapi import APIRouter, Depends, Form
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from dicomvault.domain.errors import InvalidQuery
from dicomvault.ports.jobs import JobQueue, JobState
from dicomvault.services.tokens import SCOPES, TokenService, parse_expiry
from dicomvault.webui.page_auth import PageUser, check_csrf, require_page
from dicomvault.webui.render import render
from dicomvault.webui.settings_view import masked_settings

router = APIRouter(prefix="/ui/admin", include_in_schema=False)

Admin = Annotated[PageUser, Depends(require_page("admin"))]
Csrf = Annotated[str | None, Form(max_length=256)]

#: jobs listed per page
JOBS_SHOWN = 200
#: the admin pages: (path, label)
SECTIONS = (("/ui/admin/jobs", "Jobs"), ("/ui/admin/tokens", "API tokens"), ("/ui/admin/settings", "Settings"),
            ("/ui/admin/audit", "Audit"))
#: what a redirect's ``did`` code says (never text from the URL)
DONE = {"retried": "Job {n} queued again.", "cancelled": "Job {n} cancelled.", "revoked": "Token {n} revoked."}


def _jobs(request: Request) -> JobQueue:
    jobs = request.app.state.archive.jobs
    if jobs is None:
        raise HTTPException(503, "this archive has no job queue")
    return jobs


def _tokens(request: Request) -> TokenService:
    tokens = request.app.state.archive.tokens
    if not isinstance(tokens, TokenService):
        raise HTTPException(503, "this archive keeps no API tokens (no index database)")
    return tokens


def _done(did: str | None, n: int | None) -> str | None:
    return DONE[did].format(n=n) if did in DONE and n is not None else None


@router.get("")
async def admin_home(request: Request, user: Admin) -> Response:
    return render(request, "admin.html", sections=SECTIONS, section="")


# -- jobs ---------------------------------------------------------------------------------------------------


@router.get("/jobs")
async def jobs_page(request: Request, user: Admin, state: str = "", did: str | None = None,
                    job: int | None = None) -> Response:
    if state and state not in {s.value for s in JobState}:
        raise HTTPException(400, f"state: one of {', '.join(s.value for s in JobState)}")
    queue = _jobs(request)
    listed = await run_in_threadpool(queue.list, JobState(state) if state else None, JOBS_SHOWN)
    return render(request, "admin_jobs.html", sections=SECTIONS, section="/ui/admin/jobs", jobs=listed,
                  state=state, states=[s.value for s in JobState], message=_done(did, job), shown=JOBS_SHOWN)


async def _job_action(request: Request, user: PageUser, csrf_token: str | None, job_id: int, action: str,
                      back: str) -> Response:
    check_csrf(user, csrf_token)
    queue = _jobs(request)
    await run_in_threadpool(queue.retry if action == "retried" else queue.cancel, job_id)
    state = back if back in {s.value for s in JobState} else ""
    return RedirectResponse(f"/ui/admin/jobs?state={state}&did={action}&job={job_id}", status_code=303)


@router.post("/jobs/{job_id}/retry")
async def retry_job(request: Request, user: Admin, job_id: int, csrf_token: Csrf = None,
                    back: Annotated[str, Form(max_length=16)] = "") -> Response:
    return await _job_action(request, user, csrf_token, job_id, "retried", back)


@router.post("/jobs/{job_id}/cancel")
async def cancel_job(request: Request, user: Admin, job_id: int, csrf_token: Csrf = None,
                     back: Annotated[str, Form(max_length=16)] = "") -> Response:
    return await _job_action(request, user, csrf_token, job_id, "cancelled", back)


# -- API tokens ---------------------------------------------------------------------------------------------


def _tokens_page(request: Request, tokens: TokenService, *, error: str | None = None, status_code: int = 200,
                 message: str | None = None) -> Response:
    now = datetime.now(UTC)
    listed = [(t, t.state(now)) for t in tokens.all()]
    return render(request, "admin_tokens.html", status_code=status_code, sections=SECTIONS,
                  section="/ui/admin/tokens", tokens=listed, scopes=SCOPES, error=error, message=message)


@router.get("/tokens")
async def tokens_page(request: Request, user: Admin, did: str | None = None, token: int | None = None) -> Response:
    tokens = _tokens(request)
    return await run_in_threadpool(lambda: _tokens_page(request, tokens, message=_done(did, token)))


@router.post("/tokens")
async def create_token(request: Request, user: Admin, csrf_token: Csrf = None,
                       name: Annotated[str, Form(max_length=128)] = "",
                       scopes: Annotated[list[str] | None, Form()] = None,
                       expires_in: Annotated[str, Form(max_length=16)] = "") -> Response:
    check_csrf(user, csrf_token)
    tokens = _tokens(request)
    try:
        expires = parse_expiry(expires_in or None, None, datetime.now(UTC))
        record, secret = await run_in_threadpool(tokens.create, name, list(scopes or [])[:len(SCOPES)], expires)
    except InvalidQuery as exc:
        error = exc.message
        return await run_in_threadpool(lambda: _tokens_page(request, tokens, error=error, status_code=400))
    return render(request, "admin_token_created.html", sections=SECTIONS, section="/ui/admin/tokens",
                  token=record, secret=secret)


@router.post("/tokens/{token_id}/revoke")
async def revoke_token(request: Request, user: Admin, token_id: int, csrf_token: Csrf = None) -> Response:
    check_csrf(user, csrf_token)
    tokens = _tokens(request)
    await run_in_threadpool(tokens.revoke, str(token_id))
    return RedirectResponse(f"/ui/admin/tokens?did=revoked&token={token_id}", status_code=303)


# -- settings, audit ----------------------------------------------------------------------------------------


@router.get("/settings")
async def settings_page(request: Request, user: Admin) -> Response:
    settings = request.app.state.archive.settings
    config_file = getattr(settings, "config_file", None)
    return render(request, "admin_settings.html", sections=SECTIONS, section="/ui/admin/settings",
                  rows=masked_settings(settings), config_file=str(config_file) if config_file else None)


@router.get("/audit")
async def audit_page(request: Request, user: Admin) -> Response:
    return render(request, "admin_audit.html", sections=SECTIONS, section="/ui/admin/audit")
