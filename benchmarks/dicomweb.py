"""DICOMweb side by side: DicomVault vs Orthanc (+ its DICOMweb plugin), same workload, one run.

Measures, for each server:
  1. STOW-RS of a CT series (instances/s; batches of 10 instances per request, one client);
  2. QIDO-RS latency p50/p99 over N studies: exact PatientID, PatientName prefix wildcard, StudyDate range,
     ModalitiesInStudy;
  3. series metadata (WADO-RS /metadata) of a 600-instance series (first call and median of warm calls);
  4. whole-study WADO-RS retrieval (MB/s);
  5. frame 1 / middle / last of a large multi-frame instance (~1 GB by default).

    .venv/bin/python benchmarks/dicomweb.py [--studies 5000] [--frames 2000] [--quick]
"""

from __future__ import annotations

import argparse
import io
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterable
from pathlib import Path

import httpx
import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.common import (
    Server,
    dicomvault,
    generate_ct_series,
    median,
    new_instance,
    orthanc,
    percentile,
)

MODALITIES = ["CT", "MR", "US", "CR", "DX", "MG", "NM", "PT"]
SURNAMES = ["SMITH", "JONES", "MULLER", "GARCIA", "ROSSI", "DUBOIS", "NOVAK", "TANAKA", "SILVA", "KOWALSKI"]


def small_instance(i: int, *, study: str | None = None, series: str | None = None, rows: int = 8) -> bytes:
    ds = new_instance(CTImageStorage, ExplicitVRLittleEndian, study, series)
    p = 0 if study else i  # instances of one study share its patient and study attributes
    ds.PatientID = f"PID{p:06d}"
    ds.PatientName = f"{SURNAMES[p % len(SURNAMES)]}^PAT{p}"
    ds.PatientBirthDate = f"19{50 + p % 50:02d}0101"
    ds.PatientSex = "MF"[p % 2]
    ds.StudyDate = f"20{10 + p % 15:02d}{1 + p % 12:02d}{1 + p % 28:02d}"
    ds.StudyTime = "101010"
    ds.AccessionNumber = f"ACC{p:07d}"
    ds.StudyDescription = f"Study {p}"
    ds.Modality = MODALITIES[p % len(MODALITIES)]
    ds.SeriesNumber = 1
    ds.InstanceNumber = i + 1
    ds.ImagePositionPatient = [0.0, 0.0, float(i)]
    ds.ImageOrientationPatient = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0]
    ds.PixelSpacing = [0.7, 0.7]
    ds.Rows = ds.Columns = rows
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.PixelData = np.zeros((rows, rows), dtype=np.uint16).tobytes()
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    return buf.getvalue()


def multipart(parts: Iterable[bytes]) -> tuple[bytes, str]:
    boundary = uuid.uuid4().hex
    body = io.BytesIO()
    for p in parts:
        body.write(f"--{boundary}\r\nContent-Type: application/dicom\r\n\r\n".encode())
        body.write(p)
        body.write(b"\r\n")
    body.write(f"--{boundary}--\r\n".encode())
    return body.getvalue(), f'multipart/related; type="application/dicom"; boundary={boundary}'


def stow(client: httpx.Client, base: str, objects: list[bytes], batch: int = 10) -> float:
    start = time.perf_counter()
    for i in range(0, len(objects), batch):
        body, ctype = multipart(objects[i : i + batch])
        r = client.post(f"{base}/studies", content=body, headers={"Content-Type": ctype,
                                                                  "Accept": "application/dicom+json"})
        if r.status_code != 200:
            raise RuntimeError(f"STOW failed: {r.status_code} {r.text[:300]}")
    return time.perf_counter() - start


def timed(fn: Callable[[], httpx.Response], repeat: int) -> list[float]:
    out = []
    for _ in range(repeat):
        t = time.perf_counter()
        r = fn()
        if r.status_code >= 400:
            raise RuntimeError(f"{r.request.url}: {r.status_code} {r.text[:200]}")
        out.append((time.perf_counter() - t) * 1000)
    return out


def dw_base(server: Server) -> str:
    return f"{server.http}/dicom-web"


def run_server(
    server: Server, args: argparse.Namespace, data: dict[str, object], rows: dict[str, int]
) -> dict[str, float]:
    """Run the whole workload against one server; ``rows`` receives the number of results of each QIDO query
    (both servers must return the same, or the latencies are not comparable)."""
    res: dict[str, float] = {}
    base = dw_base(server)
    with httpx.Client(timeout=600) as c:
        ct: list[bytes] = data["ct"]  # type: ignore[assignment]
        res["stow inst/s"] = len(ct) / stow(c, base, ct)
        for chunk_start in range(0, len(data["studies"]), 500):  # type: ignore[arg-type]
            stow(c, base, data["studies"][chunk_start : chunk_start + 500], batch=100)  # type: ignore[index]
        queries = {
            "qido PatientID": {"PatientID": "PID000123"},
            "qido PatientName prefix": {"PatientName": "MUL*"},
            "qido StudyDate range": {"StudyDate": "20150101-20150331"},
            "qido ModalitiesInStudy": {"ModalitiesInStudy": "MR", "limit": "100"},
        }
        for name, params in queries.items():
            # The query string is written out, not built by httpx: httpx percent-encodes ``*`` as ``%2A``, which
            # Orthanc's DICOMweb plugin (1.x) does not decode, so it matched the literal text and answered an
            # empty list (an earlier version of this script compared that empty answer with our 500 rows).
            # Viewers send the wildcard as is (encodeURIComponent leaves ``*`` alone).
            url = f"{base}/studies?" + "&".join(f"{k}={v}" for k, v in params.items())
            lat = timed(lambda u=url: c.get(u, headers={"Accept": "application/dicom+json"}),  # type: ignore[misc]
                        args.repeat)
            res[f"{name} p50 ms"] = percentile(lat, 50)
            res[f"{name} p99 ms"] = percentile(lat, 99)
            rows[name] = len(c.get(url, headers={"Accept": "application/dicom+json"}).json())
        stow(c, base, data["series600"], batch=50)  # type: ignore[arg-type]
        s600, se600 = data["series600_uids"]  # type: ignore[misc]
        url = f"{base}/studies/{s600}/series/{se600}/metadata"
        first = timed(lambda: c.get(url, headers={"Accept": "application/dicom+json"}), 1)
        warm = timed(lambda: c.get(url, headers={"Accept": "application/dicom+json"}), 10)
        res["series metadata first ms"] = first[0]
        res["series metadata warm ms"] = median(warm)
        study_uid = data["ct_study"]
        rates = []
        for _ in range(5):
            total = 0
            t = time.perf_counter()
            with c.stream("GET", f"{base}/studies/{study_uid}",
                          headers={"Accept": 'multipart/related; type="application/dicom"; transfer-syntax=*'}) as r:
                for chunk in r.iter_bytes():
                    total += len(chunk)
            rates.append(total / 1e6 / (time.perf_counter() - t))
        res["study retrieve MB/s (median of 5)"] = median(rates)
        big: Path = data["big"]  # type: ignore[assignment]
        with open(big, "rb") as f:
            body_head = b"--B\r\nContent-Type: application/dicom\r\n\r\n"
            size = big.stat().st_size

            def gen() -> Iterable[bytes]:
                yield body_head
                while chunk := f.read(1 << 20):
                    yield chunk
                yield b"\r\n--B--\r\n"

            t = time.perf_counter()
            r = c.post(f"{base}/studies", content=gen(),
                       headers={"Content-Type": 'multipart/related; type="application/dicom"; boundary=B',
                                "Accept": "application/dicom+json"})
            if r.status_code != 200:
                raise RuntimeError(f"big STOW failed {r.status_code} {r.text[:300]}")
            res["big STOW MB/s"] = size / 1e6 / (time.perf_counter() - t)
        bs, bse, bi = data["big_uids"]  # type: ignore[misc]
        n = args.frames
        for label, frame in (("first", 1), ("middle", n // 2), ("last", n)):
            furl = f"{base}/studies/{bs}/series/{bse}/instances/{bi}/frames/{frame}"
            lat = timed(lambda u=furl: c.get(u, headers={  # type: ignore[misc]
                "Accept": "multipart/related; type=application/octet-stream; transfer-syntax=*"}), args.repeat_frames)
            res[f"frame {label} ms"] = median(lat)
    return res


def make_big(path: Path, frames: int) -> tuple[str, str, str]:
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.2.1"  # Enhanced CT
    ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID
    ds.SOPInstanceUID = generate_uid()
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.StudyInstanceUID, ds.SeriesInstanceUID = generate_uid(), generate_uid()
    ds.PatientID, ds.PatientName, ds.Modality = "BIG1", "Big^Volume", "CT"
    ds.Rows = ds.Columns = 512
    ds.NumberOfFrames = frames
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    rng = np.random.default_rng(1)
    ds.PixelData = rng.integers(0, 4000, (frames, 512, 512), dtype=np.uint16).tobytes()
    ds.save_as(path, enforce_file_format=True)
    return str(ds.StudyInstanceUID), str(ds.SeriesInstanceUID), str(ds.SOPInstanceUID)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--studies", type=int, default=5000)
    parser.add_argument("--ct", type=int, default=200, help="instances of the 512x512 CT series (STOW, retrieval)")
    parser.add_argument("--frames", type=int, default=2000, help="frames of the big instance (2000 ≈ 1 GB)")
    parser.add_argument("--repeat", type=int, default=100, help="QIDO repetitions per query")
    parser.add_argument("--repeat-frames", type=int, default=5)
    parser.add_argument("--quick", action="store_true", help="small sizes for a smoke run")
    args = parser.parse_args()
    if args.quick:
        args.studies, args.ct, args.frames, args.repeat = 300, 40, 100, 20

    with tempfile.TemporaryDirectory(prefix="bench-dw-") as tmp:
        tmpdir = Path(tmp)
        print("generating data ...", flush=True)
        ct_paths = generate_ct_series(tmpdir / "ct", args.ct)
        import pydicom

        ct_study = str(pydicom.dcmread(ct_paths[0], stop_before_pixels=True).StudyInstanceUID)
        s600, se600 = generate_uid(), generate_uid()
        data: dict[str, object] = {
            "ct": [p.read_bytes() for p in ct_paths],
            "ct_study": ct_study,
            "studies": [small_instance(i) for i in range(args.studies)],
            "series600": [small_instance(i, study=s600, series=se600, rows=64) for i in range(600)],
            "series600_uids": (s600, se600),
            "big": tmpdir / "big.dcm",
        }
        data["big_uids"] = make_big(tmpdir / "big.dcm", args.frames)
        print(f"big instance: {(tmpdir / 'big.dcm').stat().st_size / 1e9:.2f} GB, {args.frames} frames", flush=True)
        results: dict[str, dict[str, float]] = {}
        rows: dict[str, dict[str, int]] = {"Orthanc": {}, "DicomVault": {}}
        with orthanc(dicomweb=True) as server:
            results["Orthanc"] = run_server(server, args, data, rows["Orthanc"])
        with dicomvault() as server:
            results["DicomVault"] = run_server(server, args, data, rows["DicomVault"])
    for name, n in rows["Orthanc"].items():
        print(f"{name}: {n} results from Orthanc, {rows['DicomVault'][name]} from DicomVault")
        if n != rows["DicomVault"][name]:
            raise SystemExit(f"{name}: the servers disagree on the number of results; latencies not comparable")

    higher_is_better = {"stow inst/s", "study retrieve MB/s (median of 5)", "big STOW MB/s"}
    print(f"\n{'metric':34s} {'Orthanc':>12s} {'DicomVault':>12s} {'DicomVault advantage':>22s}")
    for key in results["Orthanc"]:
        o, d = results["Orthanc"][key], results["DicomVault"][key]
        adv = d / o if key in higher_is_better else (o / d if d else float("inf"))
        print(f"{key:34s} {o:12.2f} {d:12.2f} {adv:21.2f}x")


if __name__ == "__main__":
    main()
