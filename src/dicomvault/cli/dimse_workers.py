"""DIMSE worker processes (``dimse_workers``): more processes accepting DIMSE connections on ``serve``'s port.

Why (issue #10, "every core used"): one Python process receives C-STORE under one GIL; with four parallel
associations the machine stayed ~65 % busy. Processes, not threads, put the other cores to work.

How:

* ``serve`` binds the plain DIMSE port as before (``DimseServer.start``), then ``DimseWorkers`` starts
  ``dimse_workers - 1`` children, ``python -m dicomvault dimse-worker`` (a hidden subcommand), that inherit the
  bound, listening socket (``pass_fds``). Every process accepts on that one socket and the kernel gives each new
  connection to one of them. Nothing is bound twice (port 0 works, no ``SO_REUSEPORT``), and a child that
  restarts finds the port as it was: connections queue in the backlog meanwhile.
* A child reads the serve process's resolved ``Settings`` as one JSON line on its stdin (a pipe, not the command
  line: the index URL may hold a password), builds its own ``Archive`` (without migrations: the parent ran them) and
  a ``DimseServer`` over the inherited socket. DIMSE only: no HTTP, no job worker, no DICOM TLS listener (that stays
  in the serve process). Each runs the same ingest, so a C-STORE is acknowledged only once durable and indexed.
* Each process has its own connection gate and association count, so the caps are divided among the processes
  (``connections.per_process``): the whole server keeps about the configured totals.

Lifecycle: the serve process forwards its graceful stop as SIGTERM (children stop like its own DIMSE server, within
``dimse_shutdown_grace``), waits for them and kills what is left ``STOP_MARGIN`` seconds later; a second signal kills
them at once. A child that ends while the server runs is logged (WARNING) and restarted after a back-off. A child
ends when the serve process is gone, however it ended: its stdin pipe stays open and reaches end-of-file when the
kernel closes the parent's end. Chosen over ``PR_SET_PDEATHSIG`` (Linux only; fires when the *thread* that started
the child ends, and restarts are started from the supervisor thread; kills without a grace period) and over polling
``os.getppid()`` (a delay, periodic wake-ups, and a subreaper makes the test unreliable).
"""

from __future__ import annotations

import gc
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from types import FrameType
from typing import Annotated

import typer

from dicomvault.cli.allocator import tune_allocator
from dicomvault.cli.common import fail, open_archive
from dicomvault.jobs.worker import READ_FLUSH_INTERVAL
from dicomvault.logging_setup import configure_logging
from dicomvault.services.archive import Archive
from dicomvault.settings import Settings

log = logging.getLogger(__name__)

#: First wait before a child that ended unexpectedly is started again; doubled after each quick failure.
RESTART_DELAY = 0.5
#: Longest wait between restarts (a child that cannot start, e.g. the index is unreachable, retries this often).
MAX_RESTART_DELAY = 30.0
#: A child that ran this long before ending restarts after ``RESTART_DELAY`` again.
STABLE_AFTER = 30.0
#: Seconds between checks of the children (how soon an ended child is noticed).
POLL = 0.2
#: Seconds past ``dimse_shutdown_grace`` a stop waits for children before killing them (their gate's own close
#: waits, closing the index).
STOP_MARGIN = 5.0


def describe_exit(returncode: int) -> str:
    """A child's exit status in words (negative: the signal that ended it)."""
    if returncode < 0:
        try:
            return f"killed by {signal.Signals(-returncode).name}"
        except ValueError:
            return f"killed by signal {-returncode}"
    return f"exit status {returncode}"


@dataclass
class _Slot:
    """One child position: the process in it now, and its restart back-off."""

    number: int
    proc: subprocess.Popen[bytes] | None = None
    started: float = 0.0
    delay: float = RESTART_DELAY
    restart_at: float = 0.0


class DimseWorkers:
    """The serve process's side: starts, watches, restarts and stops the worker processes (module doc)."""

    def __init__(self, settings: Settings, listening: socket.socket, processes: int) -> None:
        """``processes``: DIMSE processes in all, this one included (``processes - 1`` children are started)."""
        self.settings = settings
        self.listening = listening
        self.processes = processes
        self._settings_line = settings.model_dump_json().encode() + b"\n"
        self._slots = [_Slot(number) for number in range(1, processes)]
        self._lock = threading.Lock()
        self._stopping = False
        self._done = threading.Event()
        self._monitor: threading.Thread | None = None

    @property
    def pids(self) -> list[int]:
        """Process ids of the children running now."""
        with self._lock:
            return [s.proc.pid for s in self._slots if s.proc is not None and s.proc.poll() is None]

    def start(self) -> None:
        """Start every child and the thread that restarts them (returns at once)."""
        with self._lock:
            for slot in self._slots:
                self._spawn(slot)
        self._monitor = threading.Thread(target=self._watch, name="DimseWorkers", daemon=True)
        self._monitor.start()

    def request_stop(self) -> None:
        """Ask every child for a graceful stop (SIGTERM) and start no more; returns at once."""
        with self._lock:
            self._stopping = True
            for slot in self._slots:
                if slot.proc is not None and slot.proc.returncode is None:
                    _signal(slot.proc, signal.SIGTERM)

    def wait(self, timeout: float | None = None) -> None:
        """After ``request_stop``: wait for the children (default: the grace period plus ``STOP_MARGIN``), kill
        those still running, reap them all."""
        timeout = self.settings.dimse_shutdown_grace + STOP_MARGIN if timeout is None else timeout
        deadline = time.monotonic() + timeout
        while self.pids and time.monotonic() < deadline:
            time.sleep(0.05)
        with self._lock:
            for slot in self._slots:
                if slot.proc is not None and slot.proc.poll() is None:
                    log.warning("DIMSE worker process %d (pid %d) still running %g s after the stop: killing it",
                                slot.number, slot.proc.pid, timeout)
                    slot.proc.kill()
                if slot.proc is not None:
                    slot.proc.wait()
                    _close_pipe(slot.proc)
        self._done.set()
        if self._monitor is not None and self._monitor is not threading.current_thread():
            self._monitor.join()

    def stop(self) -> None:
        """Graceful stop of every child, bounded (``request_stop`` then ``wait``)."""
        self.request_stop()
        self.wait()

    def kill(self) -> None:
        """End every child at once (SIGKILL): the serve process is exiting without waiting."""
        with self._lock:
            self._stopping = True
            for slot in self._slots:
                if slot.proc is not None and slot.proc.returncode is None:
                    _signal(slot.proc, signal.SIGKILL)

    def _spawn(self, slot: _Slot) -> None:
        """Start the child of ``slot`` (under the lock): its settings go down its stdin, which stays open."""
        fd = self.listening.fileno()
        argv = [sys.executable, "-m", "dicomvault", "dimse-worker", "--fd", str(fd),
                "--processes", str(self.processes), "--number", str(slot.number)]
        try:
            proc = subprocess.Popen(argv, stdin=subprocess.PIPE, pass_fds=(fd,))
        except OSError as exc:
            slot.restart_at = time.monotonic() + slot.delay
            log.warning("Cannot start DIMSE worker process %d: %s; retrying in %g s", slot.number, exc, slot.delay)
            slot.delay = min(slot.delay * 2, MAX_RESTART_DELAY)
            return
        slot.proc, slot.started = proc, time.monotonic()
        try:
            assert proc.stdin is not None
            proc.stdin.write(self._settings_line)
            proc.stdin.flush()
        except OSError:
            pass  # it ended already; the watch loop notices
        log.info("DIMSE worker process %d started (pid %d)", slot.number, proc.pid)

    def _watch(self) -> None:
        """Reap children that ended and restart them after their back-off, until the stop."""
        while not self._done.wait(POLL):
            with self._lock:
                now = time.monotonic()
                for slot in self._slots:
                    if slot.proc is not None and slot.proc.poll() is not None:
                        self._ended(slot, slot.proc, now)
                    if slot.proc is None and not self._stopping and now >= slot.restart_at:
                        self._spawn(slot)

    def _ended(self, slot: _Slot, proc: subprocess.Popen[bytes], now: float) -> None:
        _close_pipe(proc)
        slot.proc = None
        if self._stopping:
            log.debug("DIMSE worker process %d (pid %d) stopped: %s", slot.number, proc.pid,
                      describe_exit(proc.returncode))
            return
        if now - slot.started >= STABLE_AFTER:
            slot.delay = RESTART_DELAY
        slot.restart_at = now + slot.delay
        log.warning("DIMSE worker process %d (pid %d) ended unexpectedly (%s); restarting it in %g s "
                    "(associations it was serving were cut; their senders retry what was not acknowledged)",
                    slot.number, proc.pid, describe_exit(proc.returncode), slot.delay)
        slot.delay = min(slot.delay * 2, MAX_RESTART_DELAY)


def _signal(proc: subprocess.Popen[bytes], signum: int) -> None:
    try:
        proc.send_signal(signum)
    except OSError:
        pass


def _close_pipe(proc: subprocess.Popen[bytes]) -> None:
    if proc.stdin is not None:
        try:
            proc.stdin.close()
        except OSError:
            pass


# -- the child's side ------------------------------------------------------------------------------------------------


def _read_line(fd: int) -> bytes:
    """One line from ``fd`` (raw reads: the same descriptor is then watched for end-of-file by another thread,
    which ``sys.stdin``'s buffered reader must not hold a lock on at exit)."""
    out = bytearray()
    while not out.endswith(b"\n"):
        chunk = os.read(fd, 65536)
        if not chunk:
            break
        out += chunk
    return bytes(out)


def _watch_parent(fd: int, number: int, stop: threading.Event) -> None:
    """Block until the serve process's end of the pipe closes (it ended, however), then ask for a stop."""
    try:
        while os.read(fd, 4096):
            pass
    except OSError:
        pass
    if not stop.is_set():
        log.warning("DIMSE worker process %d (pid %d): the serve process is gone; stopping", number, os.getpid())
        stop.set()


def _flush_reads(archive: Archive) -> None:
    try:
        if archive.reads is not None:
            archive.reads.flush()
    except Exception as exc:  # the index is down: the times wait for the next flush (or are lost: harmless)
        log.warning("DIMSE worker: last-read times not written (%s)", type(exc).__name__)


def dimse_worker_command(
    fd: Annotated[int, typer.Option("--fd", help="Descriptor of the inherited listening socket.")],
    processes: Annotated[int, typer.Option("--processes", help="DIMSE processes in all (caps are divided).")],
    number: Annotated[int, typer.Option("--number", help="This worker's number (logs).")] = 1,
) -> None:
    """Internal: one DIMSE worker process of ``serve`` (started by ``serve --dimse-workers``, never by hand); reads
    the serve process's settings on stdin."""
    try:
        settings = Settings.model_validate_json(_read_line(0))
    except ValueError:
        fail("dimse-worker is started by `dicomvault serve --dimse-workers N`; it reads its settings on stdin")
    configure_logging(settings.log_level)
    tune_allocator()
    stop = threading.Event()
    terms = 0

    def on_term(signum: int, frame: FrameType | None) -> None:
        # The first SIGTERM stops gracefully; a repeat (the serve process forwarding the signal a service manager
        # also sent to the whole group) changes nothing: the serve process kills us if the grace runs out.
        nonlocal terms
        terms += 1
        stop.set()

    # Ctrl-C in a terminal reaches the whole process group; the serve process forwards it as SIGTERM.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, on_term)
    archive = open_archive(settings, run_migrations=False)
    try:
        from dicomvault.dimse.server import DimseServer

        dimse = DimseServer(archive, processes=processes)
        dimse.start(socket.socket(fileno=fd))
        threading.Thread(target=_watch_parent, args=(0, number, stop), name="ParentWatch", daemon=True).start()
        gc.collect()
        gc.freeze()  # as in serve: long-lived objects out of the collector's generations
        flushed = time.monotonic()
        while not stop.wait(1.0):
            # this process runs no job worker: its C-GET / C-MOVE reads reach the studies' last-read times here
            if archive.reads is not None and time.monotonic() - flushed >= READ_FLUSH_INTERVAL:
                flushed = time.monotonic()
                _flush_reads(archive)
        log.debug("DIMSE worker process %d stopping (%d SIGTERM)", number, terms)
        dimse.stop()
    finally:
        archive.close()
