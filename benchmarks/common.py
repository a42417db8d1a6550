"""Shared pieces of the side-by-side benchmarks: data generation and the two servers under test.

Both servers run on loopback with their own throwaway folders. Orthanc gets TCP_NODELAY=1 (Debian's DCMTK, inside
Orthanc and storescu, disables Nagle's algorithm only then; without it every DIMSE response waits tens of ms).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

ROOT = Path(__file__).resolve().parent.parent
VENV_BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_port(port: int, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.1)
    raise TimeoutError(f"nothing listens on port {port}")


def wait_http(url: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=2) as r:
                if r.status < 500:
                    return
        except Exception:
            time.sleep(0.2)
    raise TimeoutError(url)


def generate_ct_series(folder: Path, count: int, *, rows: int = 512, columns: int = 512, seed: int = 0) -> list[Path]:
    """A CT series of ``count`` 16-bit instances (about 512 KiB each at 512x512)."""
    folder.mkdir(parents=True, exist_ok=True)
    study, series = generate_uid(), generate_uid()
    rng = np.random.default_rng(seed)
    paths = []
    for i in range(count):
        ds = Dataset()
        ds.file_meta = FileMetaDataset()
        ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds.file_meta.MediaStorageSOPClassUID = CTImageStorage
        ds.SOPClassUID = CTImageStorage
        ds.SOPInstanceUID = generate_uid()
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        ds.StudyInstanceUID, ds.SeriesInstanceUID = study, series
        ds.PatientID, ds.PatientName, ds.PatientBirthDate, ds.PatientSex = "BENCH1", "Bench^Patient", "19700101", "O"
        ds.StudyDate, ds.StudyTime, ds.AccessionNumber, ds.StudyDescription = "20240101", "120000", "ACC1", "Bench CT"
        ds.Modality, ds.SeriesNumber, ds.SeriesDescription, ds.InstanceNumber = "CT", 1, "Axial", i + 1
        ds.ImagePositionPatient = [0.0, 0.0, float(i)]
        ds.ImageOrientationPatient = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0]
        ds.PixelSpacing = [0.7, 0.7]
        ds.SliceThickness = 1.0
        ds.RescaleIntercept, ds.RescaleSlope = -1024, 1
        ds.WindowCenter, ds.WindowWidth = 40, 400
        ds.Rows, ds.Columns = rows, columns
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.PixelData = rng.integers(0, 4000, (rows, columns), dtype=np.uint16).tobytes()
        path = folder / f"ct{i:05d}.dcm"
        ds.save_as(path, enforce_file_format=True)
        paths.append(path)
    return paths


@dataclass
class Server:
    name: str
    aet: str
    dimse_port: int
    http_port: int
    process: subprocess.Popen[bytes]
    workdir: Path

    @property
    def http(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@contextmanager
def orthanc(*, dicomweb: bool = False, extra: dict[str, object] | None = None) -> Iterator[Server]:
    """Debian's Orthanc with its own storage folder, SQLite index, and (optionally) the DICOMweb plugin."""
    binary = shutil.which("Orthanc") or "/usr/sbin/Orthanc"
    work = Path(tempfile.mkdtemp(prefix="bench-orthanc-"))
    dimse, http = free_port(), free_port()
    cfg: dict[str, object] = {
        "Name": "bench", "StorageDirectory": str(work / "db"), "IndexDirectory": str(work / "db"),
        "DicomAet": "ORTHANC", "DicomPort": dimse, "HttpPort": http, "RemoteAccessAllowed": False,
        "AuthenticationEnabled": False, "DicomCheckCalledAet": False, "Plugins": [], "StableAge": 3600,
    }
    if dicomweb:
        plugin_dirs = [p for p in ("/usr/share/orthanc/plugins", "/usr/lib/orthanc/plugins") if Path(p).is_dir()]
        cfg["Plugins"] = plugin_dirs
        cfg["DicomWeb"] = {"Enable": True, "Root": "/dicom-web/", "EnableWado": True, "WadoRoot": "/wado"}
    cfg.update(extra or {})
    (work / "orthanc.json").write_text(json.dumps(cfg))
    env = {**os.environ, "TCP_NODELAY": "1"}
    log = (work / "orthanc.log").open("wb")  # closed with the process below
    proc = subprocess.Popen([binary, str(work / "orthanc.json")], env=env, stdout=subprocess.DEVNULL, stderr=log)
    try:
        wait_port(dimse)
        wait_http(f"http://127.0.0.1:{http}/system")
        yield Server("Orthanc", "ORTHANC", dimse, http, proc, work)
    finally:
        _stop(proc)
        log.close()
        shutil.rmtree(work, ignore_errors=True)


@contextmanager
def dicomvault(*, args: list[str] | None = None, env: dict[str, str] | None = None) -> Iterator[Server]:
    """``dicomvault serve`` on its embedded defaults (SQLite + folder) in a throwaway data directory."""
    work = Path(tempfile.mkdtemp(prefix="bench-dicomvault-"))
    dimse, http = free_port(), free_port()
    cmd = [str(VENV_BIN / "dicomvault"), "serve", "--data-dir", str(work / "data"), "--dimse-port", str(dimse),
           "--http-port", str(http), "--log-level", "WARNING", *(args or [])]
    log = (work / "server.log").open("wb")  # closed with the process below
    # The benchmarks store and delete over DICOMweb without a token: anonymous write/delete is widened explicitly
    # (the default is read-only).
    wide = {"DICOMVAULT_ANONYMOUS_SCOPES": '["read", "write", "delete"]'}
    proc = subprocess.Popen(cmd, env={**os.environ, "TCP_NODELAY": "1", **wide, **(env or {})},
                            stdout=subprocess.DEVNULL, stderr=log)
    try:
        wait_port(dimse)
        wait_http(f"http://127.0.0.1:{http}/healthz")
        yield Server("DicomVault", "DICOMVAULT", dimse, http, proc, work)
    finally:
        _stop(proc)
        log.close()
        shutil.rmtree(work, ignore_errors=True)


def median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    k = min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))
    return ordered[k]
