"""HTTPS for the HTTP server (``tls_cert``/``tls_key``, optional ``tls_client_ca``), with certificates the test
makes and httpx as the client: a round trip, TLS 1.2 as the floor, mutual TLS refusing clients without a
certificate of the configured CA, and refused configurations."""

from __future__ import annotations

import ssl
import warnings
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from dicomvault.dicomweb.http_server import tls_context, uvicorn_config
from dicomvault.domain.errors import ConfigurationError
from tests.dicomweb.dw_certs import Certs, make_certs
from tests.dicomweb.dw_live import DwServer, dw_settings
from tests.helpers import make_ct


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Certs:
    return make_certs(tmp_path_factory.mktemp("certs"))


def client_context(certs: Certs, cert: Path | None = None, key: Path | None = None) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=str(certs.ca))
    if cert is not None:
        context.load_cert_chain(cert, key)
    return context


def test_https_round_trip(make_dw_server: Callable[..., DwServer], certs: Certs) -> None:
    server = make_dw_server(tls_cert=certs.server_cert, tls_key=certs.server_key)
    assert server.base_url.startswith("https://127.0.0.1:")
    with httpx.Client(verify=client_context(certs)) as client:
        r = client.post(server.dicomweb_url + "/studies", content=make_ct(),
                        headers={"Content-Type": "application/dicom"})
        assert r.status_code == 200
        study_url = r.json()["00081190"]["Value"][0]
        assert study_url.startswith("https://127.0.0.1:")  # the URLs in answers carry the scheme
        assert client.get(study_url + "/metadata").status_code == 200
        assert client.get(server.base_url + "/healthz").json() == {"status": "ok"}
    # Plain HTTP on the HTTPS port gets no answer; an unverified server certificate is refused by the client.
    with pytest.raises(httpx.HTTPError):
        httpx.get(server.base_url.replace("https://", "http://") + "/healthz", timeout=5)
    with pytest.raises(httpx.ConnectError):
        httpx.get(server.base_url + "/healthz", timeout=5)  # the system CAs do not know the test CA


def test_tls_older_than_1_2_is_refused(make_dw_server: Callable[..., DwServer], certs: Certs) -> None:
    server = make_dw_server(tls_cert=certs.server_cert, tls_key=certs.server_key)
    server_context = tls_context(server.settings)
    assert server_context is not None and server_context.minimum_version == ssl.TLSVersion.TLSv1_2

    def lenient(version: ssl.TLSVersion) -> ssl.SSLContext:
        """A client that offers exactly ``version`` (security level 0: OpenSSL's defaults no longer offer 1.1)."""
        context = client_context(certs)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            context.set_ciphers("DEFAULT:@SECLEVEL=0")
            context.minimum_version = context.maximum_version = version
        return context

    with httpx.Client(verify=lenient(ssl.TLSVersion.TLSv1_2)) as client:  # TLS 1.2 is accepted...
        assert client.get(server.base_url + "/healthz").status_code == 200
    with pytest.raises(httpx.ConnectError) as refused, httpx.Client(verify=lenient(ssl.TLSVersion.TLSv1_1)) as client:
        client.get(server.base_url + "/healthz")  # ...the same client offering only TLS 1.1 is not
    if "NO_PROTOCOLS_AVAILABLE" in str(refused.value):
        pytest.skip("this OpenSSL build cannot offer TLS 1.1 at all, so the server's floor is not exercised")


def test_mutual_tls_requires_a_client_certificate_of_the_ca(make_dw_server: Callable[..., DwServer],
                                                            certs: Certs) -> None:
    server = make_dw_server(tls_cert=certs.server_cert, tls_key=certs.server_key, tls_client_ca=certs.ca)
    url = server.dicomweb_url + "/studies"
    with httpx.Client(verify=client_context(certs, certs.client_cert, certs.client_key)) as client:
        assert client.get(url).status_code == 200
    for context in (client_context(certs), client_context(certs, certs.stranger_cert, certs.stranger_key)):
        with pytest.raises(httpx.HTTPError), httpx.Client(verify=context) as client:
            client.get(url)
    # The refusals did not disturb the server.
    with httpx.Client(verify=client_context(certs, certs.client_cert, certs.client_key)) as client:
        assert client.get(url).status_code == 200


@pytest.mark.parametrize("files", [
    {"tls_cert": "server_cert"},  # no key
    {"tls_key": "server_key"},  # no certificate
    {"tls_client_ca": "ca"},  # mutual TLS without HTTPS
    {"tls_cert": "server_cert", "tls_key": "client_key"},  # key of another certificate
    {"tls_cert": "server_cert", "tls_key": "server_key", "tls_client_ca": "missing"},
])
def test_unusable_tls_settings_are_refused(tmp_path: Path, certs: Certs, files: dict[str, str]) -> None:
    values = {k: getattr(certs, v) if v != "missing" else tmp_path / "missing.pem" for k, v in files.items()}
    settings = dw_settings(tmp_path / "v", **values)
    with pytest.raises(ConfigurationError, match="tls_"):
        uvicorn_config(object(), settings)
