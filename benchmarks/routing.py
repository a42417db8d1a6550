"""Routing (issue #12 item 3): the latency routing adds between "stored" and "delivered", and forwarding
throughput to a dcmtk ``storescp`` against what ``storescu`` sends to the same ``storescp`` directly.

Parts:

1. **Added latency**, one instance at a time on an idle system: ``dicomvault serve`` with a route on stored
   instances to a pynetdicom storage SCP in this process; the clock starts when the C-STORE to the archive is
   acknowledged (stored) and stops when the destination receives the forwarded C-STORE (delivered). p50 / p99 over
   ``--latency-count`` instances (target: p99 < 1 s).
2. **Forwarding throughput**: ``--count`` CT images (512 x 512, 16 bit) sent by ``storescu`` (one association)
   a) directly to ``storescp``, b) to ``dicomvault serve`` routing everything to the same ``storescp``: time from
   the first send to the last object written by ``storescp``, and the drain alone (last acknowledgement to last
   delivery), and the store rate against the same ``serve`` without routes (what routing costs ingest); c)
   forwarding alone: a route on stable studies releases the whole series at once, rate from the first to the last
   object ``storescp`` writes. Target: c) ≥ 0.9 × a) in instances/s.

    python benchmarks/routing.py --count 200 --latency-count 100
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import pydicom
from pynetdicom import AE, AllStoragePresentationContexts, evt
from pynetdicom.sop_class import CTImageStorage  # type: ignore[attr-defined]

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.common import dicomvault, free_port, generate_ct_series, percentile, wait_port

ENV = {"TCP_NODELAY": "1"}


def _config(folder: Path, dest_aet: str, dest_port: int, *, stable: bool = False) -> Path:
    path = folder / ("routing-stable.toml" if stable else "routing.toml")
    on = 'on = "stable"\nstable_seconds = 1\n' if stable else ""
    path.write_text(f'[move_destinations]\n{dest_aet} = "127.0.0.1:{dest_port}"\n\n'
                    f'[[route]]\nname = "everything"\nto = "{dest_aet}"\n{on}')
    return path


def latency(count: int, folder: Path) -> dict[str, float]:
    """Stored → delivered, one instance at a time (seconds)."""
    arrived: dict[str, float] = {}
    events: dict[str, threading.Event] = {}
    lock = threading.Lock()

    def on_store(event: evt.Event) -> int:
        uid = str(event.request.AffectedSOPInstanceUID)
        with lock:
            arrived[uid] = time.monotonic()
            events.setdefault(uid, threading.Event()).set()
        return 0

    receiver = AE(ae_title="RECV")
    for cx in AllStoragePresentationContexts:
        receiver.add_supported_context(cx.abstract_syntax)
    port = free_port()
    scp = receiver.start_server(("127.0.0.1", port), block=False, evt_handlers=[(evt.EVT_C_STORE, on_store)])
    files = generate_ct_series(folder / "latency", count, rows=256, columns=256)
    delays: list[float] = []
    try:
        with dicomvault(args=["--config", str(_config(folder, "RECV", port))]) as server:
            sender = AE(ae_title="MODALITY")
            sender.add_requested_context(CTImageStorage)
            assoc = sender.associate("127.0.0.1", server.dimse_port, ae_title=server.aet)
            assert assoc.is_established, "association to dicomvault refused"
            try:
                for path in files:
                    ds = pydicom.dcmread(path)
                    uid = str(ds.SOPInstanceUID)
                    with lock:
                        done = events.setdefault(uid, threading.Event())
                    status = assoc.send_c_store(ds)
                    stored = time.monotonic()
                    assert status.Status == 0
                    if not done.wait(30):
                        raise TimeoutError("an instance was not delivered within 30 s")
                    delays.append(arrived[uid] - stored)
            finally:
                assoc.release()
    finally:
        scp.shutdown()
    return {"p50_ms": percentile(delays, 50) * 1000, "p99_ms": percentile(delays, 99) * 1000,
            "max_ms": max(delays) * 1000, "n": float(len(delays))}


def _storescp(folder: Path, port: int) -> subprocess.Popen[bytes]:
    folder.mkdir(parents=True, exist_ok=True)
    proc = subprocess.Popen(["storescp", "-aet", "STORESCP", "+xa", "+uf", "-od", str(folder), str(port)],
                            env={**ENV, "PATH": "/usr/bin:/bin"}, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    wait_port(port)
    return proc


def _wait_files(folder: Path, count: int, timeout: float = 600) -> float:
    return _arrivals(folder, count, timeout)[1]


def _arrivals(folder: Path, count: int, timeout: float = 600) -> tuple[float, float]:
    """When the first and the last of ``count`` objects appeared in ``folder`` (polled every 10 ms)."""
    first = None
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        n = sum(1 for p in folder.iterdir() if p.is_file())
        if n and first is None:
            first = time.monotonic()
        if n >= count:
            return first or time.monotonic(), time.monotonic()
        time.sleep(0.01)
    raise TimeoutError(f"storescp received fewer than {count} objects")


def _storescu(port: int, aet: str, files: list[Path]) -> None:
    subprocess.run(["storescu", "-aet", "MODALITY", "-aec", aet, "127.0.0.1", str(port), *map(str, files)],
                   env={**ENV, "PATH": "/usr/bin:/bin"}, check=True, capture_output=True, timeout=600)


def throughput(count: int, folder: Path) -> dict[str, float]:
    files = generate_ct_series(folder / "series", count)
    size = sum(p.stat().st_size for p in files)
    out: dict[str, float] = {"count": float(count), "mb": size / 1e6}
    # a) storescu → storescp
    port = free_port()
    received = folder / "direct"
    proc = _storescp(received, port)
    try:
        started = time.monotonic()
        _storescu(port, "STORESCP", files)
        done = _wait_files(received, count)
        out["direct_per_s"] = count / (done - started)
    finally:
        proc.terminate()
        proc.wait()
    # b0) storescu → dicomvault without routes: the ingest rate routing is compared with
    with dicomvault() as server:
        started = time.monotonic()
        _storescu(server.dimse_port, server.aet, files)
        out["stored_unrouted_per_s"] = count / (time.monotonic() - started)
    # b) storescu → dicomvault → storescp
    port = free_port()
    received = folder / "forwarded"
    proc = _storescp(received, port)
    try:
        with dicomvault(args=["--config", str(_config(folder, "STORESCP", port))]) as server:
            started = time.monotonic()
            _storescu(server.dimse_port, server.aet, files)
            acknowledged = time.monotonic()
            done = _wait_files(received, count)
            out["forwarded_per_s"] = count / (done - started)
            out["stored_per_s"] = count / (acknowledged - started)
            out["drain_s"] = done - acknowledged
    finally:
        proc.terminate()
        proc.wait()
    # c) forwarding alone: a route on stable studies holds everything until the study is stable, then the
    #    deliveries go out at once; rate from the first to the last object storescp writes
    port = free_port()
    received = folder / "released"
    proc = _storescp(received, port)
    try:
        with dicomvault(args=["--config", str(_config(folder, "STORESCP", port, stable=True))]) as server:
            _storescu(server.dimse_port, server.aet, files)
            first, last = _arrivals(received, count)
            out["forward_only_per_s"] = (count - 1) / max(last - first, 1e-6)
    finally:
        proc.terminate()
        proc.wait()
    out["ratio"] = out["forward_only_per_s"] / out["direct_per_s"]
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--count", type=int, default=200, help="instances for the throughput part")
    parser.add_argument("--latency-count", type=int, default=100, help="instances for the latency part")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-routing-") as tmp:
        folder = Path(tmp)
        lat = latency(args.latency_count, folder)
        print(f"added latency stored→delivered ({int(lat['n'])} instances, one at a time): "
              f"p50 {lat['p50_ms']:.0f} ms, p99 {lat['p99_ms']:.0f} ms, max {lat['max_ms']:.0f} ms")
        thr = throughput(args.count, folder)
        print(f"forwarding {args.count} CT ({thr['mb']:.0f} MB): storescu→storescp {thr['direct_per_s']:.1f}/s; "
              f"storescu→dicomvault→storescp {thr['forwarded_per_s']:.1f}/s end to end (stored at "
              f"{thr['stored_per_s']:.1f}/s, {thr['stored_unrouted_per_s']:.1f}/s without routes; drain after the "
              f"last ack {thr['drain_s']:.2f} s); forwarding alone "
              f"(stable study released) {thr['forward_only_per_s']:.1f}/s; ratio to direct {thr['ratio']:.2f}")


if __name__ == "__main__":
    main()
