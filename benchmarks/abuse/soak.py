"""The soak, on a freshly restarted server: 16 concurrent associations storing (12 on the lean storage path, 4
through pynetdicom, which a Q/R context in the association selects) while two clients run QIDO-RS searches, for
``--minutes``; the server's RSS sampled every few seconds. Afterwards every object answered 0x0000 is read back by
WADO-URI and compared byte for byte with what was sent."""

from __future__ import annotations

import random
import statistics
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx

from benchmarks.abuse import dimse_client
from benchmarks.abuse.context import Ctx
from benchmarks.abuse.harness import Result, mb
from benchmarks.abuse.objects import Obj, small_ct

ASSOCIATIONS = 16
PYNETDICOM_PATH = 4
SAMPLE_EVERY = 5.0


def _slope_mb_per_min(samples: list[tuple[float, int]]) -> float:
    """Least-squares slope of RSS over time, MB per minute, over the last two thirds of the samples (the first
    third is the allocator and caches warming up)."""
    tail = samples[len(samples) // 3 :]
    if len(tail) < 3:
        return float("nan")
    xs = [t for t, _ in tail]
    ys = [kb / 1024 for _, kb in tail]
    mx, my = statistics.fmean(xs), statistics.fmean(ys)
    den = sum((x - mx) ** 2 for x in xs)
    return round(60 * sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / den, 2) if den else 0.0


def soak(ctx: Ctx, result: Result) -> None:
    # A fresh server process on the same data: the earlier probes grew its heap by gigabytes (which glibc returns
    # only partly), and a memory curve that starts by shrinking hides a leak. The objects stored so far stay and
    # are checked after the soak (still-serving).
    ctx.say("    soak: restarting the server (same data folder) so that its memory curve is the soak's own")
    ctx.server.stop(60)
    ctx.server.start()
    ctx.flags["planned_restarts"] = ctx.flags.get("planned_restarts", 0) + 1
    duration = ctx.minutes * 60
    rate = float(ctx.flags.get("soak_rate", 40))
    pid = ctx.marker.patient_id + "S"
    acked: dict[str, Obj] = {}
    statuses: Counter[str] = Counter()
    reconnects = 0
    lock = threading.Lock()
    stop = threading.Event()
    start = time.monotonic()
    deadline = start + duration

    def storer(n: int) -> None:
        nonlocal reconnects
        interval = ASSOCIATIONS / rate
        assoc: dimse_client.StoreAssociation | None = None
        study = series = ""
        sent = 0
        next_at = time.monotonic() + random.Random(n).uniform(0, interval)
        while time.monotonic() < deadline:
            if sent % 50 == 0:
                study, series = ctx.marker.uid(), ctx.marker.uid()
            obj = small_ct(ctx.marker, study=study, series=series, rows=16, seed=sent, PatientID=pid,
                           InstanceNumber=sent + 1)
            try:
                if assoc is None:
                    assoc = dimse_client.StoreAssociation(ctx.server.dimse_port, f"SOAK{n:02d}",
                                                          with_find=n < PYNETDICOM_PATH)
                status, _ = assoc.store(obj.data)
            except Exception as exc:
                status = None
                with lock:
                    reconnects += 1
                    statuses[f"error {type(exc).__name__}"] += 1
                assoc = None
            with lock:
                if status == 0x0000:
                    acked[obj.sop] = obj
                elif status is not None:
                    statuses[f"0x{status:04X}"] += 1
                statuses["sent"] += 1
            sent += 1
            next_at += interval
            time.sleep(max(0.0, next_at - time.monotonic()))
        if assoc is not None:
            try:
                assoc.close()
            except Exception:
                statuses["release failed"] += 1

    qido_latencies: list[float] = []
    qido_status: Counter[int | str] = Counter()

    def searcher(n: int) -> None:
        rng = random.Random(100 + n)
        queries = [{"PatientID": pid, "limit": "20"}, {"PatientName": "CAMPAIGN*", "limit": "20"},
                   {"StudyDate": "20231201-20240201", "limit": "20"}, {"ModalitiesInStudy": "CT", "limit": "50"}]
        with ctx.client(60) as http:
            while not stop.is_set():
                t0 = time.perf_counter()
                try:
                    if rng.random() < 0.3 and acked:
                        with lock:
                            obj = acked[rng.choice(list(acked)[-200:])]
                        r = http.get(f"/dicom-web/studies/{obj.study}/instances")
                    else:
                        r = http.get("/dicom-web/studies", params=rng.choice(queries))
                    qido_status[r.status_code] += 1
                except httpx.HTTPError as exc:
                    qido_status[type(exc).__name__] += 1
                qido_latencies.append(time.perf_counter() - t0)
                stop.wait(0.05)

    samples: list[tuple[float, int]] = []

    def sampler() -> None:
        while not stop.is_set():
            status = ctx.rss()
            if status:
                samples.append((time.monotonic() - start, status["VmRSS"]))
            stop.wait(SAMPLE_EVERY)

    background = [threading.Thread(target=sampler, daemon=True)]
    background += [threading.Thread(target=searcher, args=(n,), daemon=True) for n in range(2)]
    storers = [threading.Thread(target=storer, args=(n,), daemon=True) for n in range(ASSOCIATIONS)]
    for t in background + storers:
        t.start()
    for t in storers:
        t.join(duration + 120)
    stop.set()
    for t in background:
        t.join(30)
    ctx.say(f"    soak: {len(acked)} objects acknowledged; reading every one back ...")
    verify_start = time.monotonic()
    missing = _verify(ctx, list(acked.values()), limit=max(300.0, duration))
    verify_seconds = time.monotonic() - verify_start
    up = ctx.server.healthy() and dimse_client.echo(ctx.server.dimse_port).established
    rss = [kb for _, kb in samples]
    slope = _slope_mb_per_min(samples)
    lat = sorted(qido_latencies)
    p50 = lat[len(lat) // 2] if lat else float("nan")
    p99 = lat[min(len(lat) - 1, int(len(lat) * 0.99))] if lat else float("nan")
    failures = {k: v for k, v in statuses.items() if k != "sent"}
    m: dict[str, Any] = {
        "minutes": ctx.minutes, "target_rate": rate, "sent": statuses["sent"], "acknowledged": len(acked),
        "store_failures": failures, "reconnects": reconnects, "missing_or_wrong": len(missing["bad"]),
        "not_verified": missing["unverified"], "verify_seconds": round(verify_seconds, 1),
        "qido_requests": len(lat), "qido_p50_s": round(p50, 3), "qido_p99_s": round(p99, 3),
        "qido_statuses": {str(k): v for k, v in qido_status.items()},
        "rss_start_mb": mb(rss[0]) if rss else None, "rss_peak_mb": mb(max(rss)) if rss else None,
        "rss_end_mb": mb(rss[-1]) if rss else None, "rss_slope_mb_per_min": slope,
        "rss_samples_mb": [mb(kb) for kb in rss],
    }
    result.measured.update(m)
    result.child("soak: nothing lost", "durability", not missing["bad"] and not missing["unverified"],
                 f"{len(acked)} of {statuses['sent']} C-STOREs over {ASSOCIATIONS} associations answered 0x0000 "
                 f"in {ctx.minutes:g} min; read back: {len(acked) - len(missing['bad']) - missing['unverified']} "
                 f"intact, {len(missing['bad'])} missing or different, {missing['unverified']} not checked")
    result.child("soak: memory flat", "defect 6", slope == slope and slope < 3,
                 f"server RSS start {m['rss_start_mb']} MB, peak {m['rss_peak_mb']} MB, end {m['rss_end_mb']} MB, "
                 f"slope {slope} MB/min (last two thirds, {len(rss)} samples)")
    result.child("soak: serving throughout", "defect 6", up and not failures and not [
        k for k in qido_status if not (isinstance(k, int) and k == 200)],
        f"store failures {failures or 'none'}; QIDO {len(lat)} requests p50 {p50:.3f} s p99 {p99:.3f} s, "
        f"answers {dict(qido_status)}; server {'up' if up else 'DOWN'} at the end")


def _verify(ctx: Ctx, objs: list[Obj], limit: float) -> dict[str, Any]:
    bad: list[str] = []
    checked = 0
    deadline = time.monotonic() + limit
    lock = threading.Lock()

    def check(chunk: list[Obj]) -> None:
        nonlocal checked
        with ctx.client(60) as http:
            for obj in chunk:
                if time.monotonic() > deadline:
                    return
                ok = ctx.intact(obj, client=http)
                with lock:
                    checked += 1
                    if not ok:
                        bad.append(obj.sop)

    chunks = [objs[i::4] for i in range(4)]
    with ThreadPoolExecutor(4) as pool:
        list(pool.map(check, chunks))
    return {"bad": bad, "unverified": len(objs) - checked}
