"""Ingest throughput with the filesystem vs the S3 blob store (no network front end: C-STORE-free).

Generates ``--count`` CT instances (512×512, 16-bit, ~0.5 MB each, distinct pixel data), ingests them through
``IngestService`` into a fresh archive on each backend (SQLite index in a temporary folder), and prints
instances/s, MB/s and the S3/filesystem ratio. S3 is moto's ``moto_server`` in a child process on a loopback
port: a Python emulator that keeps objects in memory, so its figures are a lower bound for a real S3/MinIO.

    .venv/bin/python benchmarks/storage_backends.py --count 200 --append /tmp/benchmarks-storage.md

(then copy the table into docs/benchmarks.md, section 4)
"""

from __future__ import annotations

import argparse
import io
import os
import platform
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import boto3

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.common import free_port, generate_ct_series
from dicomvault.bootstrap import build_archive
from dicomvault.settings import Settings


def make_instances(count: int) -> list[bytes]:
    """The same generated CT series as the side-by-side benchmarks, as bytes."""
    with tempfile.TemporaryDirectory(prefix="bench-ct-") as tmp:
        return [p.read_bytes() for p in generate_ct_series(Path(tmp), count)]


def start_moto(port: int) -> subprocess.Popen[bytes]:
    proc = subprocess.Popen([str(Path(sys.executable).with_name("moto_server")), "-H", "127.0.0.1", "-p", str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return proc
        time.sleep(0.05)
    proc.kill()
    raise RuntimeError("moto_server did not start")


def run(storage_url: str | None, data_dir: Path, instances: list[bytes]) -> float:
    archive = build_archive(Settings.load(data_dir=data_dir, storage_url=storage_url))
    try:
        start = time.perf_counter()
        for data in instances:
            archive.ingest.ingest(io.BytesIO(data), source="bench")
        elapsed = time.perf_counter() - start
        assert archive.index.stats().instances == len(instances)
        return elapsed
    finally:
        archive.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--count", type=int, default=200)
    parser.add_argument("--append", type=Path, help="Markdown file to append the result to.")
    args = parser.parse_args()

    instances = make_instances(args.count)
    total_mb = sum(map(len, instances)) / 1e6
    os.environ.setdefault("AWS_ACCESS_KEY_ID", "bench")
    os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "bench-secret")
    os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")
    port = free_port()
    moto = start_moto(port)
    tmp = Path(tempfile.mkdtemp(prefix="dv-bench-"))
    try:
        endpoint = f"http://127.0.0.1:{port}"
        boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1").create_bucket(Bucket="bench")
        fs_s = run(None, tmp / "fs", instances)
        s3_s = run(f"s3://bench/vault?endpoint={endpoint}&region=us-east-1", tmp / "s3", instances)
    finally:
        moto.terminate()
        moto.wait(10)
        shutil.rmtree(tmp, ignore_errors=True)

    rows = [("filesystem (fsync)", fs_s), ("S3 (moto_server, loopback)", s3_s)]
    lines = [f"| {name} | {args.count / s:.1f} | {total_mb / s:.1f} | {s:.2f} |" for name, s in rows]
    ratio = fs_s / s3_s
    print(f"{args.count} instances, {total_mb:.1f} MB")
    for name, s in rows:
        print(f"{name:28s} {args.count / s:8.1f} inst/s {total_mb / s:8.1f} MB/s ({s:.2f} s)")
    print(f"S3/filesystem throughput ratio: {ratio:.2f} (moto is an in-memory Python emulator: S3 is a lower bound)")
    if args.append:
        new_file = not args.append.exists()
        with args.append.open("a") as f:
            if new_file:
                f.write("# Blob store benchmarks\n")
            f.write(
                f"\n## Ingest throughput by blob store — {datetime.now(UTC):%Y-%m-%d %H:%M} UTC\n\n"
                f"Command: `.venv/bin/python benchmarks/storage_backends.py --count {args.count}"
                f" --append {args.append}`  \n"
                f"Machine: {platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}; "
                f"{args.count} CT instances 512×512×16-bit ({total_mb:.1f} MB), IngestService called directly "
                "(no DIMSE/HTTP), SQLite index, one thread.\n\n"
                "| backend | instances/s | MB/s | seconds |\n|---|---|---|---|\n" + "\n".join(lines) + "\n\n"
                f"S3/filesystem throughput ratio: **{ratio:.2f}**. The S3 endpoint is moto (`moto_server`, an "
                "in-memory Python S3 emulator in a child process on loopback), which is much slower than AWS S3 "
                "or MinIO per request, so the S3 figures are a lower bound.\n"
            )


if __name__ == "__main__":
    main()
