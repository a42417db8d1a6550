"""Every error leaves the HTTP front end as JSON ``{"error": message, "status": code}``.

Domain errors map through one table; Starlette's HTTP errors (404 unknown route, 405, 401/403 from security) and
FastAPI's validation errors (as 400, the status PS3.18 gives a malformed request) are rewritten to the same body.
Unexpected exceptions are answered by ``AuditMiddleware`` (see ``security``) with a fixed message, so an exception
text that could carry patient data never reaches a client.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from dicomvault.domain import errors as e

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
}

_REASONS = {404: "not found", 405: "method not allowed", 401: "authentication required", 403: "forbidden"}


def status_for(exc: e.DicomVaultError) -> int:
    for cls in type(exc).__mro__:
        if cls in STATUS:
            return STATUS[cls]
    return 500


def error_response(status: int, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": message, "status": status}, status_code=status, headers=headers)


def validation_message(errors: list[Any]) -> str:
    """FastAPI's validation errors as one sentence naming the parameter (never echoing the input value)."""
    parts = []
    for err in errors:
        loc = [str(x) for x in err.get("loc", ()) if x not in ("query", "path", "header", "body")]
        where = ".".join(loc) or "request"
        parts.append(f"{where}: {err.get('msg', 'invalid')}")
    return "invalid request: " + "; ".join(parts) if parts else "invalid request"


def install(app: FastAPI) -> None:
    @app.exception_handler(e.DicomVaultError)
    async def _domain(_request: Request, exc: e.DicomVaultError) -> JSONResponse:
        status = status_for(exc)
        headers = {"Retry-After": "5"} if status == 503 else None
        message = exc.message if status < 500 or status == 503 else "internal error"
        return error_response(status, message, headers)

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
