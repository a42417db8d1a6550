"""Fault and abuse campaign (issue #9): every probe of the issue against a real ``dicomvault serve`` on loopback.

Starts ``python -m dicomvault serve`` of this repository (its ``src/`` first on PYTHONPATH) on 127.0.0.1 with free
ports, its own data folder (and, with ``--index-url``, a fresh database on that PostgreSQL server) and an admin
API token; then runs each probe isolated and bounded in time, prints a PASS/FAIL line with what was measured,
checks after each probe that the server still answers (restarting it, and saying so, if it died), fuzzes the live
DIMSE port and STOW-RS with seeded garbage, runs a soak (16 associations storing while QIDO-RS load runs, RSS
sampled, then every acknowledged object read back), scans the server's INFO log for the campaign's patient
data, and ends with the shutdown probe. A FAIL is a finding, not an error of the script: on code predating the
issue's fixes most probes fail, and that is what they are for.

    .venv/bin/python benchmarks/abuse_campaign.py --quick              # ~8 minutes, 1-minute soak
    .venv/bin/python benchmarks/abuse_campaign.py                      # full, 10-minute soak
    .venv/bin/python benchmarks/abuse_campaign.py --minutes 3 --index-url postgresql://postgres@127.0.0.1:5432/postgres

Output: the report on stdout, and in ``--output`` (default benchmarks/results/abuse-<time>/): report.txt,
report.json (every figure), server.log (the server's own log). Only loopback addresses are used (127.0.0.1, and
127.0.0.2-5 as distinct client addresses); only processes the campaign started are signalled.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import platform
import shutil
import sys
import tempfile
import time
import warnings
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.abuse import dimse_client, fuzz_live, probes_auth, probes_data, probes_net, soak
from benchmarks.abuse.context import LOG_LINE, Ctx
from benchmarks.abuse.harness import (
    FAIL,
    PASS,
    ROOT,
    Probe,
    Result,
    Server,
    create_token,
    free_port,
    mb,
    postgres_database,
    run_probe,
    write_json,
)
from benchmarks.abuse.objects import Marker, small_ct


def probes(quick: bool, minutes: float) -> list[Probe]:
    """Every probe, in running order: memory-sensitive ones first (each resets the server's peak counter, but a
    heap grown by earlier probes would hide growth), the soak near the end, shutdown last."""
    q = quick
    return [
        Probe("deflate-bomb", "defect 3", probes_data.deflate_bomb_probe, 600),
        Probe("decode-rle-8192", "defect 4", probes_data.decode_rle, 300),
        Probe("frames-200000", "defect 4", probes_data.many_frames_probe, 600),
        Probe("short-pixel-data", "defect 10", probes_data.short_pixels_probe, 120),
        Probe("refusal-reasons", "defect 11", probes_data.refusal_reasons, 120),
        Probe("pydicom-warning-flood", "defect 9", probes_data.pydicom_flood, 600),
        Probe("delete-race", "defect 1", probes_data.delete_race, 300 if q else 1200),
        Probe("wildcard-qido", "defect 2", probes_data.wildcard_qido, 300),
        Probe("wildcard-cfind", "defect 2", probes_data.wildcard_cfind, 300),
        Probe("unbounded-results", "defect 5", probes_data.unbounded_results, 600 if q else 1200),
        Probe("called-ae-title", "defect 13", probes_net.called_aet, 60),
        Probe("c-move-destination-down", "defect 13", probes_net.cmove_down, 120),
        Probe("junk-on-dimse-port", "defect 13", probes_net.dimse_junk, 60),
        Probe("silent-sockets-300", "defect 6", probes_net.silent_sockets, 180),
        Probe("assoc-rq-0xFFFFFFFF", "defect 6", probes_net.oversized_associate_rq, 120),
        Probe("assoc-rq-short-close", "defect 6", probes_net.short_associate_rq, 90),
        Probe("http-1mb-header", "defect 6", probes_net.huge_header, 60),
        Probe("lingering-connections", "defect 6", probes_net.lingering_connections, 240),
        Probe("anonymous-access", "defects 7, 9", probes_auth.anonymous_access, 180),
        Probe("oidc-token-confusion", "defect 8", probes_auth.oidc_confusion, 240),
        Probe("garbage-pdus", "fuzzing", fuzz_live.garbage_pdus, 300 if q else 900),
        Probe("garbage-multipart", "fuzzing", fuzz_live.multipart_bodies, 300 if q else 900),
        Probe("soak", "issue #9 soak", soak.soak, minutes * 60 + 1200),
        Probe("still-serving", "all", still_serving, 120),
        Probe("shutdown-idle-dimse", "defect 12", probes_net.shutdown, 120),
        Probe("log-scan", "defect 9", log_scan, 120),
    ]


def still_serving(ctx: Ctx, result: Result) -> None:
    """After everything: the first objects stored are still intact, /healthz and C-ECHO answer."""
    intact = sum(ctx.intact(o) for o in ctx.seeds)
    echo = dimse_client.echo(ctx.server.dimse_port)
    ok = intact == len(ctx.seeds) and ctx.server.healthy() and echo.established
    result.status = PASS if ok else FAIL
    result.summary = (f"{intact}/{len(ctx.seeds)} objects stored at the start intact; /healthz "
                      f"{'ok' if ctx.server.healthy() else 'FAILING'}; C-ECHO {'ok' if echo.established else 'FAILING'}"
                      f"; the server stopped answering {len(ctx.crashes)} time(s) during the campaign")
    result.measured.update(seeds_intact=intact, seeds=len(ctx.seeds), crash_restarts=len(ctx.crashes),
                           planned_restarts=ctx.flags.get("planned_restarts", 0), crashes=ctx.crashes, rss=ctx.rss())


def log_scan(ctx: Ctx, result: Result) -> None:
    """The server's whole log (INFO level) searched for the campaign's patient name, patient ID, the marker in
    other values, and every UID the campaign created."""
    lines = ctx.server.log_path.read_text(errors="replace").splitlines()
    token = ctx.marker.token
    marker_lines = [ln for ln in lines if token in ln]
    uid_lines = []
    for ln in lines:
        if any(uid in ln for uid in _uid_tokens(ln) if uid in ctx.marker.uids):
            uid_lines.append(ln)
    levels: dict[str, int] = {}
    loud_sources: dict[str, int] = {}
    for ln in lines:
        m = LOG_LINE.match(ln)
        if m:
            levels[m.group("level")] = levels.get(m.group("level"), 0) + 1
            if m.group("level") in ("WARNING", "ERROR", "CRITICAL"):
                loud_sources[m.group("logger")] = loud_sources.get(m.group("logger"), 0) + 1
    traces = sum(ln.startswith("Traceback") for ln in lines)
    ok = not marker_lines and not uid_lines
    result.status = PASS if ok else FAIL
    result.summary = (f"{len(lines)} log lines ({', '.join(f'{k} {v}' for k, v in sorted(levels.items()))}, "
                      f"{traces} tracebacks): {len(marker_lines)} with the marker patient name/ID, {len(uid_lines)} "
                      "with a campaign UID")
    result.measured.update(lines=len(lines), by_level=levels, tracebacks=traces,
                           warning_or_above_by_logger=dict(sorted(loud_sources.items(), key=lambda kv: -kv[1])),
                           marker_lines=len(marker_lines), uid_lines=len(uid_lines),
                           examples=[ln[:220] for ln in (marker_lines + uid_lines)[:5]])


def _uid_tokens(line: str) -> list[str]:
    out, current = [], []
    for ch in line + " ":
        if ch.isdigit() or ch == ".":
            current.append(ch)
        else:
            if current.count(".") >= 3:
                out.append("".join(current).strip("."))
            current = []
            if len(out) > 50:
                break
    return out


@contextlib.contextmanager
def index_database(url: str | None) -> Iterator[str | None]:
    if not url:
        yield None
        return
    with postgres_database(url) as fresh:
        yield fresh


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=float, default=None, help="soak duration (default 10; 1 with --quick)")
    parser.add_argument("--quick", action="store_true", help="fewer rounds and objects, a 1-minute soak")
    parser.add_argument("--index-url", help="PostgreSQL server URL: the campaign creates (and drops) a database")
    parser.add_argument("--soak-rate", type=float, default=40.0, help="objects per second across the soak's "
                                                                      "16 associations (default 40)")
    parser.add_argument("--output", type=Path, help="folder for report.txt, report.json, server.log")
    parser.add_argument("--only", help="comma-separated probe names to run (the rest are skipped)")
    args = parser.parse_args()
    minutes = args.minutes if args.minutes is not None else (1.0 if args.quick else 10.0)
    stamp = datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
    out = args.output or ROOT / "benchmarks" / "results" / f"abuse-{stamp}"
    out.mkdir(parents=True, exist_ok=True)
    warnings.simplefilter("ignore")  # pydicom in this (client) process, building hostile objects
    logging.getLogger("pydicom").setLevel(logging.CRITICAL)
    report: list[str] = []

    def say(line: str) -> None:
        print(line, flush=True)
        report.append(line)

    selected = set(args.only.split(",")) if args.only else None
    work = Path(tempfile.mkdtemp(prefix="dv-abuse-"))
    results: list[Result] = []
    started = time.monotonic()
    say(f"DicomVault fault and abuse campaign (issue #9) — {stamp} UTC, {'quick' if args.quick else 'full'}, "
        f"soak {minutes:g} min, index {'PostgreSQL' if args.index_url else 'SQLite'}")
    say(f"tree: {ROOT}  python {platform.python_version()}  machine {platform.machine()}, "
        f"{_cpus()} CPUs")
    try:
        with index_database(args.index_url) as index_url:
            # query_max_results below the unbounded-results probe's N (2,000 / 6,000), so that the bound shows;
            # the default (10,000) is a different number, not a different mechanism
            server = Server(work / "data", out / "server.log", index_url,
                            ["--move-destination", f"DOWNDEST=127.0.0.1:{free_port()}"],
                            env={"DICOMVAULT_QUERY_MAX_RESULTS": "1000"})
            token = create_token(server.data_dir, index_url)
            server.start()
            say(f"server: pid {server.pid}, DIMSE 127.0.0.1:{server.dimse_port}, HTTP {server.base_url}, "
                f"RSS {mb(server.status().get('VmRSS'))} MB, {server.status().get('Threads')} threads")
            ctx = Ctx(args.quick, minutes, work, server, token, Marker(), say, index_url)
            ctx.flags["soak_rate"] = args.soak_rate
            seed_study = ctx.marker.uid()
            seeds = [small_ct(ctx.marker, study=seed_study, seed=i, InstanceNumber=i + 1) for i in range(20)]
            answer = ctx.stow(seeds)
            if answer.status != 200:
                raise RuntimeError(f"storing the seed objects failed: HTTP {answer.status}")
            ctx.seeds = seeds
            for probe in probes(args.quick, minutes):
                if selected is not None and probe.name not in selected and probe.name not in ("still-serving",):
                    continue
                result = run_probe(probe, ctx, say)
                result.server_up_after = server.healthy(30) if probe.name not in ("shutdown-idle-dimse",
                                                                                    "log-scan") else None
                results.append(result)
                for line in result.lines():
                    say(line)
                if result.server_up_after is False:
                    ctx.crashes.append(f"after {probe.name}: {server.log_tail(5)}")
                    say(f"!!! the server stopped answering after {probe.name}; restarting it")
                    server.stop(10)
                    server.start()
            server.stop(10)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    _summary(results, say, time.monotonic() - started)
    (out / "report.txt").write_text("\n".join(report) + "\n")
    write_json(out / "report.json", {"started": stamp, "quick": args.quick, "minutes": minutes,
                                     "index": "postgresql" if args.index_url else "sqlite",
                                     "results": [r.as_dict() for r in results]})
    print(f"\nreport: {out / 'report.txt'}\n        {out / 'report.json'}\nserver log: {out / 'server.log'}")
    return 0


def _summary(results: list[Result], say: Callable[[str], None], seconds: float) -> None:
    flat = [c for r in results for c in (r.children or [r])]
    counts = {s: sum(r.status == s for r in flat) for s in (PASS, FAIL, "SKIP", "ERROR")}
    up = [r for r in results if r.server_up_after is False]
    say("")
    say(f"=== {len(results)} probes, {len(flat)} checks in {seconds / 60:.1f} min: "
        + ", ".join(f"{v} {k}" for k, v in counts.items() if v))
    say("the server stayed up throughout (restarted once on purpose, before the soak)" if not up else
        f"THE SERVER STOPPED ANSWERING after: {', '.join(r.name for r in up)} (restarted each time)")
    for r in results:
        for line in r.lines():
            say(line)


def _cpus() -> int:
    import os

    return os.cpu_count() or 0


if __name__ == "__main__":
    sys.exit(main())
