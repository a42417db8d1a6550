"""``dicomvault serve`` with HTTPS flags, as a real process, and the configurations it refuses before opening a
port: unusable TLS files, an OIDC issuer without audience."""

from __future__ import annotations

import ssl
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from tests.cli.cli_helpers import ServeProcess, cli_free_port, run_dv
from tests.dicomweb.dw_certs import make_certs


def test_cli_serve_https_with_client_certificates(tmp_path: Path, serve_factory: Callable[..., ServeProcess]) -> None:
    certs = make_certs(tmp_path / "certs")
    server = serve_factory(tmp_path / "vault", "--tls-cert", str(certs.server_cert), "--tls-key",
                           str(certs.server_key), "--tls-client-ca", str(certs.ca))
    url = f"https://127.0.0.1:{server.http_port}"
    trusted = ssl.create_default_context(cafile=str(certs.ca))
    trusted.load_cert_chain(certs.client_cert, certs.client_key)
    deadline = time.monotonic() + 30
    with httpx.Client(verify=trusted, timeout=2) as client:
        while True:
            assert server.proc.poll() is None, server.log_path.read_text()[-2000:]
            try:
                ready = client.get(url + "/readyz")
                break
            except httpx.HTTPError:
                assert time.monotonic() < deadline, "serve did not answer over HTTPS"
                time.sleep(0.2)
        assert ready.status_code == 200
        assert client.get(url + "/dicom-web/studies").status_code == 200
    without_cert = ssl.create_default_context(cafile=str(certs.ca))
    with pytest.raises(httpx.HTTPError):
        httpx.get(url + "/dicom-web/studies", verify=without_cert, timeout=5)
    server.stop()
    banner = server.log_path.read_text()
    assert f"https://127.0.0.1:{server.http_port}/dicom-web" in banner and "client certificates required" in banner


def _refused(tmp_path: Path, *args: str) -> str:
    result = run_dv("serve", "--data-dir", str(tmp_path / "vault"), "--http-port", str(cli_free_port()),
                    "--dimse-port", str(cli_free_port()), *args, timeout=60)
    assert result.returncode == 2, result.stderr
    assert "refusing to start" in result.stderr
    return " ".join(result.stderr.split())


def test_cli_serve_refuses_unusable_tls_files(tmp_path: Path) -> None:
    certs = make_certs(tmp_path / "certs")
    assert "tls_cert and tls_key must be set together" in _refused(tmp_path, "--tls-cert", str(certs.server_cert))
    assert "tls_key" in _refused(tmp_path, "--tls-cert", str(certs.server_cert), "--tls-key", str(certs.client_key))


def test_cli_serve_refuses_oidc_issuer_without_audience(tmp_path: Path) -> None:
    config = tmp_path / "dv.toml"
    config.write_text('oidc_issuer = "https://login.example.org/tenant"\n')
    assert "oidc_audience" in _refused(tmp_path, "--config", str(config))
