"""Set-up pieces of ``benchmarks/compression_at_rest.py``: the generated data (a CT phantom study, a multi-frame
object), the archive's configuration, ``dicomvault serve`` and ``dicomvault lifecycle run`` as processes, the
space a run saved, and the HTTP helpers the retrieval parts use. Apart so that the benchmark module holds the
measurements alone."""

from __future__ import annotations

import io
import os
import resource
import signal
import struct
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pydicom
from pydicom.uid import ExplicitVRLittleEndian, MultiFrameGrayscaleWordSecondaryCaptureImageStorage

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.common import (
    VENV_BIN,
    Server,
    free_port,
    new_instance,
    wait_http,
    wait_port,
)
from benchmarks.compression import phantom_series, phantom_slice
from benchmarks.dimse_store import postgres_database
from dicomvault.bootstrap import build_archive
from dicomvault.settings import Settings

CODEC = "jpeg-ls"


def cpu_self() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


# -- data --------------------------------------------------------------------------------------------------------


@dataclass
class Study:
    uid: str
    files: list[Path]
    size: int


def write_ct_study(folder: Path, slices: int, rows: int, columns: int) -> Study:
    """The phantom CT series (``benchmarks.compression.phantom_series``) written as files for storescu."""
    folder.mkdir(parents=True, exist_ok=True)
    objects = phantom_series(slices, rows, columns)
    files = []
    for i, data in enumerate(objects):
        path = folder / f"ct{i:05d}.dcm"
        path.write_bytes(data)
        files.append(path)
    uid = str(pydicom.dcmread(io.BytesIO(objects[0]), stop_before_pixels=True).StudyInstanceUID)
    return Study(uid, files, sum(len(d) for d in objects))


@dataclass
class MultiFrame:
    path: Path
    study: str
    series: str
    sop: str
    frames: int
    pixel_offset: int
    frame_length: int

    def frame(self, n: int) -> bytes:
        with self.path.open("rb") as f:
            f.seek(self.pixel_offset + (n - 1) * self.frame_length)
            return f.read(self.frame_length)


def write_multiframe(path: Path, frames: int, rows: int, columns: int, seed: int = 7) -> MultiFrame:
    """A multi-frame 16-bit (12 stored) grayscale object of ``frames`` phantom slices, written frame by frame (the
    header by pydicom, then the Pixel Data element), so that a 1 GB object never sits in memory whole."""
    import numpy as np

    ds = new_instance(MultiFrameGrayscaleWordSecondaryCaptureImageStorage, ExplicitVRLittleEndian)
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.PatientID, ds.PatientName, ds.PatientBirthDate, ds.PatientSex = "BENCH2", "Bench^Multiframe", "19700101", "O"
    ds.StudyDate, ds.StudyTime, ds.AccessionNumber, ds.StudyDescription = "20240101", "120000", "ACC2", "Bench MF"
    ds.Modality, ds.ConversionType, ds.SeriesNumber, ds.InstanceNumber = "OT", "WSD", 1, 1
    ds.Rows, ds.Columns, ds.NumberOfFrames = rows, columns, frames
    ds.FrameIncrementPointer = 0x00181063  # Frame Time
    ds.FrameTime = 33.3
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.RescaleIntercept, ds.RescaleSlope, ds.RescaleType = -1024, 1, "HU"
    frame_length = rows * columns * 2
    rng = np.random.default_rng(seed)
    with path.open("wb") as f:
        ds.save_as(f, enforce_file_format=True)
        f.write(struct.pack("<HH2sHI", 0x7FE0, 0x0010, b"OW", 0, frames * frame_length))
        offset = f.tell()
        for z in range(frames):
            f.write(phantom_slice(z, rows, columns, rng).tobytes())
    return MultiFrame(path, str(ds.StudyInstanceUID), str(ds.SeriesInstanceUID), str(ds.SOPInstanceUID), frames,
                      offset, frame_length)


# -- the archive -------------------------------------------------------------------------------------------------


def compress_rule() -> dict[str, object]:
    return {"name": "compress all", "when": {"min_study_bytes": 0}, "action": {"compress": CODEC}}


def lifecycle_config(path: Path, throttle: int) -> Path:
    path.write_text(f"tier_max_bytes_per_second = {throttle}\n[[lifecycle]]\nname = \"compress all\"\n"
                    f"when = {{ min_study_bytes = 0 }}\naction = {{ compress = \"{CODEC}\" }}\n")
    return path


@contextmanager
def index_url(kind: str) -> Iterator[str | None]:
    """None (the embedded SQLite of the data folder) or a throwaway PostgreSQL database."""
    if kind == "postgres":
        with postgres_database() as url:
            yield url
    else:
        yield None


def index_env(url: str | None) -> dict[str, str]:
    return {"DICOMVAULT_INDEX_URL": url} if url else {}


@contextmanager
def serve(data_dir: Path, env: dict[str, str]) -> Iterator[Server]:
    """``dicomvault serve`` on ``data_dir`` (kept when it stops, unlike ``benchmarks.common.dicomvault``): the same
    archive is served before and after ``dicomvault lifecycle run`` compresses it."""
    dimse, http_port = free_port(), free_port()
    log_path = data_dir.parent / f"server-{dimse}.log"
    cmd = [str(VENV_BIN / "dicomvault"), "serve", "--data-dir", str(data_dir), "--dimse-port", str(dimse),
           "--http-port", str(http_port), "--log-level", "WARNING"]
    with log_path.open("wb") as log:
        proc = subprocess.Popen(cmd, env={**os.environ, "TCP_NODELAY": "1", **env}, stdout=subprocess.DEVNULL,
                                stderr=log)
        try:
            wait_port(dimse)
            wait_http(f"http://127.0.0.1:{http_port}/healthz")
            yield Server("DicomVault", "DICOMVAULT", dimse, http_port, proc, data_dir)
        finally:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()


@dataclass
class CliRun:
    seconds: float
    cpu: float
    max_rss_mb: float
    output: str


def lifecycle_run(data_dir: Path, config: Path, env: dict[str, str]) -> CliRun:
    """``dicomvault lifecycle run`` as a process of its own: wall time, CPU and peak memory of that process."""
    with tempfile.TemporaryFile() as out:
        t0 = time.perf_counter()
        proc = subprocess.Popen([str(VENV_BIN / "dicomvault"), "lifecycle", "run", "--config", str(config),
                                 "--data-dir", str(data_dir)], env={**os.environ, **env}, stdout=out,
                                stderr=subprocess.STDOUT)
        _, status, usage = os.wait4(proc.pid, 0)
        elapsed = time.perf_counter() - t0
        proc.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        text = out.read().decode(errors="replace")
    if proc.returncode != 0 or "failed" in text:
        raise RuntimeError(f"dicomvault lifecycle run failed:\n{text[-3000:]}")
    return CliRun(elapsed, usage.ru_utime + usage.ru_stime, usage.ru_maxrss / 1024, text)


@dataclass
class Savings:
    instances: int
    original: int
    stored: int

    @property
    def ratio(self) -> float:
        return self.original / self.stored if self.stored else float("nan")


def savings(data_dir: Path, url: str | None) -> Savings:
    """What the index records as compressed at rest (every modality)."""
    archive = build_archive(Settings.load(data_dir=data_dir, index_url=url))
    try:
        rows = archive.index.compression_savings()
    finally:
        archive.close()
    return Savings(sum(r.instances for r in rows), sum(r.original_bytes for r in rows),
                   sum(r.stored_bytes for r in rows))


# -- 1. background compression ------------------------------------------------------------------------------------



def fetch(url: str, accept: str) -> tuple[float, int]:
    """(seconds to the last byte, body bytes) of one GET."""
    t0 = time.perf_counter()
    req = urllib.request.Request(url, headers={"Accept": accept})
    n = 0
    with urllib.request.urlopen(req, timeout=600) as r:
        while chunk := r.read(1 << 20):
            n += len(chunk)
    return time.perf_counter() - t0, n


def multipart_parts(body: bytes, content_type: str) -> list[tuple[str, bytes]]:
    """(Content-Type, body) of every part of a multipart/related body."""
    boundary = next(p.split("=", 1)[1].strip('"') for p in content_type.split(";") if p.strip().startswith("boundary"))
    delimiter = b"--" + boundary.encode()
    out = []
    for chunk in body.split(delimiter)[1:]:
        if chunk.startswith(b"--"):
            break
        head, _, data = chunk.partition(b"\r\n\r\n")
        ctype = next((line.split(b":", 1)[1].strip().decode() for line in head.split(b"\r\n")
                      if line.lower().startswith(b"content-type")), "")
        out.append((ctype, data[:-2] if data.endswith(b"\r\n") else data))
    return out


def fetch_parts(url: str, accept: str) -> list[tuple[str, bytes]]:
    req = urllib.request.Request(url, headers={"Accept": accept})
    with urllib.request.urlopen(req, timeout=600) as r:
        return multipart_parts(r.read(), r.headers["Content-Type"])


