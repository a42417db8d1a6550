"""``dicomvault serve`` as a real process: banner, probes, DIMSE echo, graceful SIGTERM and SIGINT (a second signal
exits at once), refused configurations."""

from __future__ import annotations

import signal
import socket
import time
from collections.abc import Callable
from pathlib import Path

import httpx
from pydicom.uid import generate_uid
from pynetdicom import AE
from pynetdicom.sop_class import Verification  # type: ignore[attr-defined]

from tests.cli.cli_helpers import ServeProcess, cli_free_port, run_dv
from tests.dimse.conftest import dataset_bytes
from tests.dimse.raw_peer import Raw
from tests.helpers import make_ct


def test_cli_serve_runs_both_servers_and_stops_on_sigterm(tmp_path: Path,
                                                          serve_factory: Callable[..., ServeProcess]) -> None:
    server = serve_factory(tmp_path / "vault", "--move-destination", "VIEWER=127.0.0.1:4242")
    server.wait_ready()
    assert httpx.get(f"{server.base_url}/healthz").json() == {"status": "ok"}
    ready = httpx.get(f"{server.base_url}/readyz").json()
    assert ready["status"] == "ready" and ready["storage"].startswith("file://")

    ae = AE(ae_title="ECHOSCU")
    ae.add_requested_context(Verification)
    assoc = ae.associate("127.0.0.1", server.dimse_port, ae_title="DVTEST")
    assert assoc.is_established
    assert assoc.send_c_echo().Status == 0x0000
    assoc.release()

    # `import` writes into the same index and store while `serve` runs; the server sees the objects at once.
    src = tmp_path / "in"
    src.mkdir()
    study = generate_uid()
    for i in range(4):
        (src / f"{i}.dcm").write_bytes(make_ct(study=study, seed=i))
    imported = run_dv("import", str(src), "--data-dir", str(tmp_path / "vault"))
    assert imported.returncode == 0, imported.stdout + imported.stderr
    found = httpx.get(f"{server.base_url}/dicom-web/studies/{study}/instances")
    assert found.status_code == 200 and len(found.json()) == 4

    server.proc.send_signal(signal.SIGTERM)
    assert server.proc.wait(20) == 0
    server.log.flush()
    log = server.log_path.read_text()
    assert "DVTEST" in log and f"127.0.0.1:{server.dimse_port}" in log
    assert f"http://127.0.0.1:{server.http_port}/dicom-web" in log and "VIEWER=127.0.0.1:4242" in log
    assert "index.sqlite" in log
    # DIMSE stopped with the process: the port no longer accepts associations.
    assoc = ae.associate("127.0.0.1", server.dimse_port, ae_title="DVTEST")
    assert not assoc.is_established


def test_cli_serve_refuses_public_address_without_auth(tmp_path: Path) -> None:
    result = run_dv("serve", "--data-dir", str(tmp_path / "vault"), "--host", "0.0.0.0",
                    "--http-port", str(cli_free_port()), "--dimse-port", str(cli_free_port()), timeout=30)
    assert result.returncode == 2, result.stderr
    assert "refusing to start" in result.stderr


def test_cli_serve_rejects_bad_flags(tmp_path: Path) -> None:
    bad_dest = run_dv("serve", "--data-dir", str(tmp_path / "v"), "--move-destination", "NOPORT", timeout=30)
    assert bad_dest.returncode == 2 and "AET=HOST:PORT" in bad_dest.stderr
    bad_level = run_dv("serve", "--data-dir", str(tmp_path / "v"), "--log-level", "LOUD", timeout=30)
    assert bad_level.returncode == 2 and "unknown log level" in bad_level.stderr


def _log_shows(server: ServeProcess, text: str, timeout: float = 10) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        server.log.flush()
        if text in server.log_path.read_text():
            return True
        time.sleep(0.1)
    return False


def test_cli_serve_sigint_with_idle_dimse_connections_exits_in_seconds(
        tmp_path: Path, serve_factory: Callable[..., ServeProcess]) -> None:
    """One silent TCP connection and one idle association on the DIMSE port used to hold SIGINT for 61 s."""
    server = serve_factory(tmp_path / "vault", "--log-level", "INFO")
    server.wait_ready()
    silent = socket.create_connection(("127.0.0.1", server.dimse_port), timeout=10)
    idle = Raw(server.dimse_port, aet="IDLE", called="DVTEST")
    try:
        idle.sock.settimeout(10)
        idle.associate()
        server.proc.send_signal(signal.SIGINT)
        assert server.proc.wait(10) == 0
        assert idle.closed_after_abort()
        assert silent.recv(1) == b""
    finally:
        silent.close()
        idle.sock.close()
    assert _log_shows(server, "SIGINT received: stopping") and _log_shows(server, "DicomVault stopped")


def test_cli_serve_second_sigint_during_a_slow_drain_exits_at_once(
        tmp_path: Path, serve_factory: Callable[..., ServeProcess]) -> None:
    """A C-STORE half-sent holds the graceful stop (up to dimse_shutdown_grace, 60 s here); a second SIGINT exits
    at once, saying so. Nothing was acknowledged for that store."""
    config = tmp_path / "dicomvault.toml"
    config.write_text("dimse_shutdown_grace = 60\n")
    server = serve_factory(tmp_path / "vault", "--log-level", "INFO", "--config", str(config))
    server.wait_ready()
    storing = Raw(server.dimse_port, aet="SLOW", called="DVTEST")
    try:
        storing.sock.settimeout(10)
        storing.associate()
        uid = generate_uid()
        pdus = storing.data_pdus(dataset_bytes(make_ct(sop=uid, rows=64, columns=64)), 4000)
        storing.sock.sendall(storing.store_command(uid) + pdus[:4012])
        time.sleep(0.3)
        server.proc.send_signal(signal.SIGINT)
        assert _log_shows(server, "waiting up to 60 s for 1 association(s) with a message in progress: SLOW@127.0.0.1")
        assert server.proc.poll() is None  # the drain holds the process
        server.proc.send_signal(signal.SIGINT)
        assert server.proc.wait(5) == 128 + signal.SIGINT
    finally:
        storing.sock.close()
    assert _log_shows(server, "SIGINT again: exiting now")
