"""Authentication and authorization against the real server: API tokens (managed through the CLI app, with
expiry), OIDC JWTs verified against a JWKS served locally (audience required, exact scope names), the anonymous
policy, CORS, the audit log and the 500 catch-all. Anonymous defaults, Host and proxy checks:
test_dw_access.py."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, cast

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from typer.testing import CliRunner

from dicomvault.bootstrap import build_archive
from dicomvault.cli.tokens import app as token_cli
from dicomvault.dicomweb.app import create_app
from dicomvault.dicomweb.security import scopes_from_claims
from dicomvault.domain.errors import ConfigurationError, IntegrityFailure
from tests.dicomweb.dw_live import DwServer, dw_settings
from tests.helpers import make_ct
from tests.oidc_provider import Provider as Issuer

runner = CliRunner()


def cli(server: DwServer, *args: str) -> str:
    extra = ["--data-dir", str(server.settings.data_dir)]
    if server.settings.index_url:
        extra += ["--index-url", server.settings.index_url]
    result = runner.invoke(token_cli, [*args, *extra])
    assert result.exit_code == 0, result.output
    return result.stdout


def stow(server: DwServer, token: str | None) -> httpx.Response:
    headers = {"Content-Type": "application/dicom"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    return httpx.post(server.dicomweb_url + "/studies", content=make_ct(), headers=headers)


def qido(server: DwServer, token: str | None) -> httpx.Response:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return httpx.get(server.dicomweb_url + "/studies", headers=headers)


def test_tokens_through_the_cli(dw_server: DwServer, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    # Loopback, no token yet: anonymous works.
    assert qido(dw_server, None).status_code == 200
    reader = cli(dw_server, "create", "viewer", "--scope", "read").strip().splitlines()[-1]
    writer = cli(dw_server, "create", "modality", "--scope", "write", "--scope", "read").strip().splitlines()[-1]
    assert reader.startswith("dv_") and writer.startswith("dv_") and reader != writer
    # A token exists: anonymous is off, at the latest once the server's cached token count expires (1 s;
    # tokens created by another process are not announced to the server).
    deadline = time.monotonic() + 3
    while (r := qido(dw_server, None)).status_code == 200 and time.monotonic() < deadline:
        time.sleep(0.1)
    assert r.status_code == 401
    assert r.headers["www-authenticate"].startswith("Bearer")
    assert r.json() == {"error": "authentication required", "status": 401}
    assert qido(dw_server, "dv_wrong").status_code == 401
    assert qido(dw_server, reader).status_code == 200
    study = stow(dw_server, writer).json()["00081190"]["Value"][0].rsplit("/", 1)[-1]
    r = httpx.get(f"{dw_server.dicomweb_url}/studies/{study}/series", headers={"Authorization": f"Bearer {reader}"})
    assert r.status_code == 200 and len(r.json()) == 1
    r = stow(dw_server, reader)
    assert r.status_code == 403 and "insufficient_scope" in r.headers["www-authenticate"]
    assert stow(dw_server, writer).status_code == 200
    r = httpx.get(dw_server.dicomweb_url + "/studies", headers={"Authorization": "Basic dXNlcjpwYXNz"})
    assert r.status_code == 401
    listing = cli(dw_server, "list")
    assert "viewer" in listing and "modality" in listing and reader not in listing
    assert "revoked token viewer" in cli(dw_server, "revoke", "viewer")
    assert qido(dw_server, reader).status_code == 401
    assert qido(dw_server, writer).status_code == 200
    failed = runner.invoke(token_cli, ["revoke", "viewer", "--data-dir", str(dw_server.settings.data_dir),
                                       *(["--index-url", dw_server.settings.index_url]
                                         if dw_server.settings.index_url else [])])
    assert failed.exit_code == 1
    bad_scope = runner.invoke(token_cli, ["create", "x", "--scope", "superuser", "--data-dir",
                                          str(dw_server.settings.data_dir)])
    assert bad_scope.exit_code == 1
    # Audit lines name the principal and the route template; secrets and UIDs never reach the log.
    audit = [r.getMessage() for r in caplog.records if r.name == "dicomvault.audit"]
    assert "GET /dicom-web/studies 200 viewer" in audit
    assert "POST /dicom-web/studies 403 viewer" in audit
    assert "GET /dicom-web/studies 401 -" in audit
    assert "GET /dicom-web/studies/{study}/series 200 viewer" in audit
    assert not any(study in line for line in audit)
    everything = "\n".join(r.getMessage() for r in caplog.records)
    assert reader not in everything and writer not in everything


def test_public_address_needs_auth(tmp_path: Path) -> None:
    archive = build_archive(dw_settings(tmp_path / "a", host="0.0.0.0"))
    try:
        with pytest.raises(ConfigurationError):
            create_app(archive)
        assert archive.tokens is not None
        archive.tokens.create("ops", ["admin"])
        create_app(archive)  # a token exists: fine
    finally:
        archive.close()


@pytest.mark.parametrize("overrides", [{"allow_anonymous": True},
                                       {"oidc_issuer": "http://127.0.0.1:9/", "oidc_audience": "dicomvault"}])
def test_public_address_with_explicit_policy_starts(tmp_path: Path, overrides: dict[str, Any]) -> None:
    archive = build_archive(dw_settings(tmp_path / "v", host="10.1.2.3", **overrides))
    try:
        assert create_app(archive) is not None
    finally:
        archive.close()


def test_anonymous_explicitly_disabled_on_loopback(make_dw_server: Callable[..., DwServer]) -> None:
    server = make_dw_server(allow_anonymous=False)
    assert qido(server, None).status_code == 401


def test_anonymous_explicitly_enabled_beside_tokens(make_dw_server: Callable[..., DwServer]) -> None:
    server = make_dw_server(allow_anonymous=True)
    assert server.archive.tokens is not None
    server.archive.tokens.create("someone", ["read"])
    assert qido(server, None).status_code == 200


# -- OIDC ------------------------------------------------------------------------------------------------------


@pytest.fixture
def issuer() -> Iterator[Issuer]:
    i = Issuer()  # the tests' local OIDC provider (tests/oidc_provider.py)
    yield i
    i.close()


def test_oidc_bearer_tokens(make_dw_server: Callable[..., DwServer], issuer: Issuer) -> None:
    server = make_dw_server(oidc_issuer=issuer.url, oidc_audience="dicomvault")  # JWKS found by discovery
    assert qido(server, None).status_code == 401  # an issuer is configured: no anonymous access
    reader = issuer.token(scope="openid dicomvault.read")
    assert qido(server, reader).status_code == 200
    assert stow(server, reader).status_code == 403
    writer = issuer.token(scp=["dicomvault.write", "dicomvault.read"])
    assert stow(server, writer).status_code == 200
    admin = issuer.token(scope="dicomvault.admin")
    assert stow(server, admin).status_code == 200 and qido(server, admin).status_code == 200
    other_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    for bad in (
        issuer.token(scope="dicomvault.read", exp=int(time.time()) - 3600),  # expired
        issuer.token(scope="dicomvault.read", aud="someone-else"),  # wrong audience
        issuer.token(scope="dicomvault.read", aud=None),  # no audience at all
        issuer.token(scope="dicomvault.read", iss="http://127.0.0.1:1"),  # wrong issuer
        issuer.token(scope="dicomvault.read", key=other_key),  # not signed by the issuer
        issuer.token(scope="dicomvault.read", exp=None),  # no expiry
        jwt.encode({"iss": issuer.url, "aud": "dicomvault", "exp": int(time.time()) + 60, "scope": "dicomvault.read"},
                   "secret-secret-secret-secret-secret!", algorithm="HS256", headers={"kid": "k1"}),  # HMAC
        jwt.encode({"iss": issuer.url, "aud": "dicomvault", "exp": int(time.time()) + 60, "scope": "dicomvault.read"},
                   cast(Any, None), algorithm="none"),  # unsigned
    ):
        r = qido(server, bad)
        assert r.status_code == 401, bad
        assert 'error="invalid_token"' in r.headers["www-authenticate"]


@pytest.mark.parametrize("claims", [
    {"scope": "calendar.read"}, {"scope": "otherapi:admin"}, {"scp": ["read", "admin"]}, {"scope": "dicom.read"},
    {"scope": "dicomvault:write dicomweb/read"}, {"scope": "DICOMVAULT.READ"}, {"scope": "xdicomvault.read"},
    {"roles": ["dicomvault.admin"]},
])
def test_oidc_confusable_scopes_grant_nothing(make_dw_server: Callable[..., DwServer], issuer: Issuer,
                                              claims: dict[str, Any]) -> None:
    """Before issue #9 a scope's last segment named the DicomVault scope, so ``calendar.read`` from the same
    identity provider granted read and ``otherapi:admin`` granted admin. Only exact mapped names count now."""
    server = make_dw_server(oidc_issuer=issuer.url, oidc_audience="dicomvault")
    token = issuer.token(**claims)
    r = qido(server, token)
    assert r.status_code == 403, claims  # authenticated (valid signature and audience), but granted nothing
    assert 'error="insufficient_scope"' in r.headers["www-authenticate"]
    assert stow(server, token).status_code == 403


def test_oidc_with_explicit_jwks_url_and_scope_map(make_dw_server: Callable[..., DwServer], issuer: Issuer) -> None:
    server = make_dw_server(oidc_issuer=issuer.url, oidc_audience="api://dicomvault",
                            oidc_jwks_url=issuer.url + "/jwks.json",
                            oidc_scope_map={"Images.Read": "read", "Images.Write": "write"})
    assert qido(server, issuer.token(aud="api://dicomvault", scp="Images.Read")).status_code == 200
    assert stow(server, issuer.token(aud="api://dicomvault", scp="Images.Read")).status_code == 403
    assert stow(server, issuer.token(aud="api://dicomvault", scp="Images.Write")).status_code == 200
    # The default names are not granted when the map replaces them.
    assert qido(server, issuer.token(aud="api://dicomvault", scope="dicomvault.read")).status_code == 403


def test_oidc_issuer_without_audience_refuses_to_start(tmp_path: Path) -> None:
    archive = build_archive(dw_settings(tmp_path / "v", oidc_issuer="http://127.0.0.1:9/"))
    try:
        with pytest.raises(ConfigurationError, match="oidc_audience"):
            create_app(archive)
    finally:
        archive.close()


@pytest.mark.parametrize("scope_map", [{"dicomvault.read": "superuser"}, {}, {"two words": "read"}])
def test_oidc_scope_map_is_validated(tmp_path: Path, scope_map: dict[str, str]) -> None:
    archive = build_archive(dw_settings(tmp_path / "v", oidc_issuer="http://127.0.0.1:9/", oidc_audience="dv",
                                        oidc_scope_map=scope_map))
    try:
        with pytest.raises(ConfigurationError, match="oidc_scope_map"):
            create_app(archive)
    finally:
        archive.close()


def test_scope_claims_mapping() -> None:
    mapping = {"dicomvault.read": "read", "dicomvault.write": "write", "dicomvault.admin": "admin"}
    assert scopes_from_claims({"scope": "openid dicomvault.read dicomvault.write"}, mapping) == {"read", "write"}
    assert scopes_from_claims({"scp": ["dicomvault.admin", "profile"]}, mapping) == {"admin"}
    assert scopes_from_claims({"scp": "dicomvault.read"}, mapping) == {"read"}
    assert scopes_from_claims({"scope": "calendar.read otherapi:admin read"}, mapping) == frozenset()
    assert scopes_from_claims({"roles": ["dicomvault.admin"]}, mapping) == frozenset()


# -- API token expiry ------------------------------------------------------------------------------------------


def test_expired_token_is_refused_and_listed_as_expired(dw_server: DwServer) -> None:
    lasting = cli(dw_server, "create", "lasting", "--scope", "read", "--expires-in", "90d").strip().splitlines()[-1]
    fleeting = cli(dw_server, "create", "fleeting", "--scope", "read",
                   "--expires-at", (datetime.now(UTC) + timedelta(seconds=2)).isoformat()).strip().splitlines()[-1]
    forever = cli(dw_server, "create", "forever", "--scope", "read").strip().splitlines()[-1]
    for secret in (lasting, fleeting, forever):
        assert qido(dw_server, secret).status_code == 200
    deadline = time.monotonic() + 10
    while (r := qido(dw_server, fleeting)).status_code == 200 and time.monotonic() < deadline:
        time.sleep(0.2)
    assert r.status_code == 401 and 'error="invalid_token"' in r.headers["www-authenticate"]
    assert qido(dw_server, lasting).status_code == 200 and qido(dw_server, forever).status_code == 200
    table = cli(dw_server, "list")
    listing = {name: next(line for line in table.splitlines() if f" {name} " in line)
               for name in ("lasting", "fleeting", "forever")}
    assert "expired" in listing["fleeting"]
    assert "active" in listing["lasting"] and "never" not in listing["lasting"]
    assert "active" in listing["forever"] and "never" in listing["forever"]
    # An expired token still counts as configured authentication: anonymous access does not come back.
    assert qido(dw_server, None).status_code == 401


@pytest.mark.parametrize("args", [["--expires-in", "0d"], ["--expires-in", "ninety days"],
                                  ["--expires-at", "2001-01-01"], ["--expires-at", "someday"],
                                  ["--expires-in", "1d", "--expires-at", "2999-01-01"]])
def test_bad_expiry_is_refused(dw_server: DwServer, args: list[str]) -> None:
    extra = ["--data-dir", str(dw_server.settings.data_dir)]
    if dw_server.settings.index_url:
        extra += ["--index-url", dw_server.settings.index_url]
    result = runner.invoke(token_cli, ["create", "x", "--scope", "read", *args, *extra])
    assert result.exit_code == 1, result.output


# -- CORS, 500 -------------------------------------------------------------------------------------------------


def test_cors_preflight_and_headers(make_dw_server: Callable[..., DwServer]) -> None:
    origin = "http://viewer.example"
    server = make_dw_server(cors_origins=[origin])
    r = httpx.options(server.dicomweb_url + "/studies", headers={
        "Origin": origin, "Access-Control-Request-Method": "GET",
        "Access-Control-Request-Headers": "authorization, accept"})
    assert r.status_code == 200
    assert r.headers["access-control-allow-origin"] == origin
    assert "authorization" in r.headers["access-control-allow-headers"].lower()
    r = httpx.get(server.dicomweb_url + "/studies", headers={"Origin": origin})
    assert r.status_code == 200 and r.headers["access-control-allow-origin"] == origin
    r = httpx.get(server.dicomweb_url + "/studies", headers={"Origin": "http://evil.example"})
    assert "access-control-allow-origin" not in r.headers


def test_unexpected_error_answers_500_with_an_error_id_matching_the_log(
        dw_server: DwServer, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    def explode(*_args: Any, **_kwargs: Any) -> Any:
        raise RuntimeError("DOE^JANE 19700101")

    monkeypatch.setattr(dw_server.archive.query, "search_page", explode)
    monkeypatch.setattr(dw_server.archive.query, "search_page_encoded", explode)  # the cached-answer path
    caplog.set_level(logging.INFO)
    r = httpx.get(dw_server.dicomweb_url + "/studies")
    assert r.status_code == 500
    body = r.json()
    assert body["status"] == 500 and body["exception"] == "RuntimeError"
    error_id = body["error_id"]
    assert len(error_id) == 12 and error_id in body["error"] and "RuntimeError" in body["error"]
    assert "DOE^JANE" not in r.text
    errors = [rec.getMessage() for rec in caplog.records if rec.levelno >= logging.ERROR]
    line = next(m for m in errors if error_id in m)
    # Enough to act on without a traceback: the type, where it was raised, the route.
    assert "RuntimeError" in line and "test_dw_auth:" in line and " via dicomvault.dicomweb.qido:" in line
    assert "GET /dicom-web/studies" in line
    assert not any("DOE^JANE" in rec.getMessage() for rec in caplog.records if rec.levelno >= logging.INFO)
    assert not any(rec.exc_info for rec in caplog.records if rec.levelno >= logging.INFO)
    monkeypatch.undo()
    assert httpx.get(dw_server.dicomweb_url + "/studies").status_code == 200


def test_domain_error_mapped_to_500_also_carries_an_error_id(
        dw_server: DwServer, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    def corrupt(*_args: Any, **_kwargs: Any) -> Any:
        raise IntegrityFailure("instance 1.2.3.4 failed its checksum")

    monkeypatch.setattr(dw_server.archive.query, "search_page", corrupt)
    monkeypatch.setattr(dw_server.archive.query, "search_page_encoded", corrupt)
    caplog.set_level(logging.INFO)
    r = httpx.get(dw_server.dicomweb_url + "/studies")
    assert r.status_code == 500 and r.json()["exception"] == "IntegrityFailure"
    assert "1.2.3.4" not in r.text
    assert any(r.json()["error_id"] in rec.getMessage() and "IntegrityFailure" in rec.getMessage()
               for rec in caplog.records if rec.levelno == logging.ERROR)
    assert not any("1.2.3.4" in rec.getMessage() for rec in caplog.records if rec.levelno >= logging.INFO)
