"""Probes through the archive's data paths: the delete race, pathological wildcards, the deflate bomb, decoding
amplification, unbounded results, damaged objects and the reasons given for refusals, pydicom's warnings."""

from __future__ import annotations

import random
import statistics
import threading
import time
from typing import Any

import httpx
from pydicom.dataset import Dataset

from benchmarks.abuse import dimse_client
from benchmarks.abuse.context import LOG_LINE, Ctx
from benchmarks.abuse.harness import FAIL, PASS, HealthPoller, Result, Timer, mb, reset_peak, wait_healthy
from benchmarks.abuse.objects import (
    Obj,
    big_rle,
    dataset_bytes,
    deflate_bomb,
    many_frames,
    missing_study_uid,
    pydicom_warning_triggers,
    short_pixels,
    small_ct,
    truncated,
    wildcard_target,
)

WILDCARD = "*A*A*A*A*A*A*A*B"


def _verdict(result: Result, ok: bool, summary: str, **measured: Any) -> None:
    result.status = PASS if ok else FAIL
    result.summary = summary
    result.measured.update(measured)


def _instance_url(obj: Obj) -> str:
    return f"/dicom-web/studies/{obj.study}/series/{obj.series}/instances/{obj.sop}"


# -- 1. delete racing a re-send ------------------------------------------------------------------------------------


def delete_race(ctx: Ctx, result: Result) -> None:
    """Store an object, then DELETE its study while the same bytes are stored again (STOW-RS or C-STORE, by
    turns). Every re-send that was acknowledged and whose instance the index still lists must be retrievable with
    its bytes; one that is not is an acknowledged object lost."""
    rounds = ctx.pick(40, 300)
    acked = lost = kept = 0
    lost_by = {"STOW-RS": 0, "C-STORE": 0}
    examples: list[str] = []
    rng = random.Random(9)
    http = ctx.client(60)
    for i in range(rounds):
        obj = small_ct(ctx.marker, rows=32, seed=i)
        if ctx.stow([obj], client=http).status != 200:
            raise RuntimeError("the first store of a race round failed")
        path = "C-STORE" if i % 2 else "STOW-RS"
        outcome = _race_round(ctx, obj, path, http, rng)
        if not outcome.get("acked"):
            continue
        acked += 1
        listed = http.get(_instance_url(obj) + "/metadata").status_code == 200
        if not listed:
            continue  # the delete came after the store: gone on purpose
        if ctx.intact(obj, client=http):
            kept += 1
        else:
            lost += 1
            lost_by[path] += 1
            if len(examples) < 3:
                examples.append(obj.sop)
    http.close()
    _verdict(result, lost == 0,
             f"{rounds} rounds, {acked} re-sends acknowledged, {kept} still listed and intact, {lost} LISTED BUT "
             f"LOST (STOW-RS {lost_by['STOW-RS']}, C-STORE {lost_by['C-STORE']})",
             rounds=rounds, acknowledged=acked, intact=kept, lost=lost, lost_by=lost_by, lost_examples=examples)


def _race_round(ctx: Ctx, obj: Obj, path: str, http: httpx.Client, rng: random.Random) -> dict[str, Any]:
    """DELETE the object's study and store the object again at the same moment: a barrier, then a random delay
    of up to 6 ms on one side or the other, so that every interleaving occurs; {"delete": status, "acked": bool}."""
    assoc = dimse_client.StoreAssociation(ctx.server.dimse_port, "RACER") if path == "C-STORE" else None
    barrier = threading.Barrier(2)
    outcome: dict[str, Any] = {}
    delay = rng.uniform(0, 0.006)
    delay_store = rng.random() < 0.5

    def delete() -> None:
        with ctx.client(60) as c:
            barrier.wait()
            time.sleep(0 if delay_store else delay)
            outcome["delete"] = c.delete(f"/dicom-web/studies/{obj.study}").status_code

    def resend() -> None:
        barrier.wait()
        time.sleep(delay if delay_store else 0)
        if assoc is not None:
            status, _ = assoc.store(obj.data)
            outcome["acked"] = status == 0x0000
        else:
            answer = ctx.stow([obj], client=http)
            outcome["acked"] = answer.status == 200 and obj.sop in answer.stored

    threads = [threading.Thread(target=delete), threading.Thread(target=resend)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    if assoc is not None:
        assoc.close()
    return outcome


# -- 2. pathological wildcards ----------------------------------------------------------------------------------------


def _ensure_wildcard_target(ctx: Ctx) -> None:
    if not ctx.flags.get("wildcard_target"):
        if ctx.stow([wildcard_target(ctx.marker)]).status != 200:
            raise RuntimeError("could not store the wildcard target")
        ctx.flags["wildcard_target"] = True


def wildcard_qido(ctx: Ctx, result: Result) -> None:
    """QIDO-RS with InstitutionName=*A*A*A*A*A*A*A*B (not an indexed key) against a value of 64 × 'A', while
    /healthz is polled: the search must end at once (answered, or refused as too complex) and nobody else wait."""
    _ensure_wildcard_target(ctx)
    with HealthPoller(ctx.server.base_url) as health, Timer() as t:
        try:
            r = ctx.http.get("/dicom-web/studies", params={"InstitutionName": WILDCARD}, timeout=120)
            status: int | str = r.status_code
        except httpx.HTTPError as exc:
            status = type(exc).__name__
    recovery = wait_healthy(ctx.server)
    _verdict(result, t.seconds < 2 and health.worst < 1,
             f"search took {t.seconds:.1f} s (HTTP {status}); /healthz worst {health.worst:.1f} s meanwhile",
             seconds=round(t.seconds, 2), http_status=status, healthz_worst=health.worst,
             healthz_samples=len(health.latencies), recovery_seconds=recovery)


def wildcard_cfind(ctx: Ctx, result: Result) -> None:
    """The same pattern as a C-FIND key (STUDY level), with /healthz polled meanwhile."""
    _ensure_wildcard_target(ctx)
    ident = Dataset()
    ident.QueryRetrieveLevel, ident.InstitutionName, ident.StudyInstanceUID = "STUDY", WILDCARD, ""
    with HealthPoller(ctx.server.base_url) as health:
        pending, final, comment, seconds = dimse_client.find(ctx.server.dimse_port, ident)
    recovery = wait_healthy(ctx.server)
    final_hex = f"0x{final:04X}" if final is not None else "none"
    _verdict(result, seconds < 2 and health.worst < 1,
             f"C-FIND took {seconds:.1f} s (final status {final_hex}, {pending} matches); /healthz worst "
             f"{health.worst:.1f} s meanwhile",
             seconds=round(seconds, 2), final_status=final_hex, error_comment=comment, matches=pending,
             healthz_worst=health.worst, recovery_seconds=recovery)


# -- 3. deflate bomb ---------------------------------------------------------------------------------------------------


def deflate_bomb_probe(ctx: Ctx, result: Result) -> None:
    """STOW-RS of a ~256 KiB Deflated Explicit VR Little Endian object that inflates to 256 MiB; then, if it was
    stored, its retrieval (transcoded, i.e. inflated). Server peak memory (VmHWM, reset before each step)."""
    obj, inflated = deflate_bomb(ctx.marker, 256 << 20)
    pid = ctx.server.pid
    reset_peak(pid)
    before = ctx.rss()
    with Timer() as t:
        answer = ctx.stow([obj], timeout=600)
    after = ctx.rss()
    stored = obj.sop in answer.stored
    store_peak = after.get("VmHWM", 0) - before.get("VmRSS", 0)
    m: dict[str, Any] = {"wire_bytes": len(obj.data), "inflated_bytes": inflated, "stow_status": answer.status,
                         "stored": stored, "failure": answer.failed.get(obj.sop), "stow_seconds": round(t.seconds, 1),
                         "rss_before_mb": mb(before.get("VmRSS")), "peak_during_store_mb": mb(after.get("VmHWM")),
                         "peak_increase_store_mb": mb(store_peak)}
    retrieve_peak = 0
    if stored:
        reset_peak(pid)
        before = ctx.rss()
        received = 0
        with Timer() as t2, ctx.client(600).stream("GET", _instance_url(obj), headers={
                "Accept": 'multipart/related; type="application/dicom"'}) as r:
            m["retrieve_status"] = r.status_code
            for chunk in r.iter_bytes():
                received += len(chunk)
        after = ctx.rss()
        retrieve_peak = after.get("VmHWM", 0) - before.get("VmRSS", 0)
        m.update(retrieve_bytes=received, retrieve_seconds=round(t2.seconds, 1),
                 peak_increase_retrieve_mb=mb(retrieve_peak))
    bounded = store_peak < 100 * 1024 and retrieve_peak < 100 * 1024
    ok = (not stored and bool(answer.failed)) or (stored and bounded)
    what = "refused" if not stored else f"STORED; retrieval sent {m.get('retrieve_bytes', 0) >> 20} MiB"
    _verdict(result, ok, f"{len(obj.data) >> 10} KiB → {inflated >> 20} MiB inflated: {what}; server peak "
                         f"+{mb(store_peak)} MB storing, +{mb(retrieve_peak)} MB retrieving", **m)


# -- 4. decoding amplification -----------------------------------------------------------------------------------------


def decode_rle(ctx: Ctx, result: Result) -> None:
    """/rendered of an 8192×8192 RLE image (~1 MiB stored, 64 MiB decoded): time and server peak memory."""
    obj = big_rle(ctx.marker)
    answer = ctx.stow([obj])
    m: dict[str, Any] = {"stored_bytes": len(obj.data), "stow_status": answer.status,
                         "stored": obj.sop in answer.stored}
    if obj.sop not in answer.stored:
        _verdict(result, bool(answer.failed), f"refused at STOW-RS (HTTP {answer.status})", **m)
        return
    worst_time, worst_peak, statuses = 0.0, 0, []
    for _ in range(2):
        reset_peak(ctx.server.pid)
        before = ctx.rss()
        with Timer() as t:
            try:
                r = ctx.http.get(_instance_url(obj) + "/rendered", headers={"Accept": "image/jpeg"}, timeout=120)
                statuses.append(r.status_code)
            except httpx.HTTPError as exc:
                statuses.append(type(exc).__name__)  # type: ignore[arg-type]
        after = ctx.rss()
        worst_time = max(worst_time, t.seconds)
        worst_peak = max(worst_peak, after.get("VmHWM", 0) - before.get("VmRSS", 0))
    refused = all(isinstance(s, int) and 400 <= s < 500 for s in statuses)
    ok = 500 not in statuses and (refused or (worst_peak < 256 * 1024 and worst_time < 3))
    _verdict(result, ok, f"/rendered answered {statuses} in up to {worst_time:.1f} s, server peak +{mb(worst_peak)} "
                         "MB per request", render_statuses=statuses, worst_seconds=round(worst_time, 2),
             worst_peak_increase_mb=mb(worst_peak), **m)


def many_frames_probe(ctx: Ctx, result: Result) -> None:
    """An object of 200,000 one-pixel frames: STOW-RS time, the index growth it caused, and frame requests."""
    frames = 200_000
    obj = many_frames(ctx.marker, frames)
    index_before = _index_bytes(ctx)
    with Timer() as t:
        answer = ctx.stow([obj], timeout=600)
    growth = _index_bytes(ctx) - index_before if index_before >= 0 else -1
    m: dict[str, Any] = {"frames": frames, "stow_status": answer.status, "stow_seconds": round(t.seconds, 1),
                         "index_growth_bytes": growth if growth >= 0 else "n/a (not SQLite)"}
    if obj.sop not in answer.stored:
        _verdict(result, bool(answer.failed), f"refused at STOW-RS (HTTP {answer.status})", **m)
        return
    times: dict[int, float] = {}
    statuses: dict[int, int] = {}
    for n in (1, frames // 2, frames):
        samples = []
        for _ in range(3):
            with Timer() as tf:
                r = ctx.http.get(f"{_instance_url(obj)}/frames/{n}",
                                 headers={"Accept": 'multipart/related; type="application/octet-stream"'})
            samples.append(tf.seconds)
            statuses[n] = r.status_code
        times[n] = round(statistics.median(samples), 3)
    worst = max(times.values())
    growth_text = f"{growth / 1e6:.1f} MB" if growth >= 0 else "n/a"
    _verdict(result, worst < 0.15 and all(s == 200 for s in statuses.values()),
             f"stored in {t.seconds:.1f} s, index +{growth_text}; frame requests (median of 3): "
             + ", ".join(f"#{n} {s:.2f} s" for n, s in times.items()),
             frame_seconds=times, frame_statuses=statuses, **m)


def _index_bytes(ctx: Ctx) -> int:
    if ctx.index_url:
        return -1
    files = list(ctx.server.data_dir.glob("index.sqlite*"))
    return sum(f.stat().st_size for f in files) if files else -1


# -- 5. unbounded results --------------------------------------------------------------------------------------------


def unbounded_results(ctx: Ctx, result: Result) -> None:
    """N instances of one patient; a C-FIND at IMAGE level on that patient (all N match), and a QIDO-RS with a
    non-indexed key and limit=10 against the same with an indexed key. A bound shows as fewer than N responses
    with a warning status (C-FIND), and the limited non-indexed search costing about what the indexed one does."""
    n = ctx.pick(2000, 6000)
    pid = ctx.marker.patient_id + "U"
    http = ctx.client(300)
    stored = 0
    with Timer() as load:
        for b in range(0, n, 100):
            study, series = ctx.marker.uid(), ctx.marker.uid()
            batch = [small_ct(ctx.marker, study=study, series=series, seed=i, PatientID=pid,
                              InstitutionName="CAMPAIGN UNBOUNDED", InstanceNumber=i + 1) for i in range(b, b + 100)]
            stored += len(ctx.stow(batch, client=http).stored)
    ident = Dataset()
    ident.QueryRetrieveLevel, ident.PatientID, ident.SOPInstanceUID = "IMAGE", pid, ""
    reset_peak(ctx.server.pid)
    before = ctx.rss()
    pending, final, comment, seconds = dimse_client.find(ctx.server.dimse_port, ident, level_root="patient",
                                                         timeout=300)
    peak = ctx.rss().get("VmHWM", 0) - before.get("VmRSS", 0)
    final_hex = f"0x{final:04X}" if final is not None else "none"
    cfind_bounded = pending < stored and final not in (None, 0x0000)
    with Timer() as t_idx:
        r_idx = http.get("/dicom-web/instances", params={"PatientID": pid, "limit": "10"})
    with Timer() as t_non:
        r_non = http.get("/dicom-web/instances", params={"InstitutionName": "CAMPAIGN UNBOUNDED*", "limit": "10"})
    http.close()
    non_count = len(r_non.json()) if r_non.status_code == 200 else -1
    # limit=10 over N matching rows: bounded work costs about what the indexed search costs; 3× + 30 ms of slack
    qido_bounded = 0 <= non_count <= 10 and t_non.seconds <= 3 * t_idx.seconds + 0.03
    _verdict(result, cfind_bounded and qido_bounded,
             f"{stored} instances of one patient: C-FIND sent {pending} matches then {final_hex} in {seconds:.1f} s "
             f"(server peak +{mb(peak)} MB); QIDO limit=10 non-indexed key {t_non.seconds:.2f} s ({non_count} "
             f"results) vs indexed {t_idx.seconds:.2f} s",
             instances=stored, load_seconds=round(load.seconds, 1), cfind_matches=pending, cfind_final=final_hex,
             cfind_comment=comment, cfind_seconds=round(seconds, 2), cfind_peak_increase_mb=mb(peak),
             qido_nonindexed_seconds=round(t_non.seconds, 3), qido_nonindexed_status=r_non.status_code,
             qido_nonindexed_results=non_count, qido_indexed_seconds=round(t_idx.seconds, 3),
             qido_indexed_status=r_idx.status_code,
             qido_warning=r_non.headers.get("warning"), cfind_bounded=cfind_bounded, qido_bounded=qido_bounded)


# -- 10. short pixel data; 11. reasons ---------------------------------------------------------------------------------


def short_pixels_probe(ctx: Ctx, result: Result) -> None:
    """A 256×256 16-bit MR with 50,000 of its 131,072 pixel bytes: refused at ingest, or stored and then answered
    with a clear error (not a bare 500) by /rendered, /frames/1 and /thumbnail."""
    obj = short_pixels(ctx.marker)
    answer = ctx.stow([obj])
    m: dict[str, Any] = {"stow_status": answer.status, "stored": obj.sop in answer.stored,
                         "failure": answer.failed.get(obj.sop)}
    if obj.sop not in answer.stored:
        _verdict(result, bool(answer.failed), f"refused at STOW-RS (HTTP {answer.status}, "
                                              f"{_reason_text(answer.failed.get(obj.sop))})", **m)
        return
    answers = {}
    for name, suffix, accept in (("rendered", "/rendered", "image/jpeg"),
                                 ("frames/1", "/frames/1", 'multipart/related; type="application/octet-stream"'),
                                 ("thumbnail", "/thumbnail", "image/jpeg")):
        r = ctx.http.get(_instance_url(obj) + suffix, headers={"Accept": accept})
        answers[name] = (r.status_code, r.text[:160] if r.status_code >= 400 else "")
    bare = [k for k, (s, text) in answers.items() if s == 500 and "internal server error" in text]
    _verdict(result, not bare, "STORED with status 200; then " + ", ".join(f"{k} → {s}" for k, (s, _) in
                                                                          answers.items())
             + (f" (bare 500: {', '.join(bare)})" if bare else ""), retrievals=answers, **m)


def _reason_text(item: dict[str, Any] | None) -> str:
    """Any text a FailedSOPSequence item carries besides UIDs and the numeric FailureReason."""
    if not item:
        return ""
    texts = [str(v) for tag, el in item.items() if tag not in ("00081150", "00081155", "00081197")
             for v in (el.get("Value") or []) if isinstance(v, str)]
    return "; ".join(texts)


def refusal_reasons(ctx: Ctx, result: Result) -> None:
    """Objects the archive must refuse (no Study Instance UID; cut inside the pixel data) by C-STORE and by
    STOW-RS: does each refusal say why (C-STORE ErrorComment, a text in STOW's FailedSOPSequence item), and what
    does the log say at INFO?"""
    bad = [missing_study_uid(ctx.marker), truncated(ctx.marker)]
    mark = ctx.server.log_mark()
    cstore = {}
    for obj in bad:
        status, comment = dimse_client.raw_store(ctx.server.dimse_port, dataset_bytes(obj.data), obj.sop)
        cstore[obj.sop] = (f"0x{status:04X}" if status is not None else "none", comment)
    answer = ctx.stow([missing_study_uid(ctx.marker), truncated(ctx.marker)])
    stow_reasons = {uid: (item.get("00081197", {}).get("Value"), _reason_text(item))
                    for uid, item in answer.failed.items()}
    time.sleep(0.5)
    log = [ln for ln in ctx.server.log_since(mark) if "refused" in ln.lower() or "not stored" in ln.lower()]
    cstore_ok = all(comment for _, comment in cstore.values()) and len(cstore) == 2
    stow_ok = len(stow_reasons) == 2 and all(text for _, text in stow_reasons.values())
    _verdict(result, cstore_ok and stow_ok,
             "C-STORE: " + ", ".join(f"{s} '{c}'" for s, c in cstore.values())
             + "; STOW-RS FailureReason/text: " + ", ".join(f"{r} '{t}'" for r, t in stow_reasons.values()),
             cstore=cstore, stow_http=answer.status, stow=stow_reasons, log_lines=log[-6:],
             cstore_has_reason=cstore_ok, stow_has_reason=stow_ok)


# -- 9. pydicom warnings in the log ----------------------------------------------------------------------------------


def pydicom_flood(ctx: Ctx, result: Result) -> None:
    """A STOW-RS of many objects pydicom warns about (invalid UID, invalid IS, over-long name): the log lines it
    adds, how many come from pydicom, and whether any shows the values."""
    n = ctx.pick(200, 1000)
    values: list[str] = []
    mark = ctx.server.log_mark()
    http = ctx.client(300)
    for b in range(0, n, 100):
        objs = []
        for i in range(b, min(n, b + 100)):
            obj, vals = pydicom_warning_triggers(ctx.marker, i)
            objs.append(obj)
            values += vals
        ctx.stow(objs, client=http)
    http.close()
    time.sleep(1)
    lines = ctx.server.log_since(mark)
    parsed = [LOG_LINE.match(ln) for ln in lines]
    pyd = [m.group(0) for m in parsed if m and m.group("logger").startswith("pydicom")]
    leaking = [ln for ln in lines if any(v in ln for v in values)]
    not_audit = [m.group(0) for m in parsed if m and m.group("logger") not in ("dicomvault.audit",)
                 and not m.group("message").startswith("stored instance")]
    _verdict(result, len(pyd) <= 10 and not leaking,
             f"{n} objects → {len(pyd)} pydicom log lines, {len(leaking)} lines quoting the objects' values "
             f"({len(not_audit)} lines besides audit and 'stored' lines)",
             objects=n, pydicom_lines=len(pyd), lines_with_values=len(leaking), other_lines=len(not_audit),
             example_pydicom_lines=pyd[:3], example_leaks=[ln[:200] for ln in leaking[:3]])
