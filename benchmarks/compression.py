"""Lossless compression at rest (issue #11, item 4): which codec, against Orthanc's zlib ``StorageCompression``.

For each data set and method: the compression ratio (object bytes as received / bytes that would be stored) and
the encode and decode speed on one core (MB of object per second, single thread, median of ``--runs``), then the
background pipeline (parse + encode + verify) on two processes. Methods:

* zlib level 6 on the whole file: what Orthanc's ``StorageCompression`` does (zlib's default level, whole file);
* JPEG-LS lossless and JPEG 2000 lossless through ``dicomvault.dicom.lossless`` (pydicom's encoders: pyjpegls,
  pylibjpeg-openjpeg); "encode+verify" also decodes every frame and compares, as the archive will;
* HTJ2K lossless through Debian's ``ojph_compress`` (OpenJPH 0.9, package openjph-tools) when it is installed:
  the project has no in-process HTJ2K encoder (see the module docstring). Its ratio is exact; its encode speed is
  OpenJPH's own "Elapsed time" (file read + encode + write, without process start), decode is OpenJPEG in process.

Stored bytes for a codec: the object less its native pixel data plus the encapsulated frames (an 8-byte item
header each, an empty Basic Offset Table and the sequence delimiter). Data sets: pydicom's real CT and MR
(CT_small.dcm, MR_small.dcm), a generated 512x512 CT phantom series with realistic structure and correlated noise
(body, fat, lungs, vessels, spine, air, a circular field of view), the benchmarks' random-noise CT (its pixels are
uniform noise: the worst case, not a realistic one), and every eligible native file of pydicom's corpus.

    PYTHONPATH=$PWD/src .venv/bin/python -m benchmarks.compression --slices 32 --runs 3
"""

from __future__ import annotations

import argparse
import io
import multiprocessing
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pydicom
import pydicom.data
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.common import _realistic_header, generate_ct_series, new_instance
from dicomvault.dicom.lossless import (
    FrameLayout,
    decode_frame,
    eligibility,
    encode_frames,
    frame_layout,
)

JLS, J2K, HTJ2K = "1.2.840.10008.1.2.4.80", "1.2.840.10008.1.2.4.90", "1.2.840.10008.1.2.4.201"
CODEC_NAMES = {JLS: "JPEG-LS", J2K: "JPEG 2000", HTJ2K: "HTJ2K (ojph CLI)"}
ZLIB_LEVEL = 6
MB = 1e6


def phantom_slice(z: int, rows: int, columns: int, rng: np.random.Generator) -> np.ndarray:
    """One axial CT slice in stored values (HU + 1024, 12 bits in 16): air, a body with a fat layer, two lungs
    with vessels, an aorta, a spine with cortical bone, a circular field of view padded with 0, and noise of
    ~12 HU correlated over a few pixels as a reconstruction kernel makes it. Shapes drift with ``z``."""
    y, x = np.mgrid[-1 : 1 : rows * 1j, -1 : 1 : columns * 1j]
    s = 1 + 0.05 * np.sin(z / 9)
    hu = np.full((rows, columns), -1000.0)
    body = (x / (0.82 * s)) ** 2 + (y / (0.62 * s)) ** 2
    hu[body < 1] = -100.0  # subcutaneous fat
    hu[body < 0.85] = 45.0  # soft tissue
    for cx in (-0.36, 0.36):
        lung = ((x - cx) / (0.24 * s)) ** 2 + ((y + 0.05) / (0.36 * s)) ** 2 < 1
        hu[lung] = -850.0
    for _ in range(40):  # vessels in the lungs
        cx, cy, r = rng.uniform(-0.55, 0.55), rng.uniform(-0.35, 0.25), rng.uniform(0.005, 0.02)
        hu[((x - cx) ** 2 + (y - cy) ** 2 < r * r) & (hu < -500)] = 30.0
    hu[(x ** 2 + (y + 0.05) ** 2) < 0.06 ** 2] = 200.0  # contrast-filled aorta
    spine = x ** 2 + (y - 0.42) ** 2
    hu[spine < 0.09 ** 2] = 1100.0
    hu[spine < 0.07 ** 2] = 350.0
    noise = rng.normal(0, 25, (rows + 2, columns + 2))
    noise = sum(np.roll(np.roll(noise, dy, 0), dx, 1) for dy in (-1, 0, 1) for dx in (-1, 0, 1))[1:-1, 1:-1] / 4
    stored = np.clip(np.rint(hu + noise + 1024), 0, 4095).astype(np.uint16)
    stored[x ** 2 + y ** 2 > 1] = 0  # outside the reconstructed field of view
    return stored


def phantom_series(count: int, rows: int = 512, columns: int = 512, seed: int = 1) -> list[bytes]:
    rng = np.random.default_rng(seed)
    study, series = generate_uid(), generate_uid()
    out = []
    for i in range(count):
        ds = new_instance(CTImageStorage, ExplicitVRLittleEndian, study, series)
        _realistic_header(ds, i)
        ds.PatientID, ds.PatientName, ds.StudyDate, ds.Modality = "BENCH1", "Bench^Phantom", "20240101", "CT"
        ds.InstanceNumber, ds.ImagePositionPatient = i + 1, [0.0, 0.0, float(i)]
        ds.RescaleIntercept, ds.RescaleSlope = -1024, 1
        ds.Rows, ds.Columns, ds.SamplesPerPixel, ds.PhotometricInterpretation = rows, columns, 1, "MONOCHROME2"
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
        ds.PixelData = phantom_slice(i, rows, columns, rng).tobytes()
        buf = io.BytesIO()
        ds.save_as(buf, enforce_file_format=True)
        out.append(buf.getvalue())
    return out


def random_noise_series(count: int) -> list[bytes]:
    with tempfile.TemporaryDirectory(prefix="bench-ct-") as tmp:
        return [p.read_bytes() for p in generate_ct_series(Path(tmp), count, realistic=True)]


def corpus_files() -> list[bytes]:
    """Every native file of pydicom's corpus that ``eligibility`` accepts, once each."""
    root = Path(pydicom.data.get_testdata_file("CT_small.dcm")).parent  # type: ignore[arg-type]
    out, seen = [], set()
    for p in sorted(root.rglob("*")):
        if not p.is_file():
            continue
        try:
            data = p.read_bytes()
            ds = pydicom.dcmread(io.BytesIO(data))
        except Exception:
            continue
        if eligibility(ds) is None and data not in seen:
            seen.add(data)
            out.append(data)
    return out


@dataclass
class Item:
    """One object of a data set, parsed once (parsing is not what is measured, except in the pipeline)."""

    data: bytes
    ds: pydicom.Dataset
    layout: FrameLayout
    pixel_bytes: int


def items_of(objects: list[bytes]) -> list[Item]:
    out = []
    for data in objects:
        ds = pydicom.dcmread(io.BytesIO(data))
        layout = frame_layout(ds)
        out.append(Item(data, ds, layout, layout.frame_length * layout.number_of_frames))
    return out


@dataclass
class Result:
    stored: int = 0
    refused: int = 0
    encode: list[float] = field(default_factory=list)
    verify: list[float] = field(default_factory=list)
    decode: list[float] = field(default_factory=list)


def _timed(fn: Callable[[], object], min_seconds: float = 0.3) -> float:
    """Seconds for one call of ``fn`` (repeated until ``min_seconds`` have passed, for tiny data sets)."""
    n, start = 0, time.perf_counter()
    while True:
        fn()
        n += 1
        elapsed = time.perf_counter() - start
        if elapsed >= min_seconds:
            return elapsed / n


def _others(items: list[Item], usable: list[Item]) -> list[Item]:
    ids = {id(it) for it in usable}
    return [it for it in items if id(it) not in ids]


def encapsulated_size(frames: list[bytes]) -> int:
    return sum(len(f) + (len(f) & 1) + 8 for f in frames) + 8 + 8


def measure_zlib(items: list[Item], runs: int) -> Result:
    r = Result()
    blobs = [zlib.compress(it.data, ZLIB_LEVEL) for it in items]
    r.stored = sum(len(b) for b in blobs)
    for _ in range(runs):
        r.encode.append(_timed(lambda: [zlib.compress(it.data, ZLIB_LEVEL) for it in items]))
        r.decode.append(_timed(lambda: [zlib.decompress(b) for b in blobs]))
    return r


def measure_codec(items: list[Item], syntax: str, runs: int) -> Result:
    r = Result()
    usable = [it for it in items if eligibility(it.ds, syntax) is None]
    r.refused = len(items) - len(usable)
    encoded = [encode_frames(it.ds, syntax) for it in usable]
    r.stored = sum(len(it.data) - it.pixel_bytes + encapsulated_size(f) for it, f in zip(usable, encoded, strict=True))
    r.stored += sum(len(it.data) for it in _others(items, usable))  # refused objects stay as they are
    for _ in range(runs):
        r.encode.append(_timed(lambda: [encode_frames(it.ds, syntax, verify=False) for it in usable]))
        r.verify.append(_timed(lambda: [encode_frames(it.ds, syntax) for it in usable]))
        r.decode.append(_timed(lambda: [[decode_frame(f, syntax, it.layout) for f in fs]
                                        for it, fs in zip(usable, encoded, strict=True)]))
    return r


def _ojph_encode(it: Item, tmp: Path) -> tuple[list[bytes], float]:
    """HTJ2K codestreams of ``it``'s frames by OpenJPH's command line tool, and its own encode seconds."""
    lay = it.layout
    native = np.frombuffer(it.ds.PixelData[: it.pixel_bytes], dtype=np.uint8 if lay.bits_allocated == 8 else "<u2")
    frames, seconds = [], 0.0
    for i, frame in enumerate(native.reshape(lay.number_of_frames, -1)):
        pixels = frame.reshape(lay.rows, lay.columns, lay.samples_per_pixel) if lay.planar_configuration == 0 \
            else frame.reshape(lay.samples_per_pixel, lay.rows, lay.columns).transpose(1, 2, 0)
        src, dst = tmp / f"f{i}.yuv", tmp / f"f{i}.j2c"
        src.write_bytes(np.ascontiguousarray(pixels.transpose(2, 0, 1)).tobytes())  # raw = component planes
        n = lay.samples_per_pixel
        out = subprocess.run(
            ["ojph_compress", "-i", str(src), "-o", str(dst), "-reversible", "true",
             "-dims", f"{{{lay.columns},{lay.rows}}}", "-num_comps", str(n),
             "-signed", ",".join(["true" if lay.signed else "false"] * n),
             "-bit_depth", ",".join([str(lay.bits_stored)] * n), "-downsamp", ",".join(["{1,1}"] * n)],
            check=True, capture_output=True, text=True)
        seconds += float(out.stdout.strip().rsplit("=", 1)[1])
        frames.append(dst.read_bytes())
    return frames, seconds


def measure_ojph(items: list[Item], runs: int) -> Result | None:
    if not shutil.which("ojph_compress"):
        return None
    r = Result()
    usable = [it for it in items if min(it.layout.rows, it.layout.columns) >= 32 and not
              (it.layout.signed and it.layout.bits_stored < it.layout.bits_allocated)]
    r.refused = len(items) - len(usable)
    with tempfile.TemporaryDirectory(prefix="bench-ojph-") as tmp:
        encoded = []
        for _ in range(runs):
            total, encoded = 0.0, []
            for it in usable:
                frames, seconds = _ojph_encode(it, Path(tmp))
                encoded.append(frames)
                total += seconds
            r.encode.append(total)
            r.decode.append(_timed(lambda done=encoded: [[decode_frame(f, HTJ2K, it.layout) for f in fs]  # type: ignore[misc]
                                                         for it, fs in zip(usable, done, strict=True)]))
        size, exact = 0, []
        for it, fs in zip(usable, encoded, strict=True):
            # Objects whose HTJ2K frames OpenJPEG does not decode bit for bit (signed negative samples: see
            # tests/dicom/test_dicom_lossless.py) would fail verification and stay uncompressed: counted so.
            if b"".join(decode_frame(f, HTJ2K, it.layout) for f in fs) == it.ds.PixelData[: it.pixel_bytes]:
                exact.append(it)
                size += len(it.data) - it.pixel_bytes + encapsulated_size(fs)
    r.refused = len(items) - len(exact)
    r.stored = size + sum(len(it.data) for it in _others(items, exact))
    return r


def _pipeline_one(args: tuple[bytes, str]) -> int:
    data, syntax = args
    ds = pydicom.dcmread(io.BytesIO(data))
    return sum(len(f) for f in encode_frames(ds, syntax))


def background_throughput(objects: list[bytes], syntax: str, processes: int, runs: int) -> float:
    """MB/s of objects through parse + encode + verify on ``processes`` worker processes (what a background
    compression job does, less reading and writing the blobs)."""
    total = sum(len(d) for d in objects)
    times = []
    with multiprocessing.get_context("fork").Pool(processes) as pool:
        pool.map(_pipeline_one, [(objects[0], syntax)] * processes)  # warm the workers
        for _ in range(runs):
            start = time.perf_counter()
            pool.map(_pipeline_one, [(d, syntax) for d in objects], chunksize=1)
            times.append(time.perf_counter() - start)
    return total / statistics.median(times) / MB


def report(name: str, items: list[Item], runs: int, codecs: list[str]) -> dict[str, float]:
    total = sum(len(it.data) for it in items)
    print(f"\n## {name}: {len(items)} objects, {total / MB:.2f} MB")
    print(f"{'method':<22}{'ratio':>8}{'saved':>8}{'vs zlib':>9}{'enc MB/s':>10}{'enc+verify':>12}{'dec MB/s':>10}"
          f"{'refused':>9}")
    results: dict[str, Result | None] = {"zlib 6 (Orthanc)": measure_zlib(items, runs)}
    for syntax in codecs:
        results[CODEC_NAMES[syntax]] = measure_codec(items, syntax, runs)
    results[CODEC_NAMES[HTJ2K]] = measure_ojph(items, runs)
    zlib_ratio = total / results["zlib 6 (Orthanc)"].stored  # type: ignore[union-attr]
    ratios = {}
    for method, r in results.items():
        if r is None:
            print(f"{method:<22}  (ojph_compress not installed)")
            continue
        ratio = total / r.stored
        ratios[method] = ratio
        enc = total / statistics.median(r.encode) / MB
        ver = f"{total / statistics.median(r.verify) / MB:10.1f}" if r.verify else f"{'':>10}"
        dec = total / statistics.median(r.decode) / MB
        print(f"{method:<22}{ratio:7.2f}x{1 - 1 / ratio:7.0%}{ratio / zlib_ratio:8.2f}x{enc:10.1f}  {ver}"
              f"{dec:10.1f}{r.refused:9d}")
    return ratios


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--slices", type=int, default=32, help="512x512 slices of the generated series")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--processes", type=int, default=2)
    args = parser.parse_args()
    warnings.filterwarnings("ignore", category=UserWarning, module="pydicom")  # the corpus's damaged values
    print(f"python {sys.version.split()[0]}, {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f}; "
          f"zlib level {ZLIB_LEVEL} on the whole file; MB/s = object bytes per second on one core; median of "
          f"{args.runs}")
    codecs = [JLS, J2K]
    real = [Path(pydicom.data.get_testdata_file(n)).read_bytes()  # type: ignore[arg-type]
            for n in ("CT_small.dcm", "MR_small.dcm")]
    phantom = phantom_series(args.slices)
    sets = {
        "pydicom CT_small.dcm (real CT, 128x128, signed 16-bit)": items_of(real[:1]),
        "pydicom MR_small.dcm (real MR, 64x64, signed 16-bit)": items_of(real[1:]),
        f"generated CT phantom series ({args.slices} x 512x512, 12-bit, correlated noise)": items_of(phantom),
        "benchmarks' random-noise CT (8 x 512x512, uniform noise: worst case)": items_of(random_noise_series(8)),
        "pydicom corpus, every eligible native file": items_of(corpus_files()),
    }
    for name, items in sets.items():
        report(name, items, args.runs, codecs)
    print(f"\n## background compression (parse + encode + verify), phantom series, {args.processes} processes")
    for syntax in codecs:
        one = background_throughput(phantom, syntax, 1, args.runs)
        many = background_throughput(phantom, syntax, args.processes, args.runs)
        print(f"{CODEC_NAMES[syntax]:<22} 1 process {one:7.1f} MB/s   {args.processes} processes {many:7.1f} MB/s")
    print(f"load average at the end {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
