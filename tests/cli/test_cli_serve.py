"""``dicomvault serve`` as a real process: banner, probes, DIMSE echo, graceful SIGTERM, refused configurations."""

from __future__ import annotations

import signal
from collections.abc import Callable
from pathlib import Path

import httpx
from pydicom.uid import generate_uid
from pynetdicom import AE
from pynetdicom.sop_class import Verification  # type: ignore[attr-defined]

from tests.cli.cli_helpers import ServeProcess, cli_free_port, run_dv
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
