"""The three pixel-data probes of issue #9 (defects 3, 4 and 10) against a real ``dicomvault serve`` process.

    PYTHONPATH=$PWD/src .venv/bin/python -m benchmarks.pixel_probes [--frames 1000000]

For each probe it prints the HTTP status, the time per request and the server's memory: its resident set before
the request and the peak during it (``VmHWM`` of ``/proc/<pid>/status``, reset before each request by writing 5
to ``/proc/<pid>/clear_refs``). Probes:

1. deflate bomb: a Deflated Explicit VR Little Endian object of ~255 KiB that inflates to 256 MiB, sent by
   STOW-RS to a server that admits it (``max_inflate_ratio = 0``) and retrieved with the default transfer syntax
   (Explicit VR Little Endian), then sent to a server with the default settings;
2. decoding amplification: an 8192×8192 16-bit RLE Lossless image (~1 MiB), ``/rendered`` and ``/thumbnail``;
   a native object of one-pixel frames: size of its frame-index row and time of one frame request;
3. short pixel data: a 256×256 16-bit MR whose Pixel Data holds 50,000 of 131,072 bytes: the STOW answer, then
   ``/rendered``, ``/frames/1`` and ``/thumbnail`` (for an object stored before the check existed the archive
   is given it with ``pixel_length_policy=accept-and-flag`` where that setting exists).
Loopback only; the server's data folder is a temporary folder removed afterwards.
"""

from __future__ import annotations

import argparse
import io
import os
import sqlite3
import struct
import subprocess
import sys
import tempfile
import time
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import numpy as np
from pydicom.dataset import Dataset
from pydicom.uid import (
    DeflatedExplicitVRLittleEndian,
    ExplicitVRLittleEndian,
    MRImageStorage,
    RLELossless,
    SecondaryCaptureImageStorage,
)

from benchmarks.common import free_port, new_instance, wait_http


def _base(sop_class: str, ts: str) -> Dataset:
    ds = new_instance(sop_class, ts)
    ds.PatientID, ds.PatientName, ds.Modality = "PROBE", "Probe^Pixel", "OT"
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.PixelRepresentation = 0
    return ds


def _part10(ds: Dataset) -> bytes:
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    return buf.getvalue()


def deflate_bomb(inflated: int = 256 << 20) -> bytes:
    """A valid deflated object whose Pixel Data is ``inflated`` bytes of zeros (deflated chunk by chunk)."""
    ds = _base(SecondaryCaptureImageStorage, DeflatedExplicitVRLittleEndian)
    columns = 8192
    ds.Rows, ds.Columns = inflated // (columns * 2), columns
    ds.BitsAllocated, ds.BitsStored, ds.HighBit = 16, 16, 15
    head = io.BytesIO()
    ds.save_as(head, enforce_file_format=True)  # meta + header (deflated), no pixel data yet
    meta_end = 132 + 12 + struct.unpack("<I", head.getvalue()[140:144])[0]
    header_plain = zlib.decompress(head.getvalue()[meta_end:], -zlib.MAX_WBITS)
    deflater = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)
    out = [head.getvalue()[:meta_end], deflater.compress(header_plain)]
    out.append(deflater.compress(struct.pack("<HH2s2xI", 0x7FE0, 0x0010, b"OW", ds.Rows * columns * 2)))
    zeros = bytes(1 << 20)
    for _ in range(ds.Rows * columns * 2 >> 20):
        out.append(deflater.compress(zeros))
    out.append(deflater.flush())
    return b"".join(out)


def big_rle(side: int = 8192) -> bytes:
    ds = _base(SecondaryCaptureImageStorage, ExplicitVRLittleEndian)
    ds.Rows = ds.Columns = side
    ds.BitsAllocated, ds.BitsStored, ds.HighBit = 16, 12, 11
    arr = np.zeros((side, side), dtype=np.uint16)
    arr[:, : side // 2] = 1000
    arr[side // 4 : side // 2, :] = 3000
    ds.PixelData = arr.tobytes()
    ds.compress(RLELossless, arr, generate_instance_uid=False)
    return _part10(ds)


def many_frames(count: int) -> bytes:
    ds = _base(SecondaryCaptureImageStorage, ExplicitVRLittleEndian)
    ds.Rows = ds.Columns = 1
    ds.BitsAllocated, ds.BitsStored, ds.HighBit = 8, 8, 7
    ds.NumberOfFrames = count
    ds.PixelData = (np.arange(count) % 251).astype(np.uint8).tobytes()
    return _part10(ds)


def short_mr() -> bytes:
    ds = _base(MRImageStorage, ExplicitVRLittleEndian)
    ds.Modality = "MR"
    ds.Rows = ds.Columns = 256
    ds.BitsAllocated, ds.BitsStored, ds.HighBit = 16, 12, 11
    ds.PixelData = bytes(50_000)
    return _part10(ds)


class Probe:
    def __init__(self, pid: int, base: str, headers: dict[str, str]) -> None:
        self.pid, self.base, self.headers = pid, base, headers

    def _status(self) -> dict[str, int]:
        out = {}
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            key, _, value = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                out[key] = int(value.split()[0]) // 1024
        return out

    def request(self, label: str, method: str, url: str, **kwargs: object) -> httpx.Response:
        Path(f"/proc/{self.pid}/clear_refs").write_text("5")  # reset the peak (VmHWM) to the current RSS
        before = self._status()["VmRSS"]
        start = time.perf_counter()
        resp = httpx.request(method, self.base + url, headers={**self.headers, **kwargs.pop("headers", {})},
                             timeout=300, **kwargs)  # type: ignore[arg-type]
        took = time.perf_counter() - start
        peak = self._status()["VmHWM"]
        print(f"{label:<44} {resp.status_code:>4}  {took:7.2f} s  RSS {before:5d} MB  peak {peak:5d} MB "
              f"(+{peak - before} MB)  {len(resp.content):>11,d} bytes")
        return resp


@contextmanager
def server(extra_env: dict[str, str]) -> Iterator[tuple[subprocess.Popen[bytes], str, Path, dict[str, str]]]:
    with tempfile.TemporaryDirectory(prefix="dv-probe-") as tmp:
        data = Path(tmp) / "vault"
        env = {**os.environ, **extra_env}
        secret = subprocess.run([sys.executable, "-m", "dicomvault", "token", "create", "probe", "-s", "admin",
                                 "--data-dir", str(data)], env=env, capture_output=True, text=True, check=True)
        token = secret.stdout.strip().splitlines()[-1]
        http = free_port()
        proc = subprocess.Popen([sys.executable, "-m", "dicomvault", "serve", "--data-dir", str(data),
                                 "--http-port", str(http), "--dimse-port", str(free_port()), "--log-level", "WARNING"],
                                env=env, stdout=subprocess.DEVNULL)
        try:
            wait_http(f"http://127.0.0.1:{http}/healthz", timeout=60)
            yield proc, f"http://127.0.0.1:{http}/dicom-web", data, {"Authorization": f"Bearer {token}"}
        finally:
            proc.terminate()
            proc.wait(timeout=60)


def stow(probe: Probe, label: str, data: bytes) -> httpx.Response:
    return probe.request(label, "POST", "/studies", content=data, headers={"Content-Type": "application/dicom"})


def instance_path(data: bytes) -> str:
    from pydicom import dcmread

    ds = dcmread(io.BytesIO(data), stop_before_pixels=True)
    return f"/studies/{ds.StudyInstanceUID}/series/{ds.SeriesInstanceUID}/instances/{ds.SOPInstanceUID}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--frames", type=int, default=1_000_000, help="one-pixel frames of the frame probe")
    args = parser.parse_args()
    bomb = deflate_bomb()
    print("-- 1. deflate bomb")
    print(f"   object: {len(bomb):,d} bytes deflated, 256 MiB inflated")
    # The same object on a server whose settings admit it (where the setting exists): retrieval streams.
    with server({"DICOMVAULT_MAX_INFLATE_RATIO": "0"}) as (proc, base, data_dir, headers):
        probe = Probe(proc.pid, base, headers)
        stow(probe, "STOW-RS deflate bomb (max_inflate_ratio=0)", bomb)
        probe.request("WADO-RS instance (Explicit VR LE)", "GET", instance_path(bomb),
                      headers={"Accept": "multipart/related; type=\"application/dicom\""})
    env = {"DICOMVAULT_PIXEL_LENGTH_POLICY": "accept-and-flag"}
    with server(env) as (proc, base, data_dir, headers):
        probe = Probe(proc.pid, base, headers)
        resp = stow(probe, "STOW-RS deflate bomb (default settings)", bomb)
        if resp.status_code != 200:
            print(f"   {resp.text[:240]}")
        print("-- 2. decoding amplification")
        rle = big_rle()
        print(f"   object: {len(rle):,d} bytes RLE, 8192x8192 16-bit")
        stow(probe, "STOW-RS 8192x8192 RLE", rle)
        for suffix in ("/rendered", "/thumbnail"):
            probe.request(f"GET {suffix}", "GET", instance_path(rle) + suffix, headers={"Accept": "image/jpeg"})
        frames = many_frames(args.frames)
        stow(probe, f"STOW-RS {args.frames:,d} one-pixel frames", frames)
        with sqlite3.connect(data_dir / "index.sqlite") as db:
            (size,) = db.execute("select max(length(frame_index)) from instances").fetchone()
        print(f"   frame_index row: {size:,d} characters")
        for n in (1, args.frames // 2):
            probe.request(f"GET /frames/{n}", "GET", instance_path(frames) + f"/frames/{n}",
                          headers={"Accept": "application/octet-stream; transfer-syntax=*"})
        print("-- 3. short pixel data")
        mr = short_mr()
        stow(probe, "STOW-RS short MR", mr)
        for suffix in ("/rendered", "/frames/1", "/thumbnail"):
            resp = probe.request(f"GET {suffix}", "GET", instance_path(mr) + suffix)
            if resp.status_code >= 400:
                print(f"   {resp.text[:160]}")


if __name__ == "__main__":
    main()
