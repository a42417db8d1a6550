"""Every error leaves the HTTP front end as JSON ``{"error": message, "status": code}``.

Domain errors map through one table; Starlette's HTTP errors (404 unknown route, 405, 401/403 from security) and
FastAPI's validation errors (as 400, the status PS3.18 gives a malformed request) are rewritten to the same body.
Unexpected exceptions are answered by ``AuditMiddleware`` (see ``security``), and domain errors that map to a
500 by the handler here, with the exception type and an error id, never the exception text (it could carry patient
data); ``report_unexpected`` logs the same id with the type and the code location at ERROR, so no 500 leaves its
cause only in a traceback.
"""

from __future__ import annotations

import json
import logging
import secrets
import traceback
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import Scope

from dicomvault.domain import errors as e
from dicomvault.domain.trash import RetentionHeld

STATUS: dict[type[e.DicomVaultError], int] = {
    e.NotFound: 404,
    # The request is valid but what it asks for cannot be produced from this stored object: its pixel data is
    # shorter than its header describes, or producing it would exceed a configured limit (the message names the
    # problem or the limit; the object itself stays retrievable as stored).
    e.DamagedPixelData: 422,
    e.TooLarge: 422,
    e.InvalidDicom: 400,
    e.InvalidQuery: 400,
    e.Conflict: 409,
    e.Unsupported: 406,
    e.Unavailable: 503,
    e.IntegrityFailure: 500,
    e.PermissionDenied: 403,
    e.Unauthenticated: 401,
}

#: 503 answers that say when to come back and why, beyond ``{"error", "status"}``: ``Retry-After`` is the error's
#: ``retry_after`` and ``reason`` tells the client (or its operator) what to do. An object on an archive storage
#: class that is not restored comes back only after a recall; a restore already under way says so (``restoring``).
RETRY_REASONS: dict[type[e.Unavailable], str] = {
    e.NotRestored: "archived on a cold storage class; recall it: POST /admin/studies/{study}/recall (admin scope) "
                   "or `dicomvault recall STUDY_UID`, then retry once the restore completes",
}

log = logging.getLogger(__name__)

_REASONS = {404: "not found", 405: "method not allowed", 401: "authentication required", 403: "forbidden"}


def status_for(exc: e.DicomVaultError) -> int:
    for cls in type(exc).__mro__:
        if cls in STATUS:
            return STATUS[cls]
    return 500


def error_response(status: int, message: str, headers: dict[str, str] | None = None,
                   **extra: Any) -> JSONResponse:
    return JSONResponse({"error": message, "status": status, **extra}, status_code=status, headers=headers)


def unavailable_response(exc: e.DicomVaultError) -> JSONResponse:
    """The 503 of an ``Unavailable``: ``Retry-After`` 5 s (a backend hiccup), or the error's own delay and a
    ``reason`` for the kinds in ``RETRY_REASONS``."""
    for cls in type(exc).__mro__:
        reason = RETRY_REASONS.get(cls)
        if reason is not None:
            retry_after = int(getattr(exc, "retry_after", 5))
            return error_response(503, exc.message, {"Retry-After": str(retry_after)}, reason=reason,
                                  retry_after=retry_after, restoring=bool(getattr(exc, "restoring", False)))
    return error_response(503, exc.message, {"Retry-After": "5"})


def validation_message(errors: list[Any]) -> str:
    """FastAPI's validation errors as one sentence naming the parameter (never echoing the input value)."""
    parts = []
    for err in errors:
        loc = [str(x) for x in err.get("loc", ()) if x not in ("query", "path", "header", "body")]
        where = ".".join(loc) or "request"
        parts.append(f"{where}: {err.get('msg', 'invalid')}")
    return "invalid request: " + "; ".join(parts) if parts else "invalid request"


def route_template(scope: Scope) -> str:
    """The matched route's path with parameters as ``{name}`` (no UIDs in logs)."""
    if scope.get("route") is None:
        return "(unrouted)"
    by_value = {str(v): k for k, v in (scope.get("path_params") or {}).items()}
    return "/".join("{" + by_value[seg] + "}" if seg in by_value else seg
                    for seg in str(scope.get("path", "")).split("/"))


def raise_site(exc: BaseException) -> str:
    """Where ``exc`` was raised, as ``module:line``; when that is library code, also the last DicomVault frame on
    the way (``numpy.core.foo:12 via dicomvault.services.render:88``)."""
    frames = [(f.f_globals.get("__name__", "?"), line) for f, line in traceback.walk_tb(exc.__traceback__)]
    if not frames:
        return "unknown location"
    module, line = frames[-1]
    site = f"{module}:{line}"
    if not str(module).startswith("dicomvault."):
        own = [f"{m}:{n}" for m, n in frames if str(m).startswith("dicomvault.")]
        if own:
            site += f" via {own[-1]}"
    return site


def report_unexpected(exc: BaseException, where: str) -> str:
    """Log an exception no handler expected, at ERROR without its text; returns the error id told to the client.

    The line (``unhandled ValueError at dicomvault.services.frames:88 on GET /dicom-web/... (error id …)``) says
    what and where without patient data; the message and the traceback follow at DEBUG."""
    error_id = secrets.token_hex(6)
    log.error("unhandled %s at %s on %s (error id %s)", type(exc).__name__, raise_site(exc), where, error_id)
    log.debug("error id %s: %s", error_id, exc, exc_info=exc)
    return error_id


def unexpected_body(exc: BaseException, error_id: str, status: int = 500) -> bytes:
    """The JSON body of a 500 for ``exc``: its type and the error id of the log line, not its text."""
    return json.dumps({
        "error": f"internal error: unexpected {type(exc).__name__} (error id {error_id}; the server log has the "
                 "location)",
        "status": status, "error_id": error_id, "exception": type(exc).__name__,
    }).encode()


def install(app: FastAPI) -> None:
    @app.exception_handler(e.DicomVaultError)
    async def _domain(request: Request, exc: e.DicomVaultError) -> Response:
        status = status_for(exc)
        if status >= 500 and status != 503:
            error_id = report_unexpected(exc, f"{request.method} {route_template(request.scope)}")
            return Response(unexpected_body(exc, error_id, status), status_code=status,
                            media_type="application/json")
        if status == 503:
            return unavailable_response(exc)
        if isinstance(exc, RetentionHeld):  # a 409 a client cannot resolve by sending something else
            return error_response(status, exc.message, reason="retention_min_days")
        return error_response(status, exc.message)

    @app.exception_handler(StarletteHTTPException)
    async def _http(_request: Request, exc: StarletteHTTPException) -> JSONResponse:
        detail = exc.detail if isinstance(exc.detail, str) and exc.detail else _REASONS.get(exc.status_code, "error")
        if exc.status_code == 404 and detail == "Not Found":
            detail = "no such resource"
        if exc.status_code == 405 and detail == "Method Not Allowed":
            detail = "method not allowed on this resource"
        return error_response(exc.status_code, detail, dict(exc.headers or {}))

    @app.exception_handler(RequestValidationError)
    async def _validation(_request: Request, exc: RequestValidationError) -> JSONResponse:
        return error_response(400, validation_message(list(exc.errors())))
