"""The campaign's plumbing: the server under test as a subprocess, what /proc says about it, probe results, and
the runner that keeps one failing or hanging probe from stopping the others.

The server is ``python -m dicomvault serve`` of the repository this file belongs to (``src/`` first on
PYTHONPATH), on 127.0.0.1 with free ports and its own data folder, logging at INFO to a file the probes read. The
campaign never signals any process it did not start.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import threading
import time
import traceback
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import httpx

ROOT = Path(__file__).resolve().parent.parent.parent
HOST = "127.0.0.1"
AET = "DICOMVAULT"


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


def proc_status(pid: int) -> dict[str, int]:
    """VmRSS, VmHWM (kB) and Threads of a process, from /proc/<pid>/status; {} if it is gone."""
    out: dict[str, int] = {}
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return out
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM", "Threads"):
            out[key] = int(value.split()[0])
    return out


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (Linux /proc), -1 if it is gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return -1.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def close_wait(port: int) -> int:
    """Sockets on local ``port`` in CLOSE-WAIT (the client closed, the server never did), from /proc/net/tcp."""
    count = 0
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(OSError):
            for line in Path(table).read_text().splitlines()[1:]:
                fields = line.split()
                if int(fields[1].rsplit(":", 1)[1], 16) == port and fields[3] == "08":
                    count += 1
    return count


def reset_peak(pid: int) -> bool:
    """Reset the process's VmHWM to its current RSS (Linux ``clear_refs`` 5), so a probe measures its own peak."""
    try:
        Path(f"/proc/{pid}/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def mb(kb: int | None) -> float | None:
    return None if kb is None else round(kb / 1024, 1)


def dv_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """The environment of a ``dicomvault`` child: this repository's sources first, no stray configuration."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("DICOMVAULT_")}
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT / "src"), *filter(None, [os.environ.get("PYTHONPATH")])])
    env["COLUMNS"] = "200"
    env["TCP_NODELAY"] = "1"
    env.update(extra or {})
    return env


def dv(*args: str, env: dict[str, str] | None = None, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """Run a ``dicomvault`` command of this repository to completion."""
    return subprocess.run([sys.executable, "-m", "dicomvault", *args], capture_output=True, text=True,
                          timeout=timeout, env=dv_env(env))


@dataclass
class Server:
    """One ``dicomvault serve`` started by the campaign."""

    data_dir: Path
    log_path: Path
    index_url: str | None = None
    extra_args: list[str] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)
    dimse_port: int = field(default_factory=free_port)
    http_port: int = field(default_factory=free_port)
    proc: subprocess.Popen[bytes] | None = None
    starts: int = 0

    @property
    def base_url(self) -> str:
        return f"http://{HOST}:{self.http_port}"

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def command(self) -> list[str]:
        cmd = [sys.executable, "-m", "dicomvault", "serve", "--data-dir", str(self.data_dir), "--host", HOST,
               "--dimse-port", str(self.dimse_port), "--http-port", str(self.http_port), "--aet", AET,
               "--log-level", "INFO"]
        if self.index_url:
            cmd += ["--index-url", self.index_url]
        return cmd + self.extra_args

    def start(self, timeout: float = 90) -> None:
        """Start and wait until /readyz answers and the DIMSE port accepts; raise if it exits or stays silent."""
        self.starts += 1
        with self.log_path.open("ab") as log:
            log.write(f"\n===== campaign: start #{self.starts}: {' '.join(self.command())}\n".encode())
            log.flush()
            self.proc = subprocess.Popen(self.command(), stdout=log, stderr=subprocess.STDOUT, env=dv_env(self.env),
                                         start_new_session=True)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"dicomvault serve exited with {self.proc.returncode}: {self.log_tail(15)}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{self.base_url}/readyz", timeout=2).status_code == 200 and self.dimse_open():
                    return
            time.sleep(0.2)
        raise TimeoutError(f"dicomvault serve did not become ready: {self.log_tail(15)}")

    def start_expecting_refusal(self, timeout: float = 60) -> int | None:
        """Start a configuration the server should refuse: its exit code, or None if it started (it is left
        running; stop it)."""
        try:
            self.start(timeout)
        except RuntimeError:
            assert self.proc is not None
            return self.proc.returncode
        return None

    def dimse_open(self) -> bool:
        with socket.socket() as s:
            s.settimeout(1)
            return s.connect_ex((HOST, self.dimse_port)) == 0

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def healthy(self, timeout: float = 10) -> bool:
        if not self.alive():
            return False
        try:
            return httpx.get(f"{self.base_url}/healthz", timeout=timeout).status_code == 200
        except httpx.HTTPError:
            return False

    def status(self) -> dict[str, int]:
        return proc_status(self.pid) if self.alive() else {}

    def stop(self, timeout: float = 30) -> int | None:
        """SIGTERM, then SIGKILL after ``timeout``: only this server's own process."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        return self.proc.returncode

    # -- the log --------------------------------------------------------------------------------------------------

    def log_mark(self) -> int:
        return self.log_path.stat().st_size if self.log_path.exists() else 0

    def log_since(self, mark: int) -> list[str]:
        with self.log_path.open("rb") as f:
            f.seek(mark)
            return f.read().decode("utf-8", "replace").splitlines()

    def log_tail(self, lines: int) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


def create_token(data_dir: Path, index_url: str | None) -> str:
    """An admin API token in the archive (before the server starts), printed once by the CLI."""
    args = ["token", "create", "abuse-campaign", "--scope", "admin", "--data-dir", str(data_dir)]
    if index_url:
        args += ["--index-url", index_url]
    result = dv(*args)
    if result.returncode != 0:
        raise RuntimeError(f"token create failed: {result.stderr[-500:]}")
    lines = [ln.strip() for ln in result.stdout.splitlines() if ln.strip()]
    return lines[-1]


@contextlib.contextmanager
def postgres_database(url: str) -> Iterator[str]:
    """A fresh database on the PostgreSQL server of ``url`` for one server, dropped afterwards."""
    import psycopg  # only with --index-url

    name = "dv_campaign_" + secrets.token_hex(4)
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield urlunsplit(urlsplit(url)._replace(path=f"/{name}"))
    finally:
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


# -- results and the runner ------------------------------------------------------------------------------------


PASS, FAIL, SKIP, ERROR = "PASS", "FAIL", "SKIP", "ERROR"


@dataclass
class Result:
    """One probe's outcome: ``status``, a one-line ``summary`` of what was measured, the figures, and which defect
    of the issue it checks."""

    name: str
    defect: str
    status: str = ERROR
    summary: str = ""
    measured: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0
    server_up_after: bool | None = None
    #: Probes that measure several things at once report one child per thing (each with its own verdict).
    children: list[Result] = field(default_factory=list)

    def child(self, name: str, defect: str, ok: bool, summary: str, **measured: Any) -> Result:
        sub = Result(name, defect, PASS if ok else FAIL, summary, dict(measured))
        self.children.append(sub)
        self.status = FAIL if any(c.status == FAIL for c in self.children) else PASS
        self.summary = f"{sum(c.status == PASS for c in self.children)}/{len(self.children)} checks passed"
        return sub

    def lines(self) -> list[str]:
        up = "" if self.server_up_after in (None, True) else "  [SERVER DOWN AFTER THIS PROBE]"
        head = f"{self.status:<5} {self.name:<26} ({self.defect}) {self.summary}{up}"
        return [head] + [f"   {c.status:<5} {c.name:<23} ({c.defect}) {c.summary}" for c in self.children]

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


class Probe:
    """A probe function and its budget; the function fills in the ``Result`` it is given."""

    def __init__(self, name: str, defect: str, fn: Callable[[Any, Result], None], budget: float) -> None:
        self.name, self.defect, self.fn, self.budget = name, defect, fn, budget


def run_probe(probe: Probe, ctx: Any, printer: Callable[[str], None]) -> Result:
    """Run one probe in a thread bounded by its budget. An exception becomes ERROR with its type and message; a
    probe still running after its budget is reported as ERROR and abandoned (its sockets all have timeouts)."""
    result = Result(probe.name, probe.defect)
    printer(f"--- {probe.name}: {probe.defect} (budget {probe.budget:.0f} s)")
    started = time.monotonic()

    def target() -> None:
        try:
            probe.fn(ctx, result)
        except Exception as exc:
            result.status = ERROR
            result.summary = f"probe error: {type(exc).__name__}: {str(exc)[:300]}"
            result.measured["traceback"] = traceback.format_exc(limit=6)

    thread = threading.Thread(target=target, name=f"probe-{probe.name}", daemon=True)
    thread.start()
    thread.join(probe.budget)
    if thread.is_alive():
        result.status = ERROR
        result.summary = f"did not finish within its budget of {probe.budget:.0f} s; " + result.summary
    result.seconds = round(time.monotonic() - started, 1)
    return result


def write_json(path: Path, data: Any) -> None:
    path.write_text(json.dumps(data, indent=2, default=str))


class Timer:
    """Wall time of a block: ``with Timer() as t: ...; t.seconds``."""

    def __enter__(self) -> Timer:
        self.start = time.perf_counter()
        self.seconds = 0.0
        return self

    def __exit__(self, *exc: object) -> None:
        self.seconds = time.perf_counter() - self.start


class HealthPoller:
    """Polls /healthz every ``interval`` seconds in a thread and records the latencies (a stalled server shows as
    one long latency, bounded by ``timeout``)."""

    def __init__(self, base_url: str, interval: float = 0.25, timeout: float = 60) -> None:
        self.base_url, self.interval, self.timeout = base_url, interval, timeout
        self.latencies: list[float] = []
        self.failures = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        with httpx.Client(timeout=self.timeout) as client:
            while not self._stop.is_set():
                t0 = time.perf_counter()
                try:
                    ok = client.get(f"{self.base_url}/healthz").status_code == 200
                except httpx.HTTPError:
                    ok = False
                self.latencies.append(time.perf_counter() - t0)
                self.failures += not ok
                self._stop.wait(self.interval)

    def __enter__(self) -> HealthPoller:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        # at least one sample, taken while (or just after) the probe ran: a probe that ends in milliseconds
        # would otherwise leave no latency to judge
        deadline = time.monotonic() + self.timeout
        while not self.latencies and self._thread.is_alive() and time.monotonic() < deadline:
            time.sleep(0.01)
        self._stop.set()
        self._thread.join(self.timeout + 5)

    @property
    def worst(self) -> float:
        return round(max(self.latencies), 2) if self.latencies else float("nan")


def wait_healthy(server: Server, limit: float = 120) -> float:
    """Seconds until /healthz answers within 0.5 s again (a probe may leave the server busy)."""
    start = time.monotonic()
    while time.monotonic() - start < limit:
        t0 = time.perf_counter()
        try:
            if httpx.get(f"{server.base_url}/healthz", timeout=limit).status_code == 200 and \
                    time.perf_counter() - t0 < 0.5:
                break
        except httpx.HTTPError:
            if not server.alive():
                break
        time.sleep(0.5)
    return round(time.monotonic() - start, 1)
