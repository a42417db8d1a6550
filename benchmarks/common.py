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


def _realistic_header(ds: Dataset, i: int) -> None:
    """Attributes a CT scanner writes besides the minimum (issue #10 measured with 68 per instance): equipment,
    acquisition, reconstruction, references, a private block, so that header parsing costs what it does in a
    hospital."""
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
    ds.InstanceCreationDate, ds.InstanceCreationTime = "20240101", "120001.123456"
    ds.SeriesDate, ds.SeriesTime, ds.AcquisitionDate, ds.AcquisitionTime = "20240101", "120000", "20240101", "120002"
    ds.ContentDate, ds.ContentTime = "20240101", f"1200{i % 60:02d}.000000"
    ds.Manufacturer, ds.InstitutionName = "BenchVendor", "General Hospital"
    ds.InstitutionAddress = "1 Hospital Road"
    ds.ReferringPhysicianName, ds.StationName = "Referrer^Doctor", "CT01"
    ds.ManufacturerModelName, ds.DeviceSerialNumber, ds.SoftwareVersions = "Scanner 9000", "SN123456", "V1.2.3"
    ds.OperatorsName, ds.PerformingPhysicianName = "Tech^One", "Rad^Two"
    ds.ProtocolName, ds.BodyPartExamined, ds.PatientPosition = "CHEST ROUTINE", "CHEST", "HFS"
    ds.PatientAge, ds.PatientWeight, ds.PatientSize = "054Y", 80.0, 1.8
    ds.ScanOptions, ds.KVP, ds.DataCollectionDiameter = "HELICAL", 120, 500.0
    ds.ReconstructionDiameter, ds.DistanceSourceToDetector, ds.DistanceSourceToPatient = 350.0, 1040.0, 570.0
    ds.GantryDetectorTilt, ds.TableHeight, ds.RotationDirection = 0.0, 150.0, "CW"
    ds.ExposureTime, ds.XRayTubeCurrent, ds.Exposure = 500, 200, 100
    ds.FilterType, ds.GeneratorPower, ds.FocalSpots = "BODY", 24, 1.2
    ds.ConvolutionKernel, ds.RevolutionTime, ds.SingleCollimationWidth = "B30f", 0.5, 0.6
    ds.TotalCollimationWidth, ds.TableSpeed, ds.SpiralPitchFactor = 38.4, 46.0, 1.2
    ds.StudyID, ds.AcquisitionNumber, ds.FrameOfReferenceUID = "1", 1, "1.2.826.0.1.3680043.8.498.1"
    ds.PositionReferenceIndicator, ds.SliceLocation = "", float(i)
    ds.ImagesInAcquisition = 1
    ds.LossyImageCompression = "00"
    ds.RescaleType = "HU"
    ds.add_new(0x00091010, "LO", "BENCH PRIVATE")
    ds.add_new(0x00091001, "LO", f"private value {i}")
    ds.add_new(0x00091002, "DS", "1.5")
    ref = Dataset()
    ref.ReferencedSOPClassUID, ref.ReferencedSOPInstanceUID = "1.2.840.10008.3.1.2.3.1", "1.2.826.0.1.3680043.8.498.2"
    ds.ReferencedPerformedProcedureStepSequence = [ref]


def new_instance(sop_class: str, transfer_syntax: str, study: str | None = None, series: str | None = None) -> Dataset:
    """A data set with its File Meta and fresh SOP Instance UID (new study and series UIDs unless given): what
    every generated benchmark object starts from."""
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = transfer_syntax
    ds.file_meta.MediaStorageSOPClassUID = sop_class
    ds.SOPClassUID = sop_class
    ds.SOPInstanceUID = generate_uid()
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.StudyInstanceUID, ds.SeriesInstanceUID = study or generate_uid(), series or generate_uid()
    return ds


def _ct_image(i: int, study: str, series: str, rows: int, columns: int, rng: np.random.Generator,
              realistic: bool) -> Dataset:
    """One 16-bit CT image of study/series (instance number ``i + 1``), with random pixels."""
    ds = new_instance(CTImageStorage, ExplicitVRLittleEndian, study, series)
    if realistic:
        _realistic_header(ds, i)
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
    return ds


def generate_ct_series(
    folder: Path, count: int, *, rows: int = 512, columns: int = 512, seed: int = 0, realistic: bool = False
) -> list[Path]:
    """A CT series of ``count`` 16-bit instances (about 512 KiB each at 512x512). ``realistic``: with the
    ~70 attributes per instance a scanner writes (``_realistic_header``), not only the minimum."""
    folder.mkdir(parents=True, exist_ok=True)
    study, series = generate_uid(), generate_uid()
    rng = np.random.default_rng(seed)
    paths = []
    for i in range(count):
        path = folder / f"ct{i:05d}.dcm"
        _ct_image(i, study, series, rows, columns, rng, realistic).save_as(path, enforce_file_format=True)
        paths.append(path)
    return paths


def generate_small_studies(folder: Path, count: int, *, rows: int = 64, columns: int = 64, seed: int = 0) -> list[Path]:
    """``count`` one-instance studies of about 10 KiB each (64x64 16-bit, realistic header), ~1,000 patients: the
    fixed cost per object that dominates for SR, presentation states, key images and migrations."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    paths = []
    for i in range(count):
        ds = _ct_image(0, generate_uid(), generate_uid(), rows, columns, rng, realistic=True)
        ds.PatientID, ds.AccessionNumber = f"SMALL{i % 997}", f"A{i}"
        path = folder / f"small{i:06d}.dcm"
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
