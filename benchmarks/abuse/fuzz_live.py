"""Random garbage against the live server: PDU streams on the DIMSE port (pure noise, and valid associations with
mutated PDUs after them, on both the lean path and pynetdicom's), and mutated STOW-RS multipart bodies. Seeded, so
a run can be repeated; the server must answer each with a clean refusal and keep serving."""

from __future__ import annotations

import contextlib
import random
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx

from benchmarks.abuse import dimse_client
from benchmarks.abuse.context import LOG_LINE, Ctx
from benchmarks.abuse.harness import FAIL, PASS, Result, close_wait
from benchmarks.abuse.objects import dataset_bytes, multipart, small_ct

SEED = 20261206


def _mutate(rng: random.Random, data: bytes, edits: int) -> bytes:
    buf = bytearray(data)
    for _ in range(edits):
        pos = rng.randrange(0, max(1, len(buf)))
        op = rng.choice(["set", "set", "length", "insert", "delete", "truncate"])
        if op == "set" and buf:
            buf[pos % len(buf)] = rng.randrange(256)
        elif op == "length" and len(buf) > pos + 4:
            buf[pos : pos + 4] = rng.choice([0, 1, 6, 0xFFFF, 0x7FFFFFFF, 0xFFFFFFFF]).to_bytes(4, "big")
        elif op == "insert":
            buf[pos:pos] = rng.randbytes(rng.randrange(1, 32))
        elif op == "delete":
            del buf[pos : pos + rng.randrange(1, 32)]
        elif op == "truncate":
            del buf[pos:]
    return bytes(buf)


def _pdu_stream(rng: random.Random, ds: bytes) -> bytes:
    kind = rng.choice(["noise", "lean", "lean", "pynetdicom", "bad-rq"])
    if kind == "noise":
        return rng.randbytes(rng.randrange(1, 4096))
    if kind == "bad-rq":
        return _mutate(rng, dimse_client.associate_rq("FUZZ", storage_only=rng.random() < 0.5), rng.randrange(1, 4))
    body = dimse_client.echo_pdus() + dimse_client.store_pdus(ds, "1.2.826.0.1.3680043.99.7", 2, 4096) \
        + dimse_client.RELEASE_RQ
    rq = dimse_client.associate_rq("FUZZ", storage_only=kind == "lean")
    return rq + _mutate(rng, body, rng.randrange(1, 5))


def _send_one(ctx: Ctx, stream: bytes) -> str:
    try:
        sock = dimse_client.connect(ctx.server.dimse_port, timeout=3)
    except OSError:
        return "connect failed"
    try:
        with contextlib.suppress(OSError):
            sock.sendall(stream)
        sock.settimeout(1)
        first: int | None = None
        try:
            while True:
                data = sock.recv(65536)
                if not data:
                    return f"answered 0x{first:02X}, closed" if first is not None else "closed"
                if first is None:
                    first = data[0]
        except TimeoutError:
            return f"answered 0x{first:02X}, left open" if first is not None else "silent, left open"
        except OSError:
            return "reset"
    finally:
        sock.close()


def garbage_pdus(ctx: Ctx, result: Result) -> None:
    count = ctx.pick(300, 2000)
    rng = random.Random(SEED)
    ds = dataset_bytes(small_ct(ctx.marker, rows=16).data)
    streams = [_pdu_stream(rng, ds) for _ in range(count)]
    baseline = ctx.rss().get("Threads", -1)
    mark = ctx.server.log_mark()
    start = time.monotonic()
    with ThreadPoolExecutor(12) as pool:
        outcomes = Counter(pool.map(lambda s: _send_one(ctx, s), streams))
    seconds = time.monotonic() - start
    settle_deadline = time.monotonic() + 90  # longer than the server's default 60 s timeouts
    while time.monotonic() < settle_deadline and (ctx.rss().get("Threads", 0) > baseline + 10
                                                  or close_wait(ctx.server.dimse_port)):
        time.sleep(1)
    threads_after = ctx.rss().get("Threads", -1)
    stuck = close_wait(ctx.server.dimse_port)
    echo = dimse_client.echo(ctx.server.dimse_port)
    ok = ctx.server.healthy() and echo.established and echo.status == 0 and threads_after <= baseline + 10 \
        and stuck == 0
    lines = ctx.server.log_since(mark)
    loud = sum(1 for ln in lines if (m := LOG_LINE.match(ln)) and m.group("level") in ("WARNING", "ERROR"))
    traces = sum("Traceback" in ln for ln in lines)
    result.child("garbage PDUs: survived", "fuzzing", ok,
                 f"{count} garbage/mutated PDU streams (seed {SEED}) in {seconds:.0f} s; server "
                 f"{'up, C-ECHO ok' if echo.established else 'NOT answering C-ECHO'}; threads {baseline} → "
                 f"{threads_after}, {stuck} connection(s) never closed by the server (CLOSE-WAIT) after the "
                 "90 s settle", outcomes=dict(outcomes.most_common()), close_wait=stuck)
    result.child("garbage PDUs: log noise", "defect 13", loud <= count and traces == 0,
                 f"{loud} log lines at WARNING or above ({loud / count:.1f} per connection), {traces} tracebacks",
                 warning_or_above=loud, tracebacks=traces)
    result.measured.update(streams=count, seed=SEED, threads_before=baseline, threads_after=threads_after)


def _body(rng: random.Random, parts: list[bytes]) -> tuple[bytes, str]:
    boundary = rng.choice([f"b{rng.randrange(10**9)}", "x" * rng.randrange(60, 90), "a b", "--", "\"q\"", ""])
    body, ctype = multipart(parts, boundary or "fallback")
    kind = rng.choice(["mutate", "mutate", "wrong-boundary", "no-boundary", "garbage", "header-noise"])
    if kind == "mutate":
        body = _mutate(rng, body, rng.randrange(1, 6))
    elif kind == "wrong-boundary":
        ctype = ctype.rsplit("boundary=", 1)[0] + f"boundary={rng.randrange(10**9)}"
    elif kind == "no-boundary":
        ctype = 'multipart/related; type="application/dicom"'
    elif kind == "garbage":
        body = rng.randbytes(rng.randrange(0, 20000))
    else:
        body = body.replace(b"Content-Type: application/dicom", rng.choice([
            b"Content-Type", b"Content-Type: application/dicom\r\nX: " + b"y" * 20000, b": :",
            b"Content-Length: 12", b"Content-Type: text/plain"]), 1)
    return body, ctype


def multipart_bodies(ctx: Ctx, result: Result) -> None:
    count = ctx.pick(200, 1000)
    rng = random.Random(SEED + 1)
    statuses: Counter[Any] = Counter()
    http = ctx.client(30)
    start = time.monotonic()
    for i in range(count):
        parts = [small_ct(ctx.marker, seed=i).data for _ in range(rng.randrange(1, 4))]
        body, ctype = _body(rng, parts)
        try:
            statuses[http.post("/dicom-web/studies", content=body, headers={"Content-Type": ctype}).status_code] += 1
        except httpx.HTTPError as exc:
            statuses[type(exc).__name__] += 1
    http.close()
    seconds = time.monotonic() - start
    bad = {k: v for k, v in statuses.items() if not isinstance(k, int) or k >= 500}
    ok = not bad and ctx.server.healthy()
    result.status = PASS if ok else FAIL
    result.summary = (f"{count} mutated STOW-RS bodies (seed {SEED + 1}) in {seconds:.0f} s: answers "
                      + ", ".join(f"{k}×{v}" for k, v in sorted(statuses.items(), key=lambda kv: str(kv[0])))
                      + (f"; UNEXPECTED: {bad}" if bad else ""))
    result.measured.update(bodies=count, seed=SEED + 1, statuses={str(k): v for k, v in statuses.items()})
