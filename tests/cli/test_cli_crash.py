"""Crash trials: SIGKILL ``dicomvault serve`` mid C-STORE stream and ``dicomvault import`` mid run.

The promise under test: an acknowledged object survives any crash, indexed and byte-exact; counters match rows;
a crash leaves at most garbage that ``verify --repair`` removes (never an index row without its blob).
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import signal
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import pydicom
import pytest
from pydicom.dataset import Dataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid
from pynetdicom import AE

from dicomvault.bootstrap import build_archive
from dicomvault.settings import Settings
from tests.cli.cli_helpers import ServeProcess, dv_command, dv_env, run_dv
from tests.helpers import make_ct

N_OBJECTS = 300


def _blob_files(data_dir: Path) -> list[Path]:
    return [p for p in (data_dir / "blobs").rglob("*") if p.is_file() and p.parent.name != "tmp"]


def _verify_then_repair(data_dir: Path) -> dict[str, object]:
    """Run ``verify``; nothing indexed may be missing or corrupt. Garbage is repaired, then verify must be clean."""
    first = run_dv("verify", "--data-dir", str(data_dir), "--grace", "0", "--json")
    report = json.loads(first.stdout)
    assert report["missing"] == [] and report["corrupt"] == [], report
    if first.returncode != 0:
        assert report["orphans"] or report["temporary"], report
        repaired = run_dv("verify", "--data-dir", str(data_dir), "--grace", "0", "--repair", "--json")
        assert repaired.returncode == 0, repaired.stdout + repaired.stderr
    final = run_dv("verify", "--data-dir", str(data_dir), "--grace", "0", "--json")
    assert final.returncode == 0, final.stdout + final.stderr
    # No half-written object remains: every file in the store is a complete object named by its SHA-256.
    for path in _blob_files(data_dir):
        assert hashlib.sha256(path.read_bytes()).hexdigest() == path.name
    assert not any((data_dir / "blobs" / "tmp").iterdir())
    return dict(json.loads(final.stdout))


@pytest.mark.slow
def test_cli_crash_serve_sigkill_mid_store(tmp_path: Path, serve_factory: Callable[..., ServeProcess]) -> None:
    data_dir = tmp_path / "vault"
    server = serve_factory(data_dir)
    server.wait_ready()
    study, series = generate_uid(), generate_uid()
    datasets: dict[str, Dataset] = {}
    for i in range(N_OBJECTS):
        ds = pydicom.dcmread(io.BytesIO(make_ct(study=study, series=series, rows=64, columns=64, seed=i,
                                                InstanceNumber=i + 1)))
        datasets[str(ds.SOPInstanceUID)] = ds

    acked: list[str] = []
    kill_after = 100

    def killer() -> None:
        while len(acked) < kill_after and server.proc.poll() is None:
            time.sleep(0.002)
        os.kill(server.proc.pid, signal.SIGKILL)

    ae = AE(ae_title="CRASHSCU")
    ae.add_requested_context(CTImageStorage, ExplicitVRLittleEndian)
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 10
    assoc = ae.associate("127.0.0.1", server.dimse_port, ae_title="DVTEST")
    assert assoc.is_established
    thread = threading.Thread(target=killer, daemon=True)
    thread.start()
    for uid, ds in datasets.items():
        if not assoc.is_established:
            break
        try:
            status = assoc.send_c_store(ds)
        except (RuntimeError, OSError):
            break
        if status and "Status" in status and status.Status == 0x0000:
            acked.append(uid)
    if assoc.is_established:
        assoc.abort()
    thread.join(10)
    assert server.proc.wait(10) == -signal.SIGKILL
    assert kill_after <= len(acked) < N_OBJECTS, "the kill must land mid-stream"

    restarted = serve_factory(data_dir)
    restarted.wait_ready()
    qido = httpx.get(f"{restarted.base_url}/dicom-web/studies/{study}/instances", params={"limit": "1000"})
    assert qido.status_code == 200, qido.text
    indexed = {row["00080018"]["Value"][0] for row in qido.json()}
    assert set(acked) <= indexed  # every acknowledged instance is indexed
    study_row = httpx.get(f"{restarted.base_url}/dicom-web/studies", params={"StudyInstanceUID": study}).json()
    assert study_row[0]["00201208"]["Value"] == [len(indexed)]  # counter == rows

    archive = build_archive(Settings.load(data_dir=data_dir))
    try:
        stats = archive.index.stats()
        assert stats.instances == len(indexed) == len(archive.retrieve.locate(study_uid=study))
        for record in archive.retrieve.locate(sop_uids=acked):
            stored = b"".join(archive.retrieve.iter_bytes(record, verify=True))  # SHA-256 checked
            ds = pydicom.dcmread(io.BytesIO(stored))
            assert ds.PixelData == datasets[record.sop_uid].PixelData
    finally:
        archive.close()
    report = _verify_then_repair(data_dir)
    assert report["checked"] == len(indexed)


@pytest.mark.slow
def test_cli_crash_import_sigkill_then_rerun(tmp_path: Path) -> None:
    src, data_dir = tmp_path / "src", tmp_path / "vault"
    src.mkdir()
    study, series = generate_uid(), generate_uid()
    for i in range(N_OBJECTS):
        (src / f"{i:04d}.dcm").write_bytes(make_ct(study=study, series=series, rows=64, columns=64, seed=i))
    proc = subprocess.Popen(dv_command("import", str(src), "--data-dir", str(data_dir), "--workers", "2"),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=dv_env())
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and proc.poll() is None:
        if (data_dir / "blobs").is_dir() and len(_blob_files(data_dir)) >= 40:
            break
        time.sleep(0.005)
    proc.send_signal(signal.SIGKILL)
    assert proc.wait(10) == -signal.SIGKILL, "the import must still be running when killed"
    assert len(_blob_files(data_dir)) < N_OBJECTS

    rerun = run_dv("import", str(src), "--data-dir", str(data_dir))
    assert rerun.returncode == 0, rerun.stdout + rerun.stderr
    assert "0 conflicts, 0 rejected, 0 failed, 0 skipped" in rerun.stdout
    stats = json.loads(run_dv("stats", "--data-dir", str(data_dir), "--json").stdout)
    assert stats["instances"] == N_OBJECTS and stats["studies"] == 1 and stats["series"] == 1
    again = run_dv("import", str(src), "--data-dir", str(data_dir))
    assert f"0 stored (0 bytes), {N_OBJECTS} duplicates" in again.stdout
    assert _verify_then_repair(data_dir)["checked"] == N_OBJECTS
