"""Storage tiers (issue #11): tier moves, fixity scan speed and its cost to C-STORE, time to first byte of a study on
the cold store — side by side with Orthanc where a comparison exists.

Parts (each median of ``--runs``):

1. **Tier move** of a CT series hot folder → cold folder and hot folder → S3 (moto on loopback): MB/s and this
   process's CPU seconds per GB (copy, read back, SHA-256, record, drop).
2. **Fixity scan** of the same series (page cache dropped before each pass when permitted): ``verify``'s MB/s
   against a plain sequential read of the same files (the disk's read speed as Python sees it) and a read with
   SHA-256 (the floor of any verified scan).
3. **Fixity while storing**: C-STORE (storescu, 4 associations) of a second series into ``dicomvault serve``, alone
   and while ``dicomvault verify`` scans the first series (throttled to the default 32 MiB/s, and unthrottled).
4. **Time to first byte** of a WADO-RS study retrieval: DicomVault with the study on the hot folder, DicomVault
   with it on the cold store (S3 on loopback), and Orthanc (its only storage, a folder).

    python benchmarks/tiers.py --count 200 --runs 3
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import boto3

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.common import (
    VENV_BIN,
    Server,
    dicomvault,
    free_port,
    generate_ct_series,
    median,
    orthanc,
)
from benchmarks.dimse_store import store
from benchmarks.storage_backends import start_moto
from dicomvault.bootstrap import Archive, build_archive
from dicomvault.settings import Settings

MB = 1e6


def drop_caches() -> bool:
    """Drop the page cache so that reads hit the disk (needs root); False when not permitted."""
    try:
        os.sync()
        Path("/proc/sys/vm/drop_caches").write_text("3\n")
        return True
    except OSError:
        return False


def cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


@contextmanager
def moto() -> Iterator[str]:
    port = free_port()
    proc = start_moto(port)
    endpoint = f"http://127.0.0.1:{port}"
    try:
        os.environ.setdefault("AWS_ACCESS_KEY_ID", "bench")
        os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "bench")
        boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1").create_bucket(Bucket="cold")
        yield f"s3://cold/dv?endpoint={endpoint}&region=us-east-1"
    finally:
        proc.terminate()
        proc.wait()


def tier_settings(root: Path, cold_url: str) -> Settings:
    rule = {"name": "all to cold", "when": {"min_study_bytes": 0}, "action": {"move_to": "cold"}}
    return Settings.load(data_dir=root / "vault", ingest_store="hot", tier_max_bytes_per_second=0,
                         stores={"hot": {"url": f"file://{root / 'hot'}"}, "cold": {"url": cold_url}},
                         lifecycle=[rule])


def measure_move(files: list[Path], cold_url: str) -> tuple[float, float]:
    """(MB/s, CPU s per GB) of moving one study of ``files`` from the hot folder to ``cold_url``."""
    root = Path(tempfile.mkdtemp(prefix="bench-tiers-"))
    try:
        archive = build_archive(tier_settings(root, cold_url))
        try:
            study = ""
            for f in files:
                study = archive.ingest.ingest(io.BytesIO(f.read_bytes()), source="bench").study_uid
            assert archive.tiering is not None
            size = sum(f.stat().st_size for f in files)
            drop_caches()
            c0, t0 = cpu(), time.perf_counter()
            work = archive.tiering.apply_study(study)
            elapsed, used = time.perf_counter() - t0, cpu() - c0
            assert work.copied == len(files) and work.dropped == len(files), work
            return size / MB / elapsed, used / (size / 1e9)
        finally:
            archive.close()
    finally:
        shutil.rmtree(root, ignore_errors=True)


def read_rate(files: list[Path], *, sha: bool) -> float:
    drop_caches()
    total, t0 = 0, time.perf_counter()
    for f in files:
        digest = hashlib.sha256() if sha else None
        with f.open("rb", buffering=0) as fh:
            while chunk := fh.read(1 << 20):
                total += len(chunk)
                if digest is not None:
                    digest.update(chunk)
    return total / MB / (time.perf_counter() - t0)


def verify_rate(data_dir: Path, extra: list[str] | None = None, *, live: bool = False) -> float:
    """MB/s of ``dicomvault verify`` over ``data_dir`` (the whole process, start-up included). ``live``: the
    archive is being written meanwhile (a grace period for writes in progress; the outcome is not checked)."""
    drop_caches()
    size = sum(p.stat().st_size for p in (data_dir / "blobs").rglob("*") if p.is_file())
    t0 = time.perf_counter()
    r = subprocess.run([str(VENV_BIN / "dicomvault"), "verify", "--data-dir", str(data_dir), "--grace",
                        "3600" if live else "0", "--json", *(extra or [])], capture_output=True, text=True,
                       check=False)
    elapsed = time.perf_counter() - t0
    if r.returncode != 0 and not live:
        raise RuntimeError(r.stdout[-2000:] + r.stderr[-2000:])
    return size / MB / elapsed


def import_into(data_dir: Path, folder: Path) -> None:
    subprocess.run([str(VENV_BIN / "dicomvault"), "import", str(folder), "--data-dir", str(data_dir)],
                   check=True, capture_output=True)


def ttfb(url: str) -> tuple[float, float]:
    """(seconds to the first body byte, seconds to the last) of a GET."""
    t0 = time.perf_counter()
    req = urllib.request.Request(url, headers={"Accept": 'multipart/related; type="application/dicom"'})
    with urllib.request.urlopen(req, timeout=120) as r:
        r.read(1)
        first = time.perf_counter() - t0
        while r.read(1 << 20):
            pass
    return first, time.perf_counter() - t0


def runs(n: int, fn: Callable[[], float]) -> float:
    return median([fn() for _ in range(n)])


def part_move(files: list[Path], n: int) -> None:
    print("\n1. Tier move of one study (copy, read back + SHA-256, record, drop)")
    size = sum(f.stat().st_size for f in files) / MB
    for label, url_ctx in (("hot folder -> cold folder", None), ("hot folder -> S3 (moto, loopback)", moto)):
        results = []
        for _ in range(n):
            if url_ctx is None:
                with tempfile.TemporaryDirectory(prefix="bench-cold-") as cold:
                    results.append(measure_move(files, f"file://{cold}"))
            else:
                with url_ctx() as url:
                    results.append(measure_move(files, url))
        print(f"   {label:36s} {median([r[0] for r in results]):7.1f} MB/s   "
              f"{median([r[1] for r in results]):6.2f} CPU s/GB   ({size:.0f} MB, median of {n})")


def part_fixity(files: list[Path], n: int) -> None:
    print("\n2. Fixity scan (page cache dropped before each pass: %s)" % ("yes" if drop_caches() else "NO"))
    with tempfile.TemporaryDirectory(prefix="bench-fix-") as tmp:
        data_dir = Path(tmp) / "vault"
        import_into(data_dir, files[0].parent)
        blobs = [p for p in (data_dir / "blobs").rglob("*") if p.is_file() and len(p.name) == 64]
        raw = runs(n, lambda: read_rate(blobs, sha=False))
        hashed = runs(n, lambda: read_rate(blobs, sha=True))
        archive = build_archive(Settings.load(data_dir=data_dir))
        try:
            timings: list[tuple[float, float, float]] = []

            def scan() -> float:
                drop_caches()
                t0 = time.perf_counter()
                report = archive.fixity.check()
                assert report.clean, report
                total = report.bytes_read / MB / (time.perf_counter() - t0)
                timings.append((report.bytes_read / MB / report.verify_seconds, report.listing_seconds, total))
                return total

            inproc = runs(n, scan)
            verify = median([t[0] for t in timings])
            listing = median([t[1] for t in timings])
        finally:
            archive.close()
        cli = runs(n, lambda: verify_rate(data_dir))
        print(f"   sequential read (the disk)              {raw:7.1f} MB/s")
        print(f"   read + SHA-256 (one core)               {hashed:7.1f} MB/s")
        share = f"{verify / raw:.0%}"
        print(f"   copies re-read and hashed               {verify:7.1f} MB/s   = {share} of the disk's read speed")
        print(f"   whole check, store listing included     {inproc:7.1f} MB/s   (listing: {listing:.2f} s, a fixed "
              "cost per store)")
        print(f"   dicomvault verify (with its start-up)   {cli:7.1f} MB/s")


def part_fixity_while_storing(files: list[Path], second: list[Path], n: int) -> None:
    print("\n3. C-STORE (4 associations) of a second series while the server's own fixity scan reads the first")
    groups = [second[i::4] for i in range(4)]
    base: list[float] = []
    results: dict[str, list[float]] = {}
    scan_rates: dict[str, list[float]] = {}
    for label, limit in (("alone", None), ("scan at 32 MiB/s", 32 << 20), ("scan unthrottled", 0)):
        env = {"DICOMVAULT_FIXITY_MAX_BYTES_PER_SECOND": str(limit or 0)}
        with dicomvault(env=env) as server:
            data_dir = server.workdir / "data"
            store(server, [files[i::4] for i in range(4)])  # the series the scan reads
            keep = study_of(server)
            archive = build_archive(Settings.load(data_dir=data_dir))  # enqueues the server's scan jobs
            try:
                for _ in range(n):
                    delete_except(server, keep)
                    stop = threading.Event()
                    feeder = None
                    if limit is not None:
                        feeder = threading.Thread(target=feed_scans, args=(archive, stop))
                        feeder.start()
                        time.sleep(1.5)  # the worker polls every second
                    elapsed = store(server, groups)
                    stop.set()
                    if feeder is not None:
                        feeder.join()
                    results.setdefault(label, []).append(len(second) / elapsed)
                    report = data_dir / "fixity" / "last-report.json"
                    if limit is not None and report.exists():
                        doc = json.loads(report.read_text())
                        rate = doc["bytes_read"] / MB / max(doc["verify_seconds"], 1e-3)
                        scan_rates.setdefault(label, []).append(rate)
            finally:
                archive.close()
        if label == "alone":
            base = results[label]
    for label, values in results.items():
        rate = f"   scan {median(scan_rates[label]):5.1f} MB/s" if scan_rates.get(label) else ""
        print(f"   {label:20s} {median(values):7.1f} instances/s   ({median(values) / median(base):.0%} of alone)"
              + rate)


def feed_scans(archive: Archive, stop: threading.Event) -> None:
    """Keep a fixity-scan job queued (one at a time: deduplicated) until ``stop``."""
    assert archive.jobs is not None
    while not stop.wait(0.2):
        archive.jobs.enqueue("fixity-scan", {}, dedupe_key="fixity-scan", max_attempts=1)


def delete_except(server: Server, keep: str) -> None:
    """Delete every study but ``keep`` (over DICOMweb), so that every run stores new objects."""
    with urllib.request.urlopen(f"{server.http}/dicom-web/studies?limit=1000") as r:
        studies = [s["0020000D"]["Value"][0] for s in json.loads(r.read() or b"[]")]
    for uid in studies:
        if uid != keep:
            req = urllib.request.Request(f"{server.http}/dicom-web/studies/{uid}", method="DELETE")
            urllib.request.urlopen(req).read()


def part_ttfb(files: list[Path], n: int) -> None:
    print("\n4. WADO-RS study retrieval: time to first byte / to last byte")
    with moto() as cold_url, tempfile.TemporaryDirectory(prefix="bench-ttfb-") as tmp:
        cfg = Path(tmp) / "dv.toml"
        cfg.write_text(f'ingest_store = "hot"\ntier_max_bytes_per_second = 0\n[stores.hot]\nurl = "file://{tmp}/hot"\n'
                       f'[stores.cold]\nurl = "{cold_url}"\n')
        env = {k: v for k, v in os.environ.items() if k.startswith("AWS_")}
        with dicomvault(args=["--config", str(cfg)], env=env) as server:
            store(server, [files])
            study = study_of(server)
            hot = [ttfb(f"{server.http}/dicom-web/studies/{study}") for _ in range(n)]
            rule = ('[[lifecycle]]\nname = "all"\nwhen = { min_study_bytes = 0 }\naction = { move_to = "cold" }\n')
            cfg.write_text(cfg.read_text() + rule)
            subprocess.run([str(VENV_BIN / "dicomvault"), "lifecycle", "run", "--config", str(cfg), "--data-dir",
                            str(server.workdir / "data")], check=True, capture_output=True, env={**os.environ, **env})
            cold = [ttfb(f"{server.http}/dicom-web/studies/{study}") for _ in range(n)]
    with orthanc(dicomweb=True) as server:
        store(server, [files])
        study = study_of(server)
        peer = [ttfb(f"{server.http}/dicom-web/studies/{study}") for _ in range(n)]
    for label, values in (("DicomVault, hot folder", hot), ("DicomVault, cold store (S3)", cold),
                          ("Orthanc, its folder", peer)):
        print(f"   {label:30s} first byte {median([v[0] for v in values]) * 1000:7.1f} ms   "
              f"last byte {median([v[1] for v in values]) * 1000:7.1f} ms")


def study_of(server: Server) -> str:
    with urllib.request.urlopen(f"{server.http}/dicom-web/studies") as r:
        return str(json.loads(r.read())[0]["0020000D"]["Value"][0])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--count", type=int, default=200, help="CT instances per series (512x512, ~0.5 MB each)")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--parts", default="1,2,3,4")
    args = parser.parse_args()
    parts = set(args.parts.split(","))
    with tempfile.TemporaryDirectory(prefix="bench-ct-") as tmp:
        files = generate_ct_series(Path(tmp) / "a", args.count, realistic=True)
        second = generate_ct_series(Path(tmp) / "b", args.count, realistic=True, seed=1)
        print(f"{args.count} CT instances per series, {sum(f.stat().st_size for f in files) / MB:.0f} MB; "
              f"{os.cpu_count()} cores")
        if "1" in parts:
            part_move(files, args.runs)
        if "2" in parts:
            part_fixity(files, args.runs)
        if "3" in parts:
            part_fixity_while_storing(files, second, args.runs)
        if "4" in parts:
            part_ttfb(files, args.runs)


if __name__ == "__main__":
    main()
