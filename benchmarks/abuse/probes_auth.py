"""Probes of who may do what over HTTP: anonymous writes and deletes on a default (loopback, no token) server, a
DNS-rebinding Host header, the API description with authentication on, and OIDC token confusion against a local
identity provider stand-in (a JWKS served on loopback, tokens signed by the campaign)."""

from __future__ import annotations

import contextlib
import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import jwt
from cryptography.hazmat.primitives.asymmetric import rsa

from benchmarks.abuse.context import Ctx
from benchmarks.abuse.harness import HOST, Result, Server, dv, free_port
from benchmarks.abuse.objects import multipart, small_ct

REBIND_HOST = "rebind.attacker.example"


def _refused(status: int) -> bool:
    return status in (400, 401, 403, 421)


def anonymous_access(ctx: Ctx, result: Result) -> None:
    """A server on its defaults (loopback, no API token): may an anonymous client store and delete, and does a
    request carrying a foreign Host header (a page in the user's browser after DNS rebinding) get through? Then,
    on the campaign's server (a token exists): is the API description still public?"""
    work = ctx.work / "anonymous"
    seed, other = small_ct(ctx.marker), small_ct(ctx.marker)  # one to delete by rebinding, one plainly
    (work / "in").mkdir(parents=True, exist_ok=True)
    (work / "in" / "seed.dcm").write_bytes(seed.data)
    (work / "in" / "other.dcm").write_bytes(other.data)
    imported = dv("import", str(work / "in"), "--data-dir", str(work / "data"))
    if imported.returncode != 0:
        raise RuntimeError(f"import of the seed failed: {imported.stderr[-300:]}")
    server = Server(work / "data", ctx.work / "anonymous-server.log")
    server.start()
    try:
        with httpx.Client(base_url=server.base_url, timeout=30) as anon:
            read = anon.get("/dicom-web/studies").status_code
            body, ctype = multipart([small_ct(ctx.marker).data])
            write = anon.post("/dicom-web/studies", content=body, headers={"Content-Type": ctype}).status_code
            rebind_read = anon.get("/dicom-web/studies", headers={"Host": REBIND_HOST}).status_code
            rebind_delete = anon.delete(f"/dicom-web/studies/{seed.study}", headers={"Host": REBIND_HOST}).status_code
            delete = anon.delete(f"/dicom-web/studies/{other.study}").status_code
    finally:
        server.stop()
    with httpx.Client(base_url=ctx.server.base_url, timeout=30) as anon:
        openapi = anon.get("/openapi.json").status_code
        docs = anon.get("/docs").status_code
    result.child("anonymous write/delete", "defect 7", _refused(write) and _refused(delete),
                 f"anonymous QIDO {read}, STOW-RS {write}, DELETE {delete} (expected: read allowed, write and "
                 "delete refused)", read=read, write=write, delete=delete)
    result.child("DNS-rebinding Host", "defect 7", _refused(rebind_read) and _refused(rebind_delete),
                 f"Host: {REBIND_HOST}: QIDO {rebind_read}, DELETE {rebind_delete}",
                 read=rebind_read, delete=rebind_delete)
    # /docs (Swagger UI, which loaded its assets from a CDN) is gone: 404 is as good as a refusal there
    result.child("API description auth", "defect 9", _refused(openapi) and (_refused(docs) or docs == 404),
                 f"with an API token configured, anonymous /openapi.json {openapi}, /docs {docs}",
                 openapi=openapi, docs=docs)


class _Idp:
    """A JWKS document on loopback and a key to sign tokens with: enough of an identity provider for the server
    to verify bearer JWTs (``oidc_jwks_url`` points here, so no discovery)."""

    def __init__(self) -> None:
        self.key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        jwk = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(self.key.public_key()))
        jwk.update(kid="campaign", use="sig", alg="RS256")
        document = json.dumps({"keys": [jwk]}).encode()
        self.port = free_port()
        self.issuer = f"http://{HOST}:{self.port}/issuer"

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(document)))
                self.end_headers()
                self.wfile.write(document)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.httpd = ThreadingHTTPServer((HOST, self.port), Handler)
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    @property
    def jwks_url(self) -> str:
        return f"http://{HOST}:{self.port}/jwks.json"

    def token(self, scope: str, audience: str) -> str:
        now = int(time.time())
        claims = {"iss": self.issuer, "sub": "campaign-user", "aud": audience, "scope": scope, "iat": now,
                  "exp": now + 600}
        return jwt.encode(claims, self.key, algorithm="RS256", headers={"kid": "campaign"})

    def close(self) -> None:
        self.httpd.shutdown()


@contextlib.contextmanager
def _oidc_server(ctx: Ctx, idp: _Idp, name: str, audience: str | None) -> Iterator[tuple[Server, int | None]]:
    env = {"DICOMVAULT_OIDC_ISSUER": idp.issuer, "DICOMVAULT_OIDC_JWKS_URL": idp.jwks_url}
    if audience:
        env["DICOMVAULT_OIDC_AUDIENCE"] = audience
    server = Server(ctx.work / name, ctx.work / f"{name}-server.log", env=env)
    refused = server.start_expecting_refusal()
    try:
        yield server, refused
    finally:
        server.stop()


def oidc_confusion(ctx: Ctx, result: Result) -> None:
    """OIDC without an identity provider of our own: (1) an issuer configured without an audience must be refused
    at start (else a token issued for another application is accepted); (2) with an audience, tokens whose scopes
    only end like DicomVault's (``calendar.read``, ``otherapi:admin``) must not grant read or admin."""
    idp = _Idp()
    try:
        with _oidc_server(ctx, idp, "oidc-no-audience", None) as (server, refused):
            if refused is not None:
                result.child("OIDC audience required", "defect 8", True,
                             f"server without oidc_audience refused to start (exit code {refused})", exit_code=refused)
            else:
                token = idp.token("read", "some-other-application")
                status = httpx.get(f"{server.base_url}/dicom-web/studies", timeout=30,
                                   headers={"Authorization": f"Bearer {token}"}).status_code
                result.child("OIDC audience required", "defect 8", status in (401, 403),
                             f"server without oidc_audience STARTED; a token for another application got QIDO "
                             f"{status}", token_for_other_app=status)
        with _oidc_server(ctx, idp, "oidc-audience", "dicomvault") as (server, refused):
            if refused is not None:
                raise RuntimeError(f"the OIDC server with an audience did not start (exit code {refused})")
            with httpx.Client(base_url=server.base_url, timeout=30) as c:
                def status(method: str, url: str, scope: str) -> int:
                    token = idp.token(scope, "dicomvault")
                    return c.request(method, url, headers={"Authorization": f"Bearer {token}"}).status_code

                calendar = status("GET", "/dicom-web/studies", "calendar.read")
                other_admin = status("DELETE", "/dicom-web/studies/1.2.826.0.1.3680043.99.1", "otherapi:admin")
                plain = status("GET", "/dicom-web/studies", "read")
        result.child("OIDC scope confusion", "defect 8", calendar in (401, 403) and other_admin in (401, 403),
                     f"'calendar.read' → QIDO {calendar}; 'otherapi:admin' → DELETE {other_admin} "
                     f"(a plain 'read' scope → QIDO {plain}, for reference)",
                     calendar_read=calendar, otherapi_admin=other_admin, plain_read=plain)
    finally:
        idp.close()
