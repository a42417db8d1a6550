"""Compression at rest (issue #11 item 4): the targets measured on the real path, side by side with Orthanc.

Parts (``--parts``, each figure the median of ``--runs`` repeats):

1. ``compress`` — background compression throughput: a generated CT study (``--slices`` 512x512 slices of the
   phantom of ``benchmarks/compression.py``: air, body, lungs, spine, correlated noise; not uniform noise) is
   ingested into a fresh archive, the page cache dropped (when permitted), then compressed by the tier job of a
   compress rule exactly as ``dicomvault lifecycle run`` does it after its start-up (``TierService.schedule``,
   then a job ``Worker`` running the ``tier-study`` jobs: ``CompressionService`` read + SHA-256, encode, verify,
   build, prove, write, read back, switch, remove the original). MB/s of *input* (the objects as received) per
   second, this process's CPU seconds per GB, the ratio, and zlib level 6 on the same files (what Orthanc's
   ``StorageCompression`` would store) for reference. ``--profile`` prints where the first run's time went. One
   study is one job on one thread, so ``--processes`` (default: the CPU count) worker processes also compress as
   many studies at once (the slices shared among them), as several nodes or ``lifecycle run`` commands would.
2. ``retrieve`` — whole-study WADO-RS retrieval of that study (``dicomvault serve`` and Orthanc with its DICOMweb
   plugin, both fed by storescu, both on this machine's disk, page cache warm unless ``--cold``): DicomVault with
   the study as received, then compressed by ``dicomvault lifecycle run`` (the server stopped meanwhile, so that
   its own job worker cannot take the job; the command's wall time, CPU and peak memory are shown), with the
   default Accept (the rebuilt originals, checked once to be byte for byte what the same request gave before
   compression: storescu sends no File Meta, so the server's objects are not the files) and with
   ``transfer-syntax=*`` (the stored JPEG-LS objects); Orthanc with the same study stored uncompressed (and, for
   reference, with its zlib ``StorageCompression``). MB/s is of the study as received (the original bytes) per
   second, whatever was sent; body MB and the server's CPU seconds (process tree) are shown too.
3. ``frames`` — one multi-frame object of ``--frames`` 512x512 16-bit phantom frames (2000: ~1.05 GB; the
   compression size limit is 1 GiB by default), stored, compressed by ``dicomvault lifecycle run`` (its wall
   time, CPU, peak memory and the ratio), then ``--frame-requests`` WADO-RS requests for single random frames on
   one keep-alive connection: median and p95 latency, default Accept (``multipart/related;
   type="application/octet-stream"``: the frame decoded to the original's bytes, checked against the file) and
   ``transfer-syntax=*`` (the JPEG-LS codestream as stored); the same before compression for reference.

A summary against the issue's targets ends the output. Run it on an idle machine: every figure is this machine's.

Full measurement (about 0.26 GB study, 1.05 GB multi-frame object, 5 repeats; roughly 10 min on 2 idle cores,
~4 GB of /tmp, ~4 GB of memory for the compression of the 1 GB object):

    PYTHONPATH=$PWD/src:$PWD .venv/bin/python benchmarks/compression_at_rest.py --slices 500 --frames 2000 \\
        --runs 5 --frame-requests 200

Smoke run (seconds): ``--slices 16 --frames 24 --runs 2 --frame-requests 20``.
"""

from __future__ import annotations

import argparse
import cProfile
import hashlib
import http.client
import io
import json
import multiprocessing
import os
import pstats
import random
import shutil
import sys
import tempfile
import time
import zlib
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pydicom
from pydicom.uid import JPEGLSLossless

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.common import (
    Server,
    median,
    orthanc,
    percentile,
)
from benchmarks.compression import phantom_series
from benchmarks.compression_at_rest_setup import (
    CODEC,
    MultiFrame,
    Savings,
    Study,
    compress_rule,
    cpu_self,
    fetch,
    fetch_parts,
    index_env,
    index_url,
    lifecycle_config,
    lifecycle_run,
    multipart_parts,
    savings,
    serve,
    write_ct_study,
    write_multiframe,
)
from benchmarks.dimse_store import store, tree_cpu_seconds
from benchmarks.tiers import drop_caches
from dicomvault.bootstrap import build_archive
from dicomvault.jobs.handlers import default_handlers
from dicomvault.jobs.worker import Worker
from dicomvault.ports.jobs import JobState
from dicomvault.services.tiering import TIER_STUDY
from dicomvault.settings import Settings

MB = 1e6
JLS = str(JPEGLSLossless)

#: Accept headers of the measurements.
STUDY_DEFAULT = 'multipart/related; type="application/dicom"'
STUDY_AS_STORED = 'multipart/related; type="application/dicom"; transfer-syntax=*'
FRAME_DEFAULT = 'multipart/related; type="application/octet-stream"'
FRAME_AS_STORED = 'multipart/related; type="application/octet-stream"; transfer-syntax=*'
TARGET_COMPRESS_MBS = 100.0
TARGET_FRAME_MS = 20.0


@dataclass
class CompressRun:
    seconds: float
    cpu: float
    saved: Savings


def compress_once(objects: list[bytes], throttle: int, kind: str, profile: cProfile.Profile | None) -> CompressRun:
    """A fresh archive holding the study, compressed by its tier job (as ``lifecycle run`` does it)."""
    with tempfile.TemporaryDirectory(prefix="bench-car-") as tmp, index_url(kind) as url:
        settings = Settings.load(data_dir=Path(tmp) / "vault", index_url=url, tier_max_bytes_per_second=throttle,
                                 lifecycle=[compress_rule()], log_level="WARNING")
        archive = build_archive(settings)
        try:
            for data in objects:
                archive.ingest.ingest(io.BytesIO(data), source="bench")
            assert archive.tiering is not None and archive.jobs is not None
            handlers = default_handlers(archive)
            worker = Worker(archive.jobs, handlers, kinds=[TIER_STUDY], poll_interval=0)
            drop_caches()
            c0, t0 = cpu_self(), time.perf_counter()
            with profile if profile is not None else nullcontext():
                archive.tiering.schedule()
                while worker.run_once():
                    pass
            elapsed, used = time.perf_counter() - t0, cpu_self() - c0
            errors = [j.last_error for state in (JobState.FAILED, JobState.QUEUED)
                      for j in archive.jobs.list(state, limit=10) if j.last_error]
            if errors:
                raise RuntimeError(f"the tier job failed: {errors[0]}")
        finally:
            archive.close()
        saved = savings(settings.data_dir, url)
    if saved.instances != len(objects):
        raise RuntimeError(f"{saved.instances} of {len(objects)} instances were compressed")
    return CompressRun(elapsed, used, saved)


def _job_process(settings: dict[str, object], ready: Any, start: Any, results: Any) -> None:
    """One worker process of ``compress_parallel``: its own archive on the shared data folder and index, running
    tier jobs from the start signal until none is left."""
    archive = build_archive(Settings.load(**settings))
    try:
        assert archive.jobs is not None
        worker = Worker(archive.jobs, default_handlers(archive), kinds=[TIER_STUDY], poll_interval=0)
        ready.put(os.getpid())
        start.wait()
        c0, t0 = cpu_self(), time.perf_counter()
        while worker.run_once():
            pass
        results.put((time.perf_counter() - t0, cpu_self() - c0))
    finally:
        archive.close()


def compress_parallel(studies: list[list[bytes]], throttle: int, kind: str) -> CompressRun:
    """A fresh archive holding ``studies``, their tier jobs queued, then run by one worker process per study (as
    that many nodes, or ``lifecycle run`` commands, would): the wall time from the start signal to the last
    process done (their start-up excluded), their CPU seconds together."""
    ctx = multiprocessing.get_context("spawn")
    with tempfile.TemporaryDirectory(prefix="bench-car-") as tmp, index_url(kind) as url:
        settings: dict[str, object] = {
            "data_dir": Path(tmp) / "vault", "index_url": url, "tier_max_bytes_per_second": throttle,
            "lifecycle": [compress_rule()], "log_level": "WARNING"}
        archive = build_archive(Settings.load(**settings))
        try:
            for objects in studies:
                for data in objects:
                    archive.ingest.ingest(io.BytesIO(data), source="bench")
            assert archive.tiering is not None
            if archive.tiering.schedule() != len(studies):
                raise RuntimeError("the compress rule did not select every study")
        finally:
            archive.close()
        ready, results, start = ctx.Queue(), ctx.Queue(), ctx.Event()
        procs = [ctx.Process(target=_job_process, args=(settings, ready, start, results)) for _ in studies]
        for proc in procs:
            proc.start()
        for _ in procs:
            ready.get(timeout=120)
        drop_caches()
        t0 = time.perf_counter()
        start.set()
        done = [results.get(timeout=3600) for _ in procs]
        elapsed = time.perf_counter() - t0
        for proc in procs:
            proc.join()
        if any(proc.exitcode for proc in procs):
            raise RuntimeError("a worker process failed")
        saved = savings(Path(tmp) / "vault", url)
    if saved.instances != sum(len(s) for s in studies):
        raise RuntimeError(f"{saved.instances} of {sum(len(s) for s in studies)} instances were compressed")
    return CompressRun(elapsed, sum(cpu for _, cpu in done), saved)


def part_compress(study: Study, args: argparse.Namespace) -> dict[str, float]:
    size = study.size
    print(f"\n1. Background compression ({CODEC}) of a {len(study.files)}-slice CT study, {size / MB:.1f} MB as "
          f"received: tier job of a compress rule, in process (tier_max_bytes_per_second={args.throttle}; "
          f"page cache dropped: {'yes' if drop_caches() else 'NO'})")
    objects = [p.read_bytes() for p in study.files]
    profile = cProfile.Profile() if args.profile else None
    runs = []
    for i in range(args.runs):
        run = compress_once(objects, args.throttle, args.index, profile if i == 0 else None)
        runs.append(run)
        print(f"   run {i + 1}: {size / MB / run.seconds:7.1f} MB/s of input   {run.seconds:6.2f} s   "
              f"{run.cpu / (size / 1e9):6.1f} CPU s/GB   ratio {run.saved.ratio:.2f}x")
    rate = median([size / MB / r.seconds for r in runs])
    zlib_stored = sum(len(zlib.compress(d, 6)) for d in objects)
    ratio = runs[0].saved.ratio
    print(f"   median {rate:7.1f} MB/s of input, {median([r.cpu for r in runs]) / (size / 1e9):.1f} CPU s/GB "
          f"(one job: one core); stored {runs[0].saved.stored / MB:.1f} MB of {size / MB:.1f} MB = {ratio:.2f}x "
          f"({1 - 1 / ratio:.0%} saved); zlib 6 on the same files (Orthanc's StorageCompression) "
          f"{size / zlib_stored:.2f}x")
    if profile is not None:
        print_profile(profile, args.profile)
    found = {"compress_mbs": rate, "study_ratio": ratio, "study_zlib_ratio": size / zlib_stored}
    if args.processes > 1:
        n = args.processes
        per = max(1, len(study.files) // n)
        studies = [phantom_series(per, args.rows, args.columns, seed=10 + i) for i in range(n)]
        total = sum(len(d) for s in studies for d in s)
        print(f"   {n} worker processes (one tier job each: {n} studies of {per} slices, {total / MB:.1f} MB; their "
              "start-up not timed):")
        many = []
        for i in range(args.runs):
            run = compress_parallel(studies, args.throttle, args.index)
            many.append(run)
            print(f"   run {i + 1}: {total / MB / run.seconds:7.1f} MB/s of input   {run.seconds:6.2f} s   "
                  f"{run.cpu / (total / 1e9):6.1f} CPU s/GB")
        found["compress_parallel_mbs"] = median([total / MB / r.seconds for r in many])
        print(f"   median {found['compress_parallel_mbs']:7.1f} MB/s of input with {n} processes")
    return found


def print_profile(profile: cProfile.Profile, path: str) -> None:
    profile.dump_stats(path)
    print(f"   profile of run 1 (written to {path}; top 20 by own time):")
    buf = io.StringIO()
    pstats.Stats(profile, stream=buf).sort_stats("tottime").print_stats(20)
    lines = [line for line in buf.getvalue().splitlines() if line.strip()]
    start = next((i for i, line in enumerate(lines) if "ncalls" in line), 0)
    for line in lines[start:]:
        print("     " + line.replace(str(Path(sys.prefix)), "").replace(str(Path(__file__).parent.parent), ""))


# -- 2. study retrieval -------------------------------------------------------------------------------------------


@dataclass
class Retrieval:
    label: str
    seconds: list[float] = field(default_factory=list)
    body: int = 0
    server_cpu: list[float] = field(default_factory=list)


def measure_study(server: Server, study: Study, accept: str, label: str, runs: int, cold: bool) -> Retrieval:
    url = f"{server.http}/dicom-web/studies/{study.uid}"
    fetch(url, accept)  # warm-up: connections, caches, code paths
    result = Retrieval(label)
    for _ in range(runs):
        if cold:
            drop_caches()
        c0 = tree_cpu_seconds(server.process.pid)
        seconds, result.body = fetch(url, accept)
        result.server_cpu.append(tree_cpu_seconds(server.process.pid) - c0)
        result.seconds.append(seconds)
    return result


def study_digests(server: Server, study: Study, accept: str = STUDY_DEFAULT) -> list[str]:
    """SHA-256 of every object a whole-study retrieval gives, sorted."""
    parts = fetch_parts(f"{server.http}/dicom-web/studies/{study.uid}", accept)
    return sorted(hashlib.sha256(data).hexdigest() for _, data in parts)


def check_originals(server: Server, study: Study, before: list[str]) -> None:
    """The default retrieval of the compressed study gives back every object byte for byte as the same request
    did before compression (``before``); ``*`` gives the stored JPEG-LS objects."""
    url = f"{server.http}/dicom-web/studies/{study.uid}"
    if study_digests(server, study) != before:
        raise RuntimeError("the default retrieval of the compressed study differs from the one before compression")
    stored = fetch_parts(url, STUDY_AS_STORED)
    if len(stored) != len(study.files) or not all(JLS in ctype for ctype, _ in stored):
        raise RuntimeError("transfer-syntax=* did not give the stored JPEG-LS objects")


def part_retrieve(study: Study, args: argparse.Namespace, work: Path) -> dict[str, float]:
    print(f"\n2. Whole-study WADO-RS retrieval, {len(study.files)} objects, {study.size / MB:.1f} MB as received "
          f"(page cache {'dropped before each' if args.cold and drop_caches() else 'warm'}; MB/s = MB as received "
          "per second)")
    groups = [study.files[i::2] for i in range(2)]
    results: list[Retrieval] = []
    with index_url(args.index) as url:
        env = index_env(url)
        data_dir = work / "dv-study" / "data"
        data_dir.parent.mkdir(parents=True)
        with serve(data_dir, env) as server:
            store(server, groups)
            before = study_digests(server, study)
            if len(before) != len(study.files):
                raise RuntimeError(f"{len(before)} of {len(study.files)} objects retrieved")
            results.append(measure_study(server, study, STUDY_DEFAULT, "DicomVault, as received", args.runs,
                                         args.cold))
            results.append(measure_study(server, study, STUDY_AS_STORED, "DicomVault, as received, ts=*",
                                         args.runs, args.cold))
        drop_caches()
        cli = lifecycle_run(data_dir, lifecycle_config(work / "dv-study" / "lifecycle.toml", args.throttle), env)
        saved = savings(data_dir, url)
        if saved.instances != len(study.files):
            raise RuntimeError(f"lifecycle run compressed {saved.instances} of {len(study.files)} instances")
        print(f"   dicomvault lifecycle run (server stopped): {cli.seconds:.2f} s = {study.size / MB / cli.seconds:.1f}"
              f" MB/s of input with the command's start-up, {cli.cpu:.2f} CPU s, peak {cli.max_rss_mb:.0f} MB; "
              f"ratio {saved.ratio:.2f}x")
        with serve(data_dir, env) as server:
            check_originals(server, study, before)
            results.append(measure_study(server, study, STUDY_DEFAULT, "DicomVault, compressed -> originals",
                                         args.runs, args.cold))
            results.append(measure_study(server, study, STUDY_AS_STORED, "DicomVault, compressed, ts=*",
                                         args.runs, args.cold))
    if not args.no_orthanc:
        with orthanc(dicomweb=True) as peer:
            store(peer, groups)
            results.append(measure_study(peer, study, STUDY_DEFAULT, "Orthanc, uncompressed", args.runs, args.cold))
        with orthanc(dicomweb=True, extra={"StorageCompression": True}) as peer:
            store(peer, groups)
            results.append(measure_study(peer, study, STUDY_DEFAULT, "Orthanc, StorageCompression (zlib)",
                                         args.runs, args.cold))
    print(f"   {'':38s}{'MB/s':>9}{'seconds':>9}{'body MB':>9}{'server CPU s':>14}")
    rates: dict[str, float] = {}
    for r in results:
        rate = study.size / MB / median(r.seconds)
        rates[r.label] = rate
        print(f"   {r.label:38s}{rate:9.1f}{median(r.seconds):9.3f}{r.body / MB:9.1f}{median(r.server_cpu):14.2f}")
    out = {"dv_compressed_mbs": rates["DicomVault, compressed -> originals"]}
    if "Orthanc, uncompressed" in rates:
        out["orthanc_mbs"] = rates["Orthanc, uncompressed"]
    return out


# -- 3. frames of a large multi-frame object ----------------------------------------------------------------------


def frame_latencies(server: Server, mf: MultiFrame, numbers: list[int], accept: str,
                    check: Callable[[int, bytes], None]) -> tuple[list[float], float]:
    """Seconds of each single-frame request (one keep-alive connection), and the server's CPU seconds in all."""
    path = f"/dicom-web/studies/{mf.study}/series/{mf.series}/instances/{mf.sop}/frames/"
    conn = http.client.HTTPConnection("127.0.0.1", server.http_port, timeout=120)
    try:
        for n in numbers[:3]:  # warm-up, and the content checked
            conn.request("GET", f"{path}{n}", headers={"Accept": accept})
            r = conn.getresponse()
            body = r.read()
            if r.status != 200:
                raise RuntimeError(f"frame {n}: HTTP {r.status} {body[:200]!r}")
            (part,) = multipart_parts(body, r.getheader("Content-Type") or "")
            check(n, part[1])
        out = []
        c0 = tree_cpu_seconds(server.process.pid)
        for n in numbers:
            t0 = time.perf_counter()
            conn.request("GET", f"{path}{n}", headers={"Accept": accept})
            r = conn.getresponse()
            r.read()
            out.append(time.perf_counter() - t0)
            if r.status != 200:
                raise RuntimeError(f"frame {n}: HTTP {r.status}")
        return out, tree_cpu_seconds(server.process.pid) - c0
    finally:
        conn.close()


@dataclass
class FrameStats:
    label: str
    medians: list[float] = field(default_factory=list)
    p95s: list[float] = field(default_factory=list)
    cpu_per_request: list[float] = field(default_factory=list)


def measure_frames(server: Server, mf: MultiFrame, accept: str, label: str, args: argparse.Namespace,
                   check: Callable[[int, bytes], None]) -> FrameStats:
    stats = FrameStats(label)
    rng = random.Random(11)
    for _ in range(args.runs):
        numbers = [rng.randint(1, mf.frames) for _ in range(args.frame_requests)]
        seconds, cpu = frame_latencies(server, mf, numbers, accept, check)
        stats.medians.append(median(seconds))
        stats.p95s.append(percentile(seconds, 95))
        stats.cpu_per_request.append(cpu / len(numbers))
    return stats


def part_frames(args: argparse.Namespace, work: Path) -> dict[str, float]:
    mf = write_multiframe(work / "multiframe.dcm", args.frames, args.rows, args.columns)
    size = mf.path.stat().st_size
    print(f"\n3. Single frames of one multi-frame object: {args.frames} frames of {args.rows}x{args.columns} "
          f"16-bit, {size / MB:.1f} MB; {args.frame_requests} random frames per run, one keep-alive connection")

    def native(n: int, data: bytes) -> None:
        if data != mf.frame(n):
            raise RuntimeError(f"frame {n} is not the original frame's bytes")

    def codestream(n: int, data: bytes) -> None:
        if not data.startswith(b"\xff\xd8\xff\xf7"):  # SOI, then SOF55 (JPEG-LS)
            raise RuntimeError(f"frame {n} is not a JPEG-LS codestream")

    results: list[FrameStats] = []
    with index_url(args.index) as url:
        env = index_env(url)
        data_dir = work / "dv-frames" / "data"
        data_dir.parent.mkdir(parents=True)
        with serve(data_dir, env) as server:
            store(server, [[mf.path]])
            results.append(measure_frames(server, mf, FRAME_DEFAULT, "as received, default", args, native))
            results.append(measure_frames(server, mf, FRAME_AS_STORED, "as received, ts=*", args, native))
        drop_caches()
        cli = lifecycle_run(data_dir, lifecycle_config(work / "dv-frames" / "lifecycle.toml", args.throttle), env)
        saved = savings(data_dir, url)
        if saved.instances != 1:
            raise RuntimeError("lifecycle run did not compress the multi-frame object (compression_max_object_bytes "
                               f"is 1 GiB by default; this object is {size} bytes):\n{cli.output[-2000:]}")
        print(f"   dicomvault lifecycle run (server stopped): {cli.seconds:.2f} s = {size / MB / cli.seconds:.1f} MB/s "
              f"of input with the command's start-up, {cli.cpu:.2f} CPU s, peak {cli.max_rss_mb:.0f} MB; stored "
              f"{saved.stored / MB:.1f} MB = {saved.ratio:.2f}x ({1 - 1 / saved.ratio:.0%} saved)")
        with serve(data_dir, env) as server:
            results.append(measure_frames(server, mf, FRAME_DEFAULT, "compressed, default (decoded)", args, native))
            results.append(measure_frames(server, mf, FRAME_AS_STORED, "compressed, ts=* (codestream)", args,
                                          codestream))
    print(f"   {'DicomVault frame request':34s}{'median ms':>11}{'p95 ms':>9}{'server CPU ms/request':>23}")
    for s in results:
        print(f"   {s.label:34s}{median(s.medians) * 1000:11.2f}{median(s.p95s) * 1000:9.2f}"
              f"{median(s.cpu_per_request) * 1000:23.2f}")
    return {"frame_default_p95_ms": median(results[2].p95s) * 1000,
            "frame_default_median_ms": median(results[2].medians) * 1000,
            "frame_stored_p95_ms": median(results[3].p95s) * 1000, "mf_ratio": saved.ratio,
            "mf_compress_mbs": size / MB / cli.seconds}


# -- summary -----------------------------------------------------------------------------------------------------


def summary(found: dict[str, float]) -> None:
    def verdict(ok: bool) -> str:
        return "met" if ok else "NOT met"

    print("\nSummary against issue #11 item 4")
    if "compress_mbs" in found:
        rate = found["compress_mbs"]
        print(f"   background compression >= {TARGET_COMPRESS_MBS:.0f} MB/s of input: {rate:.1f} MB/s "
              f"(one tier job) -> {verdict(rate >= TARGET_COMPRESS_MBS)}")
        if "compress_parallel_mbs" in found:
            many = found["compress_parallel_mbs"]
            print(f"   ... with several worker processes (one study each): {many:.1f} MB/s -> "
                  f"{verdict(many >= TARGET_COMPRESS_MBS)}")
    if "dv_compressed_mbs" in found and "orthanc_mbs" in found:
        dv, peer = found["dv_compressed_mbs"], found["orthanc_mbs"]
        print(f"   compressed study -> originals >= Orthanc uncompressed: {dv:.1f} vs {peer:.1f} MB/s "
              f"({dv / peer:.2f}x) -> {verdict(dv >= peer)}")
    if "frame_default_p95_ms" in found:
        p95, med = found["frame_default_p95_ms"], found["frame_default_median_ms"]
        print(f"   frame of the compressed multi-frame object < {TARGET_FRAME_MS:.0f} ms (decoded): median "
              f"{med:.2f} ms, p95 {p95:.2f} ms -> {verdict(p95 < TARGET_FRAME_MS)}; ts=* p95 "
              f"{found['frame_stored_p95_ms']:.2f} ms")
    ratios = [f"CT study {found['study_ratio']:.2f}x (zlib 6: {found['study_zlib_ratio']:.2f}x)"
              if "study_ratio" in found else "", f"multi-frame {found['mf_ratio']:.2f}x" if "mf_ratio" in found else ""]
    if any(ratios):
        print(f"   space saved ({CODEC}): {'; '.join(r for r in ratios if r)}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--slices", type=int, default=500, help="slices of the CT study (parts 1, 2); default 500")
    parser.add_argument("--frames", type=int, default=2000,
                        help="frames of the multi-frame object (part 3); default 2000 (~1.05 GB at 512x512)")
    parser.add_argument("--rows", type=int, default=512)
    parser.add_argument("--columns", type=int, default=512)
    parser.add_argument("--runs", type=int, default=5, help="repeats of every measurement (medians are shown)")
    parser.add_argument("--frame-requests", type=int, default=200, help="frame requests per run and mode (part 3)")
    parser.add_argument("--parts", default="compress,retrieve,frames",
                        help="comma-separated: compress, retrieve, frames")
    parser.add_argument("--index", choices=("sqlite", "postgres"), default="sqlite",
                        help="DicomVault's index: its embedded SQLite, or a throwaway database on the local "
                             "PostgreSQL (127.0.0.1:5432, user postgres)")
    parser.add_argument("--throttle", type=int, default=0,
                        help="tier_max_bytes_per_second for compression (default 0: none; the setting's own default "
                             "is 64 MiB/s)")
    parser.add_argument("--processes", type=int, default=os.cpu_count() or 1,
                        help="part 1 also runs this many worker processes on as many studies (the slices shared "
                             "among them); default: the CPU count; 1: only the single job")
    parser.add_argument("--cold", action="store_true", help="drop the page cache before every study retrieval")
    parser.add_argument("--no-orthanc", action="store_true", help="skip Orthanc in part 2 (then no comparison)")
    parser.add_argument("--profile", metavar="FILE", help="cProfile the first compression run of part 1 into FILE")
    args = parser.parse_args()
    parts = {p.strip() for p in args.parts.split(",") if p.strip()}
    unknown = parts - {"compress", "retrieve", "frames"}
    if unknown:
        parser.error(f"unknown parts: {', '.join(sorted(unknown))}")
    print(f"python {sys.version.split()[0]}, pydicom {pydicom.__version__}, {os.cpu_count()} CPUs, load average "
          f"{os.getloadavg()[0]:.2f}; index {args.index}; codec {CODEC}; median of {args.runs}")
    found: dict[str, float] = {}
    with tempfile.TemporaryDirectory(prefix="bench-car-") as tmp:
        work = Path(tmp)
        if parts & {"compress", "retrieve"}:
            study = write_ct_study(work / "ct", args.slices, args.rows, args.columns)
            if "compress" in parts:
                found.update(part_compress(study, args))
            if "retrieve" in parts:
                found.update(part_retrieve(study, args, work))
            shutil.rmtree(work / "ct", ignore_errors=True)
        if "frames" in parts:
            found.update(part_frames(args, work))
    summary(found)
    print(f"load average at the end {os.getloadavg()[0]:.2f}")
    if found:
        print("json " + json.dumps({k: round(v, 3) for k, v in found.items()}))


if __name__ == "__main__":
    main()
