"""Probe: the query abuses of issue #9 (defects 2 and 5) against a real ``dicomvault serve``, timed.

1. The pathological wildcard ``InstitutionName=*A*A*A*A*A*A*A*B`` (a non-indexed key, matched against a
   64-character value) over QIDO-RS and over C-FIND (dcmtk findscu), while a second client polls ``/healthz``:
   prints each query's duration, its answer, and the slowest ``/healthz`` seen meanwhile.
2. A broad query over ``--studies`` studies with the result maximum set to ``--max-results`` (and the QIDO-RS
   default page to half of it): QIDO-RS without ``limit`` (result count, ``Warning`` header) and C-FIND (pending
   responses, final status).
3. Keys the index does not hold that match nothing, at study and at instance level: ``InstitutionName`` (in no
   object) and ``PixelSpacing`` (in every object, so every candidate's cached attributes are parsed): the time to
   examine min(studies, ``query_max_scanned``) candidates, the bounded scan.

    PYTHONPATH=src .venv/bin/python benchmarks/query_abuse.py [--studies 300] [--max-results 200]

Loopback only; the server runs on its embedded defaults in a throwaway folder.
"""

from __future__ import annotations

import argparse
import io
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pydicom

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.common import Server, dicomvault
from benchmarks.dicomweb import multipart, small_instance

PATTERN = "*A*A*A*A*A*A*A*B"


class HealthPoller:
    """Polls ``/healthz`` in a thread; keeps the slowest answer time (a stalled server shows up here)."""

    def __init__(self, base: str) -> None:
        self.base = base
        self.worst = 0.0
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        with httpx.Client(timeout=120) as client:
            while not self.stop.is_set():
                t0 = time.perf_counter()
                client.get(self.base + "/healthz")
                self.worst = max(self.worst, time.perf_counter() - t0)
                time.sleep(0.05)

    def __enter__(self) -> HealthPoller:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join()


def load(server: Server, studies: int) -> None:
    """One study whose InstitutionName is 64 times 'A', then ``studies`` ordinary ones."""
    objects = [small_instance(0, rows=4)]
    ds = pydicom.dcmread(io.BytesIO(objects[0]))
    ds.InstitutionName = "A" * 64
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    objects[0] = buf.getvalue()
    objects += [small_instance(i + 1, rows=4) for i in range(studies)]
    with httpx.Client(timeout=300) as client:
        for i in range(0, len(objects), 100):
            body, ctype = multipart(objects[i: i + 100])
            r = client.post(f"{server.http}/dicom-web/studies", content=body, headers={"Content-Type": ctype})
            r.raise_for_status()


def findscu(server: Server, keys: list[str], timeout: float) -> tuple[float, str]:
    args = ["findscu", "-v", "-S", "-aec", server.aet]
    for k in keys:
        args += ["-k", k]
    t0 = time.perf_counter()
    try:
        r = subprocess.run([*args, "127.0.0.1", str(server.dimse_port)], capture_output=True, text=True,
                           timeout=timeout, env={**os.environ, "TCP_NODELAY": "1"})
        out = r.stdout + r.stderr
    except subprocess.TimeoutExpired:
        out = f"no answer within {timeout:.0f} s"
    return time.perf_counter() - t0, out


def summarise_findscu(out: str) -> str:
    """findscu -v output → number of pending responses and the final status lines."""
    pending = out.count("(Pending)")
    final = [line.strip() for line in out.splitlines()
             if ("Received Final Find Response" in line or "Error Comment" in line or "0000,0902" in line)]
    return f"{pending} pending; " + " | ".join(final[-3:])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--studies", type=int, default=300)
    parser.add_argument("--max-results", type=int, default=200)
    parser.add_argument("--timeout", type=float, default=120.0)
    args = parser.parse_args()
    env = {"DICOMVAULT_QUERY_MAX_RESULTS": str(args.max_results),
           "DICOMVAULT_QIDO_DEFAULT_LIMIT": str(max(1, args.max_results // 2))}
    with dicomvault(env=env) as server:
        load(server, args.studies)
        print(f"loaded {args.studies + 1} studies")
        with HealthPoller(server.http) as health:
            t0 = time.perf_counter()
            try:
                r = httpx.get(f"{server.http}/dicom-web/studies", params={"InstitutionName": PATTERN},
                              timeout=args.timeout)
                answer = f"{r.status_code} {r.text[:120]}"
            except httpx.TimeoutException:
                answer = f"no answer within {args.timeout:.0f} s"
            took = time.perf_counter() - t0
        print(f"QIDO-RS InstitutionName={PATTERN}: {took:.2f} s -> {answer}; slowest /healthz meanwhile "
              f"{health.worst:.2f} s")
        with HealthPoller(server.http) as health:
            took, out = findscu(server, ["QueryRetrieveLevel=STUDY", f"InstitutionName={PATTERN}",
                                         "StudyInstanceUID"], args.timeout)
        print(f"C-FIND InstitutionName={PATTERN}: {took:.2f} s -> {summarise_findscu(out)}; slowest /healthz "
              f"meanwhile {health.worst:.2f} s")
        r = httpx.get(f"{server.http}/dicom-web/studies", timeout=args.timeout)
        print(f"QIDO-RS /studies (no limit, maximum {args.max_results}): {r.status_code}, {len(r.json())} results, "
              f"Warning: {r.headers.get('warning')}")
        took, out = findscu(server, ["QueryRetrieveLevel=STUDY", "StudyInstanceUID"], args.timeout)
        print(f"C-FIND all studies: {took:.2f} s -> {summarise_findscu(out)}")
        # InstitutionName: in no object (the cached text is not even parsed); PixelSpacing: in every object.
        for path, key, value in (("studies", "InstitutionName", "NOWHERE*"), ("instances", "InstitutionName",
                                 "NOWHERE*"), ("studies", "PixelSpacing", "9*"), ("instances", "PixelSpacing", "9*")):
            t0 = time.perf_counter()
            r = httpx.get(f"{server.http}/dicom-web/{path}", params={key: value}, timeout=args.timeout)
            warning = r.headers.get("warning")
            print(f"QIDO-RS /{path}?{key}={value} (non-indexed, no match): {time.perf_counter() - t0:.2f} s -> "
                  f"{r.status_code} {len(r.json())} results, Warning: {(warning or '')[:60]}")


if __name__ == "__main__":
    main()
