"""Probes of the network front doors: connection exhaustion (silent sockets, idle associations, oversized and
trickled A-ASSOCIATE-RQs, slowloris, huge headers, half-sent bodies), DIMSE details (called AE title, C-MOVE to a
destination that is down, junk on the port) and shutdown.

The connections of one probe come from their own loopback source address (127.0.0.2, .3, …: every 127/8 address
is the loopback interface on Linux), so that a server limiting connections per peer address can tell the abuser
from the well-behaved client, which connects from 127.0.0.1."""

from __future__ import annotations

import contextlib
import os
import select
import signal
import socket
import statistics
import struct
import time
from dataclasses import dataclass, field
from typing import Any

import httpx
from pydicom.dataset import Dataset

from benchmarks.abuse import dimse_client
from benchmarks.abuse.context import LOG_LINE, Ctx
from benchmarks.abuse.harness import (
    FAIL,
    HOST,
    PASS,
    HealthPoller,
    Result,
    close_wait,
    cpu_seconds,
    mb,
    reset_peak,
)

SILENT_FROM, IDLE_FROM, SLOW_FROM, HALF_FROM, ZERO_FROM = "127.0.0.2", "127.0.0.3", "127.0.0.4", "127.0.0.5", \
    "127.0.0.6"
#: The trickling associations come from an address of their own: from IDLE_FROM the per-address cap (32) would
#: refuse them behind the silent ones, and nothing would be measured.
TRICKLE_FROM = "127.0.0.7"
#: Trickling associations: with the 32 silent ones, 48 of the 64 association slots.
TRICKLING = 16


def _threads(ctx: Ctx) -> int:
    return ctx.rss().get("Threads", -1)


def _wait_threads(ctx: Ctx, target: int, limit: float) -> tuple[int, float]:
    start = time.monotonic()
    while time.monotonic() - start < limit:
        n = _threads(ctx)
        if 0 <= n <= target:
            return n, round(time.monotonic() - start, 1)
        time.sleep(0.5)
    return _threads(ctx), round(time.monotonic() - start, 1)


def _open_many(port: int, count: int, bind: str) -> tuple[list[socket.socket], int]:
    socks, failed = [], 0
    for _ in range(count):
        try:
            socks.append(dimse_client.connect(port, bind=bind, timeout=5))
        except OSError:
            failed += 1
    return socks, failed


def silent_sockets(ctx: Ctx, result: Result) -> None:
    """300 TCP connections to the DIMSE port that never send a byte: server threads, and whether a well-behaved
    client still gets an association meanwhile."""
    baseline = _threads(ctx)
    socks, failed = _open_many(ctx.server.dimse_port, 300, SILENT_FROM)
    time.sleep(2)
    during = _threads(ctx)
    newcomer = dimse_client.echo(ctx.server.dimse_port, calling="NEWCOMER", timeout=15)
    for s in socks:
        s.close()
    after, settle = _wait_threads(ctx, baseline + 5, 30)
    grew = during - baseline
    ok = grew <= 128 and newcomer.established and newcomer.status == 0
    result.status = PASS if ok else FAIL
    result.summary = (f"300 silent sockets ({failed} not connected): server threads {baseline} → {during} (+{grew}); "
                      f"a new client's C-ECHO meanwhile: {'ok' if newcomer.established else newcomer.detail}; "
                      f"threads back to {after} {settle} s after closing")
    result.measured.update(threads_before=baseline, threads_during=during, threads_after=after,
                           connect_failures=failed, newcomer_established=newcomer.established)


def oversized_associate_rq(ctx: Ctx, result: Result) -> None:
    """An A-ASSOCIATE-RQ whose length field says 0xFFFFFFFF, followed by zeros: how much the server takes in (and
    holds in memory) before it refuses, and whether it closes the connection."""
    reset_peak(ctx.server.pid)
    before = ctx.rss()
    sent, closed_after, stalled = 0, None, False
    start = time.monotonic()
    sock = dimse_client.connect(ctx.server.dimse_port, timeout=10)
    try:
        sock.sendall(b"\x01\x00\xff\xff\xff\xff")
        chunk = bytes(64 * 1024)
        while sent < 48 * 1024 * 1024:
            sock.sendall(chunk)
            sent += len(chunk)
    except TimeoutError:
        stalled = True  # the server stopped reading but kept the connection
    except OSError:
        closed_after = time.monotonic() - start
    if closed_after is None:
        closed_after = _closed_within(sock, 10, start)
    sock.close()
    time.sleep(1)
    peak = ctx.rss().get("VmHWM", 0) - before.get("VmRSS", 0)
    ok = peak < 16 * 1024 and closed_after is not None and sent < 48 * 1024 * 1024
    result.status = PASS if ok else FAIL
    result.summary = (f"server took {sent >> 20} MiB{' then stopped reading' if stalled else ''} and "
                      + (f"closed the connection after {closed_after:.1f} s" if closed_after is not None else
                         "did NOT close the connection")
                      + f"; server peak +{mb(peak)} MB")
    result.measured.update(bytes_accepted=sent, stalled=stalled, closed_after_seconds=closed_after,
                           peak_increase_mb=mb(peak))


def short_associate_rq(ctx: Ctx, result: Result) -> None:
    """An A-ASSOCIATE-RQ announcing 100 bytes more than it carries, after which the client closes: the server
    should drop the connection at end of file. Measured: the server's CPU time and threads over the next 20 s."""
    rq = dimse_client.associate_rq("SHORT")
    baseline = _threads(ctx)
    idle_start = cpu_seconds(ctx.server.pid)
    time.sleep(5)
    idle = cpu_seconds(ctx.server.pid) - idle_start
    with dimse_client.connect(ctx.server.dimse_port, bind=ZERO_FROM) as sock:
        sock.sendall(rq[:2] + struct.pack(">I", len(rq) - 6 + 100) + rq[6:])
    start = cpu_seconds(ctx.server.pid)
    time.sleep(20)
    used = cpu_seconds(ctx.server.pid) - start - 4 * idle  # minus what 20 s of idling costs
    threads = _threads(ctx)
    ok = used < 2 and threads <= baseline
    result.status = PASS if ok else FAIL
    result.summary = (f"server CPU over the next 20 s: {used:.1f} s (idle: {idle / 5:.2f} s per s); threads "
                      f"{baseline} → {threads} 20 s later")
    result.measured.update(cpu_seconds_20s=round(used, 1), threads_before=baseline, threads_after=threads)


def _closed_within(sock: socket.socket, seconds: float, start: float) -> float | None:
    """Seconds since ``start`` at which the server closed ``sock`` (after answering, maybe), or None if it was
    still open ``seconds`` from now."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        sock.settimeout(max(0.1, deadline - time.monotonic()))
        try:
            if not sock.recv(65536):
                return time.monotonic() - start
        except TimeoutError:
            return None
        except OSError:
            return time.monotonic() - start
    return None


@dataclass
class _Conn:
    kind: str
    sock: socket.socket
    opened: float
    trickle: bytes = b""
    every: float = 0.0
    next_send: float = 0.0
    closed_at: float | None = None
    answered: bool = False
    first_bytes: bytes = b""
    data: dict[str, Any] = field(default_factory=dict)


def lingering_connections(ctx: Ctx, result: Result) -> None:
    """Connections that hold the server without finishing anything, all at once for WINDOW seconds: 64 idle
    associations tried from one address (then a new client from another address), 16 from a third address
    sending one byte of a never-ending P-DATA-TF every 20 s, an A-ASSOCIATE-RQ trickled one byte every 2 s, HTTP
    requests whose headers never end (slowloris), and STOW-RS requests whose body stops after 1 KB. For each: does
    the server close it, and when; and does /healthz stay fast meanwhile."""
    window = 75.0
    conns: list[_Conn] = []
    t0 = time.monotonic()
    idle_accepted = idle_rejected = 0
    for i in range(64):  # 64 idle associations tried from one address: the per-address cap admits 32
        s = _associated(ctx, IDLE_FROM, "IDLER", storage_only=i % 2 == 0)
        if s is None:
            idle_rejected += 1
            continue
        idle_accepted += 1
        conns.append(_Conn("idle association", s, time.monotonic()))
    newcomer = dimse_client.echo(ctx.server.dimse_port, calling="NEWCOMER", timeout=15)
    for i in range(TRICKLING):  # a P-DATA-TF that never completes, one byte every 20 s: each read is quick
        s = _associated(ctx, TRICKLE_FROM, "TRICKLER", storage_only=i % 2 == 0)
        if s is not None:
            stream = b"\x04\x00\x00\x00\x10\x00" + bytes(4096)
            conns.append(_Conn("trickling association", s, time.monotonic(), stream, 20.0, time.monotonic()))
    with dimse_client.connect(ctx.server.dimse_port, bind=ZERO_FROM) as zero:  # closed at once by the client
        zero.sendall(b"\x01\x00\x00\x00\x00\x00" + bytes(64))
    rq = dimse_client.associate_rq("TRICKLE")
    s = dimse_client.connect(ctx.server.dimse_port, bind=SLOW_FROM)
    s.sendall(rq[:10])
    conns.append(_Conn("trickled A-ASSOCIATE-RQ", s, time.monotonic(), rq[10:], 2.0, time.monotonic() + 2))
    n_http = ctx.pick(100, 200)
    for _ in range(n_http):
        with contextlib.suppress(OSError):
            s = _http_socket(ctx, SLOW_FROM)
            s.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ")
            conns.append(_Conn("slowloris header", s, time.monotonic(), b"a" * 10_000, 5.0, time.monotonic() + 5))
    for _ in range(n_http):
        with contextlib.suppress(OSError):
            s = _http_socket(ctx, HALF_FROM)
            s.sendall(b"POST /dicom-web/studies HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                      + f"Authorization: Bearer {ctx.token}\r\n".encode()
                      + b'Content-Type: multipart/related; type="application/dicom"; boundary=B\r\n'
                      + b"Content-Length: 10485760\r\n\r\n--B\r\n\r\n" + bytes(1024))
            conns.append(_Conn("half-sent STOW body", s, time.monotonic()))
    with HealthPoller(ctx.server.base_url, interval=0.5, timeout=30) as health:
        _watch(conns, t0 + window)
    never_closed = close_wait(ctx.server.dimse_port)  # only the zero-length request's client has closed so far
    by_kind: dict[str, list[_Conn]] = {}
    for c in conns:
        by_kind.setdefault(c.kind, []).append(c)
        with contextlib.suppress(OSError):
            c.sock.close()
    elapsed = time.monotonic() - t0
    result.child("new client vs 64 idle", "defect 6", newcomer.established and newcomer.status == 0,
                 f"{idle_accepted} idle associations accepted from one address ({idle_rejected} refused); a new "
                 f"client from another address: {'C-ECHO ok' if newcomer.established else newcomer.detail}",
                 accepted=idle_accepted, refused=idle_rejected, newcomer=newcomer.established)
    for kind, name in (("idle association", "silent assocs closed"),
                       ("trickling association", "trickling assocs closed"),
                       ("trickled A-ASSOCIATE-RQ", "trickled assoc-rq"),
                       ("slowloris header", "slowloris headers"), ("half-sent STOW body", "half-sent bodies")):
        group = by_kind.get(kind, [])
        closed = [c.closed_at - c.opened for c in group if c.closed_at is not None]
        still = len(group) - len(closed)
        median = f"{statistics.median(closed):.0f} s" if closed else "-"
        ok = bool(group) and still == 0
        extra = f"; /healthz worst {health.worst:.1f} s" if kind == "slowloris header" else ""
        result.child(name, "defect 6", ok and (
            kind != "slowloris header" or health.worst < 1),
            f"{len(group)} opened: {len(closed)} closed by the server (median after {median}), {still} STILL OPEN "
            f"after {elapsed:.0f} s{extra}",
            opened=len(group), closed=len(closed), still_open=still,
            close_seconds=sorted(round(x, 1) for x in closed)[:5], answered=sum(c.answered for c in group))
    result.child("zero-length assoc-rq", "defect 6", never_closed == 0,
                 f"an A-ASSOCIATE-RQ announcing 0 bytes, then the client closed: {never_closed} server socket(s) "
                 f"still in CLOSE-WAIT {time.monotonic() - t0:.0f} s later (never closed by the server)",
                 close_wait=never_closed)
    result.measured.update(window_seconds=window, healthz_worst=health.worst, healthz_failures=health.failures)


def _associated(ctx: Ctx, bind: str, calling: str, *, storage_only: bool) -> socket.socket | None:
    """A socket with an established association from ``bind``, or None (refused, rejected or failed)."""
    try:
        s = dimse_client.connect(ctx.server.dimse_port, bind=bind, timeout=10)
    except OSError:
        return None
    try:
        s.sendall(dimse_client.associate_rq(calling, storage_only=storage_only))
        pdu = dimse_client.read_pdu(s)
    except OSError:
        pdu = None
    if pdu is not None and pdu[0] == 0x02:
        return s
    s.close()
    return None


def _http_socket(ctx: Ctx, bind: str) -> socket.socket:
    s = socket.socket()
    s.settimeout(5)
    s.bind((bind, 0))
    s.connect((HOST, ctx.server.http_port))
    return s


def _watch(conns: list[_Conn], deadline: float) -> None:
    """Until ``deadline`` (or until every connection is closed): trickle the bytes due, and note when the server
    answers or closes each connection."""
    poller = select.poll()
    by_fd = {c.sock.fileno(): c for c in conns}
    for fd in by_fd:
        poller.register(fd, select.POLLIN | select.POLLERR | select.POLLHUP)
    while time.monotonic() < deadline and any(c.closed_at is None for c in conns):
        now = time.monotonic()
        for c in conns:
            if c.closed_at is None and c.trickle and now >= c.next_send:
                try:
                    c.sock.send(c.trickle[:1])
                    c.trickle = c.trickle[1:]
                except OSError:
                    _closed(poller, c, now)
                c.next_send = now + c.every
        for fd, _ in poller.poll(200):
            c = by_fd[fd]
            try:
                data = c.sock.recv(65536)
            except OSError:
                data = b""
            if data:
                c.answered = True
                c.first_bytes = c.first_bytes or data[:64]
            else:
                _closed(poller, c, time.monotonic())


def _closed(poller: select.poll, c: _Conn, when: float) -> None:
    if c.closed_at is None:
        c.closed_at = when
        with contextlib.suppress(KeyError, ValueError):
            poller.unregister(c.sock.fileno())


def huge_header(ctx: Ctx, result: Result) -> None:
    """An HTTP request with a 1 MB header line."""
    s = _http_socket(ctx, HOST)
    s.settimeout(15)
    answer = b""
    try:
        s.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Big: " + b"a" * (1 << 20) + b"\r\n\r\n")
        answer = s.recv(200)
    except OSError as exc:
        answer = f"connection error {type(exc).__name__}".encode()
    finally:
        s.close()
    status_line = answer.split(b"\r\n", 1)[0].decode("latin-1", "replace")
    ok = not status_line.startswith("HTTP/1.1 200")
    result.status = PASS if ok else FAIL
    result.summary = f"1 MB header answered: {status_line or 'connection closed'}"
    result.measured["answer"] = status_line


def dimse_junk(ctx: Ctx, result: Result) -> None:
    """4 KiB of junk (an HTTP request, then random bytes) on the DIMSE port: the log lines it costs."""
    mark = ctx.server.log_mark()
    s = dimse_client.connect(ctx.server.dimse_port, timeout=5)
    with contextlib.suppress(OSError):
        s.sendall(b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n" + os.urandom(4096))
        s.settimeout(5)
        while s.recv(4096):
            pass
    s.close()
    time.sleep(3)
    lines = ctx.server.log_since(mark)
    loud = [ln for ln in lines if (m := LOG_LINE.match(ln)) and m.group("level") in ("WARNING", "ERROR", "CRITICAL")]
    traces = sum("Traceback" in ln for ln in lines)
    ok = len(loud) <= 1 and traces == 0
    result.status = PASS if ok else FAIL
    result.summary = f"{len(lines)} log lines, {len(loud)} at WARNING or above, {traces} traceback(s)"
    result.measured.update(lines=len(lines), warning_or_above=len(loud), tracebacks=traces,
                           examples=[ln[:160] for ln in loud[:3]])


def called_aet(ctx: Ctx, result: Result) -> None:
    """An association addressed to another AE title (echoscu -aec WRONGAE)."""
    outcome = dimse_client.echo(ctx.server.dimse_port, called="WRONGAE")
    result.status = PASS if not outcome.established else FAIL
    result.summary = ("refused (" + outcome.detail + ")" if not outcome.established
                      else f"ACCEPTED, C-ECHO status 0x{outcome.status or 0:04X}")
    result.measured["established"] = outcome.established


def cmove_down(ctx: Ctx, result: Result) -> None:
    """C-MOVE of a stored study to a configured destination nobody listens on."""
    seed = ctx.seeds[0]
    ident = Dataset()
    ident.QueryRetrieveLevel, ident.StudyInstanceUID = "STUDY", seed.study
    final, status = dimse_client.move(ctx.server.dimse_port, ident, "DOWNDEST")
    final_hex = f"0x{final:04X}" if final is not None else "none"
    failed = status.get("NumberOfFailedSuboperations")
    comment = str(status.get("ErrorComment", "") or "")
    ok = final not in (None, 0xA801, 0x0000)
    result.status = PASS if ok else FAIL
    result.summary = f"final status {final_hex}, failed sub-operations {failed}, comment '{comment}'"
    result.measured.update(final_status=final_hex, failed_suboperations=failed, error_comment=comment)


def shutdown(ctx: Ctx, result: Result) -> None:
    """SIGINT with one silent TCP connection and one idle association on the DIMSE port: seconds to exit, and
    whether a second SIGINT ends the process at once. (Runs last: it stops the server.)"""
    proc = ctx.server.proc
    assert proc is not None
    silent = dimse_client.connect(ctx.server.dimse_port, timeout=5)
    idle = dimse_client.connect(ctx.server.dimse_port, timeout=5)
    idle.sendall(dimse_client.associate_rq("IDLEATEXIT"))
    dimse_client.read_pdu(idle)
    start = time.monotonic()
    proc.send_signal(signal.SIGINT)
    first_exit = second_exit = None
    with contextlib.suppress(Exception):
        proc.wait(20)
        first_exit = time.monotonic() - start
    if first_exit is None:
        proc.send_signal(signal.SIGINT)
        t1 = time.monotonic()
        with contextlib.suppress(Exception):
            proc.wait(5)
            second_exit = time.monotonic() - t1
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
    silent.close()
    idle.close()
    ok = first_exit is not None and first_exit <= 15
    result.status = PASS if ok else FAIL
    if first_exit is not None:
        result.summary = f"exited {first_exit:.1f} s after SIGINT (exit code {proc.returncode})"
    else:
        result.summary = ("still running 20 s after SIGINT; a second SIGINT "
                          + (f"ended it in {second_exit:.1f} s" if second_exit is not None else
                             "did NOT end it within 5 s (killed)"))
    result.measured.update(first_signal_exit_seconds=first_exit, second_signal_exit_seconds=second_exit,
                           exit_code=proc.returncode)


def healthz_ok(ctx: Ctx) -> bool:
    try:
        return httpx.get(f"{ctx.server.base_url}/healthz", timeout=10).status_code == 200
    except httpx.HTTPError:
        return False
