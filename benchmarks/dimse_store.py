"""C-STORE throughput, DicomVault vs Orthanc, side by side in one run.

Generates a CT series (default 400 instances, 512x512, 16-bit), then for each server and each run starts it fresh
and stores the series with dcmtk's storescu over 1 association and over 4 parallel associations (the series split
in four). Prints instances/s and MB/s per run, the medians, and the ratio DicomVault / Orthanc.

Also prints, per measurement, the server's CPU time per instance (user + system, from /proc/<pid>/stat) and how
busy the whole machine was: on a 2-core machine that shared budget, not the disk, is what bounds the rate with
several associations.

    .venv/bin/python benchmarks/dimse_store.py [--instances 400] [--runs 3]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.common import Server, dicomvault, generate_ct_series, median, orthanc


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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--instances", type=int, default=400)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="bench-ct-") as tmp:
        files = generate_ct_series(Path(tmp), args.instances)
        total_mb = sum(f.stat().st_size for f in files) / 1e6
        print(f"series: {len(files)} instances, {total_mb:.1f} MB")
        results: dict[tuple[str, int], list[float]] = {}
        for run in range(args.runs):
            for name, factory in (("Orthanc", orthanc), ("DicomVault", dicomvault)):
                for assocs in (1, 4):
                    # Each measurement starts with no dirty data left by the previous server: what Orthanc wrote
                    # without flushing would otherwise be written back during the next measurement, slowing the
                    # fsyncs of whichever server runs next.
                    os.sync()
                    time.sleep(1)
                    with factory() as server:
                        groups = [files[i::assocs] for i in range(assocs)]
                        cpu0, (all0, idle0) = cpu_seconds(server.process.pid), machine_ticks()
                        elapsed = store(server, groups)
                        cpu1, (all1, idle1) = cpu_seconds(server.process.pid), machine_ticks()
                    rate = len(files) / elapsed
                    results.setdefault((name, assocs), []).append(rate)
                    mbs = total_mb / elapsed
                    cpu_ms = (cpu1 - cpu0) / len(files) * 1000
                    busy = 100 * (1 - (idle1 - idle0) / max(1, all1 - all0))
                    print(f"run {run + 1}: {name:10s} {assocs} assoc: {rate:7.1f} inst/s {mbs:7.1f} MB/s"
                          f"   server CPU {cpu_ms:4.2f} ms/instance, machine {busy:3.0f}% busy")
        print("\nmedians (instances/s):")
        for assocs in (1, 4):
            o = median(results[("Orthanc", assocs)])
            d = median(results[("DicomVault", assocs)])
            print(f"  {assocs} association(s): Orthanc {o:7.1f}  DicomVault {d:7.1f}  ratio {d / o:4.2f}x"
                  f"   (MB/s: {o * total_mb / len(files):.1f} vs {d * total_mb / len(files):.1f})")


if __name__ == "__main__":
    main()
