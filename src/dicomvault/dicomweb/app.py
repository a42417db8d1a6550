"""ASGI application factory: routers, middleware and exception handlers over one ``Archive``.

DICOMweb lives under ``/dicom-web`` (STOW-RS, QIDO-RS, WADO-RS, DELETE), WADO-URI at ``/wado``; ``/healthz``
and ``/readyz`` are the probes; ``/openapi.json`` describes the API (``read`` scope). There is no ``/docs`` page:
FastAPI's Swagger UI page loads its script and style from a CDN, which an archive on a hospital network must not
depend on, and no pinned package ships the Swagger UI assets (the OpenAPI document works with any local tool).
Middleware, outermost first: CORS (when ``cors_origins`` is set; answers preflight ``OPTIONS`` and allows the
``Authorization`` header), then the audit log / last-resort 500, then the Host header check (``hosts``).

STOW-RS bodies are spooled to ``<data_dir>/spool`` (created here), not the system temporary folder: that may be
a small RAM-backed tmpfs, and the data folder is where the administrator provisioned space.
"""

from __future__ import annotations

from fastapi import Depends, FastAPI
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import JSONResponse

from dicomvault import __version__
from dicomvault.dicomweb import admin, delete, errors, metrics, qido, stow, wado, wado_uri
from dicomvault.dicomweb.hosts import HostCheckMiddleware, HostPolicy
from dicomvault.dicomweb.security import AuditMiddleware, AuthPolicy, Principal, require_scope
from dicomvault.domain.errors import DicomVaultError
from dicomvault.services.archive import Archive

BASE_PATH = "/dicom-web"


def create_app(archive: Archive) -> FastAPI:
    """Build the HTTP app; raises ``ConfigurationError`` for unsafe settings (an unauthenticated archive on a public
    address, an OIDC issuer without audience, an invalid scope mapping)."""
    auth = AuthPolicy.from_settings(archive.settings, archive.tokens, archive.sessions)
    hosts = HostPolicy.from_settings(archive.settings)
    app = FastAPI(title="DicomVault", version=__version__, docs_url=None, redoc_url=None, openapi_url=None)
    app.state.archive = archive
    app.state.auth = auth
    app.state.spool_dir = stow.prepare_spool(archive.settings.data_dir)
    app.state.qido_keyset = qido.KeysetCache()
    errors.install(app)
    for module in (stow, qido, wado, delete):
        app.include_router(module.router, prefix=BASE_PATH)
    # WADO-URI has its own root (``/wado``, the viewer's wadoUriRoot): its router carries the full path.
    app.include_router(wado_uri.router)
    app.include_router(admin.router)  # /admin/…: the admin scope, outside the DICOMweb root
    app.include_router(metrics.router)  # /metrics: Prometheus

    app.add_middleware(HostCheckMiddleware, policy=hosts)
    app.add_middleware(AuditMiddleware)
    if archive.settings.cors_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=archive.settings.cors_origins,
            allow_methods=["GET", "POST", "DELETE", "OPTIONS"],
            allow_headers=["Authorization", "Accept", "Content-Type", "Range"],
            expose_headers=["Warning", "Content-Location", "Content-Length", "Content-Type"],
            max_age=600,
        )

    @app.get("/openapi.json", include_in_schema=False)
    def openapi(_who: Principal = Depends(require_scope("read"))) -> JSONResponse:
        """The OpenAPI description: it names every route, so it needs the read scope like the routes do."""
        return JSONResponse(app.openapi())

    @app.get("/healthz", include_in_schema=False)
    def healthz() -> dict[str, str]:
        """Liveness: the process answers."""
        return {"status": "ok"}

    @app.get("/readyz", include_in_schema=False)
    def readyz() -> JSONResponse:
        """Readiness: the index answers and the blob store is reachable."""
        try:
            archive.status.ping()
        except DicomVaultError as exc:
            return JSONResponse({"status": "unavailable", "message": exc.message}, status_code=503)
        return JSONResponse({"status": "ready", "storage": archive.status.storage()})

    return app
