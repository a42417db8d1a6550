"""``dicomvault serve`` and DIMSE access control: an open DIMSE service on a public address is refused (exit 2),
and the DICOM TLS listener is started from the command line."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Callable
from pathlib import Path

from tests.cli.cli_helpers import ServeProcess, cli_free_port, run_dv
from tests.dimse.tls_certs import make_pki


def test_cli_serve_refuses_open_dimse_on_a_public_address(tmp_path: Path) -> None:
    # HTTP is explicitly opened (--allow-anonymous), so it is the DIMSE check that refuses.
    result = run_dv("serve", "--data-dir", str(tmp_path / "vault"), "--host", "0.0.0.0", "--allow-anonymous",
                    "--http-port", str(cli_free_port()), "--dimse-port", str(cli_free_port()), timeout=60)
    assert result.returncode == 2, result.stdout + result.stderr
    assert "refusing to start" in result.stderr and "DIMSE" in result.stderr
    assert "dimse_peers" in result.stderr  # says what to configure


def test_cli_serve_refuses_tls_port_without_certificate(tmp_path: Path) -> None:
    result = run_dv("serve", "--data-dir", str(tmp_path / "vault"), "--dimse-tls-port", str(cli_free_port()),
                    "--http-port", str(cli_free_port()), "--dimse-port", str(cli_free_port()), timeout=60)
    assert result.returncode == 2, result.stdout + result.stderr
    assert "dimse_tls_cert" in result.stderr


def test_cli_serve_with_dicom_tls(tmp_path: Path, serve_factory: Callable[..., ServeProcess]) -> None:
    pki = make_pki(tmp_path / "pki")
    tls_port = cli_free_port()
    server = serve_factory(tmp_path / "vault", "--dimse-tls-port", str(tls_port), "--dimse-tls-cert",
                           str(pki.server.cert), "--dimse-tls-key", str(pki.server.key))
    server.wait_ready()
    echo = subprocess.run(["echoscu", "+tls", str(pki.other.key), str(pki.other.cert), "+cf", str(pki.ca),
                           "-aec", "DVTEST", "127.0.0.1", str(tls_port)],
                          capture_output=True, text=True, timeout=60, env={**os.environ, "TCP_NODELAY": "1"})
    assert echo.returncode == 0, echo.stdout + echo.stderr
    server.stop()
    assert f"DICOM TLS  127.0.0.1:{tls_port}" in server.log_path.read_text()
