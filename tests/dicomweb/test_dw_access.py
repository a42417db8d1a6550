"""Who may do what without credentials, against the real server: anonymous access is read-only unless widened, the
Host header is checked (DNS rebinding), proxy headers never grant the default anonymous policy, and the OpenAPI
document follows the read scope."""

from __future__ import annotations

import io
from collections.abc import Callable

import httpx
import pytest

from dicomvault.settings import Settings
from tests.dicomweb.dw_live import WIDE_ANONYMOUS, DwServer
from tests.helpers import make_ct

DICOM = {"Content-Type": "application/dicom"}


def stored_study(server: DwServer) -> str:
    """Store one CT through the ingest service (not over HTTP) and return its study URL."""
    res = server.archive.ingest.ingest(io.BytesIO(make_ct()), source="test")
    return f"{server.dicomweb_url}/studies/{res.study_uid}"


def test_default_anonymous_scope_is_read_only(make_dw_server: Callable[..., DwServer]) -> None:
    assert Settings.load().anonymous_scopes == ["read"]
    server = make_dw_server(anonymous_scopes=None)  # None: the setting's default applies
    study = stored_study(server)
    assert httpx.get(study + "/metadata").status_code == 200
    r = httpx.post(server.dicomweb_url + "/studies", content=make_ct(), headers=DICOM)
    assert r.status_code == 403 and 'error="insufficient_scope"' in r.headers["www-authenticate"]
    assert r.json() == {"error": "this operation needs the 'write' scope", "status": 403}
    assert httpx.delete(study).status_code == 403
    assert httpx.get(study + "/metadata").status_code == 200  # still there


def test_anonymous_write_and_delete_only_when_widened(make_dw_server: Callable[..., DwServer]) -> None:
    server = make_dw_server(anonymous_scopes=WIDE_ANONYMOUS)
    r = httpx.post(server.dicomweb_url + "/studies", content=make_ct(), headers=DICOM)
    assert r.status_code == 200
    study = r.json()["00081190"]["Value"][0]
    assert httpx.delete(study).status_code == 204
    only_write = make_dw_server(anonymous_scopes=["read", "write"])
    assert httpx.post(only_write.dicomweb_url + "/studies", content=make_ct(), headers=DICOM).status_code == 200
    assert httpx.delete(stored_study(only_write)).status_code == 403


def test_admin_is_never_anonymous() -> None:
    with pytest.raises(ValueError, match="anonymous_scopes"):
        Settings.load(anonymous_scopes=["read", "admin"])


# -- Host header (DNS rebinding) ---------------------------------------------------------------------------------


def test_dns_rebinding_delete_is_refused(dw_server: DwServer) -> None:
    """The issue's probe: an anonymous DELETE with ``Host: rebind.attacker.example`` answered 204. The fixture's
    anonymous access is widened to delete, the worst case: the Host check alone must stop it."""
    study = stored_study(dw_server)
    r = httpx.delete(study, headers={"Host": "rebind.attacker.example"})
    assert r.status_code == 400
    assert r.json()["status"] == 400 and "allowed_hosts" in r.json()["error"]
    assert httpx.get(study + "/metadata", headers={"Host": "rebind.attacker.example:8080"}).status_code == 400
    assert httpx.get(study + "/metadata").status_code == 200  # nothing was deleted
    port = dw_server.base_url.rsplit(":", 1)[1]
    for host in (f"127.0.0.1:{port}", "127.0.0.1", f"localhost:{port}", "LOCALHOST.", f"[::1]:{port}", "10.1.2.3"):
        assert httpx.get(study + "/metadata", headers={"Host": host}).status_code == 200, host
    for host in ("", "[::1", "a b", "localhost:port"):
        assert httpx.get(study + "/metadata", headers={"Host": host}).status_code == 400, host
    # Probes answer whatever the Host: orchestrators probe a pod by its address.
    assert httpx.get(dw_server.base_url + "/healthz", headers={"Host": "rebind.attacker.example"}).status_code == 200
    assert httpx.delete(study).status_code == 204


def test_configured_allowed_hosts(make_dw_server: Callable[..., DwServer]) -> None:
    server = make_dw_server(allowed_hosts=["pacs.example.org", "*.hospital.example"])
    url = server.dicomweb_url + "/studies"
    for host in ("pacs.example.org", "PACS.example.org:443", "viewer.hospital.example", "localhost", "127.0.0.1",
                 "[::1]:80"):
        assert httpx.get(url, headers={"Host": host}).status_code == 200, host
    for host in ("example.org", "hospital.example", "evilhospital.example", "10.1.2.3", "pacs.example.org.evil"):
        assert httpx.get(url, headers={"Host": host}).status_code == 400, host
    anything = make_dw_server(allowed_hosts=["*"])
    assert httpx.get(anything.dicomweb_url + "/studies", headers={"Host": "whatever.example"}).status_code == 200


# -- reverse proxies ---------------------------------------------------------------------------------------------


PROXY_HEADERS = [{"X-Forwarded-For": "203.0.113.9"}, {"Forwarded": "for=203.0.113.9"}, {"X-Real-IP": "203.0.113.9"},
                 {"Via": "1.1 proxy"}, {"X-Forwarded-Proto": "https"}, {"X-Forwarded-Host": "pacs.example.org"}]


def test_proxy_headers_do_not_get_the_default_anonymous_policy(make_dw_server: Callable[..., DwServer]) -> None:
    """A proxy on the same host makes every client a loopback client: requests it forwards (recognisable by its
    headers) do not get the loopback-only default anonymous access."""
    server = make_dw_server(anonymous_scopes=None)
    url = server.dicomweb_url + "/studies"
    assert httpx.get(url).status_code == 200
    for header in PROXY_HEADERS:
        r = httpx.get(url, headers=header)
        assert r.status_code == 401 and "proxy" in r.json()["error"], header
    # A token still works through the proxy.
    assert server.archive.tokens is not None
    _, secret = server.archive.tokens.create("viewer", ["read"])
    for header in PROXY_HEADERS:
        assert httpx.get(url, headers={**header, "Authorization": f"Bearer {secret}"}).status_code == 200, header


def test_explicit_anonymous_through_a_trusted_proxy(make_dw_server: Callable[..., DwServer]) -> None:
    server = make_dw_server(allow_anonymous=True, trusted_proxies=["127.0.0.1/32", "::1"])
    forwarded = {"X-Forwarded-For": "203.0.113.9", "X-Forwarded-Proto": "https", "Content-Type": "application/dicom"}
    r = httpx.post(server.dicomweb_url + "/studies", content=make_ct(), headers=forwarded)
    assert r.status_code == 200
    # The proxy terminated TLS: the URLs in the answer are the ones its clients use.
    assert r.json()["00081190"]["Value"][0].startswith("https://")


def test_untrusted_forwarded_proto_is_ignored(make_dw_server: Callable[..., DwServer]) -> None:
    """uvicorn alone would believe X-Forwarded-* from 127.0.0.1; without ``trusted_proxies`` nothing is believed."""
    server = make_dw_server(allow_anonymous=True)
    r = httpx.post(server.dicomweb_url + "/studies", content=make_ct(),
                   headers={"X-Forwarded-Proto": "https", "Content-Type": "application/dicom"})
    assert r.status_code == 200 and r.json()["00081190"]["Value"][0].startswith("http://127.0.0.1:")


# -- OpenAPI -----------------------------------------------------------------------------------------------------


def test_openapi_follows_the_read_scope(make_dw_server: Callable[..., DwServer]) -> None:
    server = make_dw_server(anonymous_scopes=None)
    assert httpx.get(server.base_url + "/openapi.json").json()["info"]["title"] == "DicomVault"
    assert server.archive.tokens is not None
    _, reader = server.archive.tokens.create("viewer", ["read"])
    _, writer = server.archive.tokens.create("modality", ["write"])
    # Authentication is on now (a token exists): the description of the API needs the read scope.
    r = httpx.get(server.base_url + "/openapi.json")
    assert r.status_code == 401 and r.json()["status"] == 401
    assert httpx.get(server.base_url + "/openapi.json",
                     headers={"Authorization": f"Bearer {writer}"}).status_code == 403
    r = httpx.get(server.base_url + "/openapi.json", headers={"Authorization": f"Bearer {reader}"})
    assert r.status_code == 200 and "/dicom-web/studies" in r.json()["paths"]
    # No Swagger UI page (it would load its script from a CDN).
    for path in ("/docs", "/redoc"):
        r = httpx.get(server.base_url + path, headers={"Authorization": f"Bearer {reader}"})
        assert r.status_code == 404 and r.headers["content-type"] == "application/json"
