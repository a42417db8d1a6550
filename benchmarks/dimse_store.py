"""C-STORE throughput, DicomVault vs Orthanc, side by side in one run.

Workloads (``--workload``):
  ct            a CT series (default 400 instances, 512x512, 16-bit, ~512 KiB) with a minimal header;
  ct-realistic  the same series with the ~70 attributes per instance a scanner writes;
  small         one-instance studies of ~8 KiB (64x64, realistic header): the fixed cost per object.
For each run, each server is started fresh and the files are stored with dcmtk's storescu over 1, 4, 8, 16
associations (``--assocs``), the files split evenly among them. Prints instances/s and MB/s per run, the medians
and the ratio DicomVault / Orthanc.

Also prints, per measurement, each server's CPU time per instance (user + system of the server process and all of
its child processes, from /proc) and how busy the whole machine was: on a 2-core machine that shared budget, not
the disk, is what bounds the rate with several associations. ``--index postgres`` runs DicomVault on a throwaway
database of the local PostgreSQL (127.0.0.1:5432) instead of its embedded SQLite.

    .venv/bin/python benchmarks/dimse_store.py [--workload ct-realistic] [--instances 400] [--runs 3]
        [--assocs 1,4,8,16] [--index sqlite|postgres] [--only dicomvault] [--dv-args "" --dv-args "--dimse-workers 2"]
"""

from __future__ import annotations

import argparse
import os
import shlex
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.common import (
    Server,
    dicomvault,
    generate_ct_series,
    generate_small_studies,
    median,
    orthanc,
)


def _children(pid: int) -> list[int]:
    """``pid`` and every live descendant (from /proc/*/stat parent links)."""
    parents: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        parents.setdefault(int(fields[1]), []).append(int(entry.name))
    found, todo = [], [pid]
    while todo:
        current = todo.pop()
        found.append(current)
        todo.extend(parents.get(current, []))
    return found


def tree_cpu_seconds(pid: int) -> float:
    """User + system CPU time so far of ``pid`` and its live descendants (worker processes included)."""
    total = 0.0
    for p in _children(pid):
        try:
            total += cpu_seconds(p)
        except OSError:
            continue
    return total


def wait_idle(pid: int, timeout: float = 20.0) -> None:
    """Wait until the server's process tree has used under 50 ms of CPU in 0.5 s: start-up work that goes on after
    the ports opened (DIMSE worker processes importing and warming up, ``--dimse-workers``) is then neither counted
    as C-STORE CPU nor competing with the stores."""
    deadline = time.monotonic() + timeout
    last = tree_cpu_seconds(pid)
    while time.monotonic() < deadline:
        time.sleep(0.5)
        now = tree_cpu_seconds(pid)
        if now - last < 0.05:
            return
        last = now


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def machine_ticks() -> tuple[int, int]:
    """(all, idle + iowait) jiffies of the machine so far."""
    values = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:8]]
    return sum(values), values[3] + values[4]


def store(server: Server, groups: list[list[Path]]) -> float:
    """Run one storescu per group in parallel; return the wall time. Every store must succeed."""
    env = {**os.environ, "TCP_NODELAY": "1"}
    start = time.perf_counter()
    procs = [
        subprocess.Popen(["storescu", "-aec", server.aet, "127.0.0.1", str(server.dimse_port), *map(str, g)],
                         env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        for g in groups
    ]
    outputs = [p.communicate()[0].decode(errors="replace") for p in procs]
    elapsed = time.perf_counter() - start
    for p, out in zip(procs, outputs, strict=True):
        if p.returncode != 0 or "E:" in out:
            raise RuntimeError(f"storescu failed against {server.name}:\n{out[-2000:]}")
    return elapsed


@contextmanager
def postgres_database() -> Iterator[str]:
    """A throwaway database on the local PostgreSQL; its URL."""
    import psycopg

    name = f"bench_{uuid.uuid4().hex[:12]}"
    with psycopg.connect("host=127.0.0.1 user=postgres dbname=postgres", autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name}")
    try:
        yield f"postgresql+psycopg://postgres@127.0.0.1:5432/{name}"
    finally:
        with psycopg.connect("host=127.0.0.1 user=postgres dbname=postgres", autocommit=True) as conn:
            conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workload", choices=("ct", "ct-realistic", "small"), default="ct-realistic")
    parser.add_argument("--instances", type=int, default=None, help="default: 400 (ct), 5000 (small)")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--assocs", default="1,4", help="comma-separated association counts (e.g. 1,4,8,16)")
    parser.add_argument("--index", choices=("sqlite", "postgres"), default="sqlite")
    parser.add_argument("--only", choices=("both", "dicomvault", "orthanc"), default="both")
    parser.add_argument("--dv-args", action="append", default=None,
                        help="extra arguments for `dicomvault serve`; repeat to measure several configurations "
                             '(e.g. --dv-args "" --dv-args "--dimse-workers 2")')
    args = parser.parse_args()
    assoc_counts = [int(a) for a in args.assocs.split(",")]
    count = args.instances or (5000 if args.workload == "small" else 400)
    variants = args.dv_args or [""]
    servers = [("Orthanc", "orthanc", "")]
    for extra in variants:
        servers.append((f"DicomVault {extra}".strip() if len(variants) > 1 else "DicomVault", "dicomvault", extra))
    if args.only != "both":
        servers = [s for s in servers if s[1] == args.only]
    width = max(len(s[0]) for s in servers)

    with tempfile.TemporaryDirectory(prefix="bench-store-") as tmp:
        if args.workload == "small":
            files = generate_small_studies(Path(tmp), count)
        else:
            files = generate_ct_series(Path(tmp), count, realistic=args.workload == "ct-realistic")
        total_mb = sum(f.stat().st_size for f in files) / 1e6
        print(f"workload {args.workload}: {len(files)} instances, {total_mb:.1f} MB; index {args.index}")
        results: dict[tuple[str, int], list[float]] = {}
        cpu: dict[tuple[str, int], list[float]] = {}
        machine: dict[tuple[str, int], list[float]] = {}
        for run in range(args.runs):
            for name, kind, extra in servers:
                for assocs in assoc_counts:
                    # Each measurement starts with no dirty data left by the previous server: what Orthanc wrote
                    # without flushing would otherwise be written back during the next measurement, slowing the
                    # fsyncs of whichever server runs next.
                    os.sync()
                    time.sleep(1)
                    with _server(kind, args, extra) as server:
                        groups = [files[i::assocs] for i in range(assocs)]
                        pid = server.process.pid
                        wait_idle(pid)
                        cpu0, (all0, idle0) = tree_cpu_seconds(pid), machine_ticks()
                        elapsed = store(server, groups)
                        cpu1, (all1, idle1) = tree_cpu_seconds(pid), machine_ticks()
                    rate = len(files) / elapsed
                    results.setdefault((name, assocs), []).append(rate)
                    mbs = total_mb / elapsed
                    cpu_ms = (cpu1 - cpu0) / len(files) * 1000
                    cpu.setdefault((name, assocs), []).append(cpu_ms)
                    busy = 100 * (1 - (idle1 - idle0) / max(1, all1 - all0))
                    # The whole machine's CPU per instance (clients and kernel threads included): what a server
                    # leaves to the kernel's writeback threads is not in its own process time.
                    busy_ms = (all1 - all0 - (idle1 - idle0)) / os.sysconf("SC_CLK_TCK") / len(files) * 1000
                    machine.setdefault((name, assocs), []).append(busy_ms)
                    print(f"run {run + 1}: {name:{width}s} {assocs:2d} assoc: {rate:7.1f} inst/s {mbs:7.1f} MB/s"
                          f"   server CPU {cpu_ms:4.2f} ms/instance, machine {busy:3.0f}% busy"
                          f" ({busy_ms:4.2f} ms/instance)", flush=True)
        print("\nmedians (server CPU and whole-machine CPU per instance in ms):")
        for assocs in assoc_counts:
            for name, _, _ in servers:
                key = (name, assocs)
                line = (f"  {assocs:2d} assoc  {name:{width}s} {median(results[key]):7.1f} inst/s"
                        f"  server {median(cpu[key]):4.2f}  machine {median(machine[key]):4.2f}")
                if name != "Orthanc" and ("Orthanc", assocs) in results:
                    o = ("Orthanc", assocs)
                    line += (f"   vs Orthanc: rate {median(results[key]) / median(results[o]):4.2f}x,"
                             f" server CPU {median(cpu[key]) / median(cpu[o]):4.2f}x,"
                             f" machine CPU {median(machine[key]) / median(machine[o]):4.2f}x")
                print(line)


@contextmanager
def _server(kind: str, args: argparse.Namespace, dv_args: str) -> Iterator[Server]:
    if kind == "orthanc":
        with orthanc() as server:
            yield server
        return
    extra = shlex.split(dv_args)
    if args.index == "postgres":
        with postgres_database() as url, dicomvault(env={"DICOMVAULT_INDEX_URL": url}, args=extra) as server:
            yield server
    else:
        with dicomvault(args=extra) as server:
            yield server


if __name__ == "__main__":
    main()
