"""Every DIMSE connection from accept to close: admission caps, where it stands, its deadlines, and the stop.

Why: before issue #9 every TCP connection got a thread before any limit applied (300 silent sockets: 309
threads), timeouts were per ``recv`` (a peer trickling one byte a minute held a connection forever) and a stop
joined every connection thread (one idle TCP connection: 61 s to exit). Here, in one small piece shared by every
listener (plain and TLS) and both receive paths (the lean storage path and pynetdicom):

* ``ConnectionGate.admit`` runs in the accept loop, before any thread exists: over ``max_connections`` in total or
  ``max_per_address`` from one IP address the socket is closed at once (a bare close: answering an A-ASSOCIATE-RJ
  would mean reading the request first, i.e. a thread per connection again), with a rate-limited INFO line.
* ``Connection`` records the phase of the connection (negotiating, idle, receiving a message, busy serving one,
  closing) as the thread serving it moves along, and answers "must it end now, and why" from absolute deadlines:
  ARTIM from accept to A-ASSOCIATE-AC, the idle timeout between DIMSE messages, ``pdu`` seconds between two PDUs
  of one message. Bytes trickling in never extend a deadline. (Each PDU's own deadline is kept by the reader, which
  knows when its first byte arrived: ``store_link`` and ``pynetdicom_guard``.)
* ``ConnectionGate.stop`` closes negotiating and idle connections at once, waits up to the grace period for the
  ones receiving or serving a message (C-STORE in flight), logging what it waits for, then cuts the rest.
"""

from __future__ import annotations

import enum
import logging
import socket
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from dicomvault.settings import Settings

log = logging.getLogger(__name__)


class RateLimitedLog:
    """At most ``burst`` lines per ``interval`` seconds for one kind of message; the count of the lines left out
    is reported with the next line that gets through. A flood of refused or junk connections costs a few lines a
    minute, not one per connection."""

    def __init__(self, logger: logging.Logger, level: int, burst: int = 5, interval: float = 10.0) -> None:
        self._logger, self._level, self._burst, self._interval = logger, level, burst, interval
        self._lock = threading.Lock()
        self._window_start = -interval
        self._count = 0
        self._suppressed = 0

    def __call__(self, message: str, *args: object) -> None:
        now = time.monotonic()
        with self._lock:
            if now - self._window_start >= self._interval:
                self._window_start, self._count = now, 0
            self._count += 1
            if self._count > self._burst:
                self._suppressed += 1
                return
            suppressed, self._suppressed = self._suppressed, 0
        if suppressed:
            message += " (%d similar lines left out)"
            args = (*args, suppressed)
        self._logger.log(self._level, message, *args)


@dataclass(frozen=True)
class Limits:
    """The connection caps and timers, from the settings (see their descriptions in ``settings.py``)."""

    max_connections: int
    max_per_address: int
    #: accept → A-ASSOCIATE-AC sent (PS3.8 ARTIM)
    artim: float
    #: no DIMSE message for this long → A-ABORT
    idle: float
    #: each PDU complete within this long of its first byte; the next PDU of a message within this long
    pdu: float
    #: a stop waits this long for messages in progress
    grace: float

    @classmethod
    def from_settings(cls, s: Settings, processes: int = 1) -> Limits:
        """The settings' caps, each process's share of them when ``processes`` accept on one port (``dimse_workers``:
        every process has a gate of its own, and the kernel, not a shared counter, spreads the connections)."""
        return cls(per_process(s.resolved_dimse_max_connections, processes),
                   per_process(s.dimse_max_connections_per_address, processes), s.dimse_artim_timeout,
                   s.dimse_idle_timeout, s.dimse_timeout, s.dimse_shutdown_grace)


def per_process(total: int, processes: int) -> int:
    """One process's share of a cap that ``processes`` processes enforce each on their own: rounded down (together
    they never admit more than ``total``), at least 1 (each process can still serve someone)."""
    return max(1, total // max(1, processes))


class Phase(enum.Enum):
    NEGOTIATING = "negotiating"  # accepted, A-ASSOCIATE-AC not sent yet
    IDLE = "idle"  # established, between DIMSE messages
    RECEIVING = "receiving"  # part of a DIMSE message has arrived
    BUSY = "busy"  # a complete request is being served (storing, querying, sending sub-operations)
    CLOSING = "closing"  # rejected or released: waiting for the peer to close (PS3.8 Sta13)


#: Phases a stop waits for (work in flight); every other phase is closed at once.
IN_FLIGHT = frozenset({Phase.RECEIVING, Phase.BUSY})
#: Seconds a stop gives connections that are ending anyway (an A-ABORT to send, a thread to finish).
CLOSE_WAIT = 1.0


class Connection:
    """One accepted TCP connection. Its phase is changed by whichever thread serves it (attribute writes under
    the GIL; a reader seeing a transition a moment late only delays a decision by one poll)."""

    def __init__(self, sock: socket.socket, address: Any, limits: Limits, warn: RateLimitedLog | None = None) -> None:
        self.sock = sock
        self.peer = str(address[0])
        self.limits = limits
        #: the WARNING for a peer that breaks the protocol (one line per connection, rate-limited per server)
        self.warn = warn or RateLimitedLog(log, logging.WARNING)
        self.accepted = time.monotonic()
        self.phase = Phase.NEGOTIATING
        #: the calling AE title once the A-ASSOCIATE-RQ was read (for logs; AE titles are not patient data)
        self.calling = ""
        self.idle_since = self.accepted
        self.last_pdu = self.accepted
        self.closing_since = self.accepted
        #: set by a stop: end as soon as nothing is in flight
        self.stop_requested = False
        #: set when the stop's grace period is over: end now, whatever is in flight
        self.forced = False
        #: set by whoever ended the connection (so its thread stops waiting on pynetdicom)
        self.ended = threading.Event()

    def __str__(self) -> str:
        return f"{self.calling or '?'}@{self.peer}"

    @property
    def is_closing(self) -> bool:
        return self.phase == Phase.CLOSING

    @property
    def artim_deadline(self) -> float:
        return self.accepted + self.limits.artim

    # -- transitions ---------------------------------------------------------------------------------------------

    def established(self, calling: str) -> None:
        self.calling = calling or self.calling
        self.phase = Phase.IDLE
        self.idle_since = time.monotonic()

    def closing(self) -> None:
        """Rejected, released or aborted: the peer has ARTIM seconds to close (PS3.8 Sta13)."""
        if self.phase != Phase.CLOSING:
            self.phase = Phase.CLOSING
            self.closing_since = time.monotonic()

    def pdu_received(self) -> None:
        """A complete PDU arrived: an idle association now has a message in progress."""
        self.last_pdu = time.monotonic()
        if self.phase == Phase.IDLE:
            self.phase = Phase.RECEIVING

    def message_received(self) -> None:
        """A complete DIMSE message arrived (any message counts as activity for the idle timeout)."""
        self.idle_since = time.monotonic()
        if self.phase == Phase.RECEIVING:
            self.phase = Phase.IDLE

    def idle(self) -> None:
        if self.phase != Phase.IDLE:
            self.phase = Phase.IDLE
            self.idle_since = time.monotonic()

    @contextmanager
    def busy(self) -> Iterator[None]:
        """Around serving one request: no receive deadline applies, and a stop waits for it (within the grace)."""
        self.phase = Phase.BUSY
        try:
            yield
        finally:
            self.idle()

    # -- deadlines ----------------------------------------------------------------------------------------------

    def wait_deadline(self) -> float | None:
        """By when the next PDU must start arriving, in the current phase (None: no limit while busy)."""
        if self.phase == Phase.NEGOTIATING:
            return self.artim_deadline
        if self.phase == Phase.CLOSING:
            return self.closing_since + self.limits.artim
        if self.phase == Phase.IDLE:
            return self.idle_since + self.limits.idle
        if self.phase == Phase.RECEIVING:
            return self.last_pdu + self.limits.pdu
        return None

    def overdue(self, now: float | None = None) -> str | None:
        """Why the connection must end now, or None. Waiting on a PDU that has started arriving is the reader's
        business (its own per-PDU deadline); this covers the time between PDUs and the stop."""
        if self.forced:
            return "server stopping"
        if self.stop_requested and self.phase not in IN_FLIGHT:
            return "server stopping"
        deadline = self.wait_deadline()
        if deadline is not None and (now if now is not None else time.monotonic()) >= deadline:
            return self.expiry_reason()
        return None

    def expiry_reason(self) -> str:
        if self.phase == Phase.NEGOTIATING:
            return f"no association established within {self.limits.artim:g} s (ARTIM)"
        if self.phase == Phase.IDLE:
            return f"idle for {self.limits.idle:g} s"
        if self.phase == Phase.RECEIVING:
            return f"message incomplete: no PDU for {self.limits.pdu:g} s"
        return "peer did not close the connection"

    # -- ending -------------------------------------------------------------------------------------------------

    def interrupt(self, how: int) -> None:
        """Wake a thread blocked reading this socket (``SHUT_RD``), or cut the connection (``SHUT_RDWR``)."""
        try:
            socket.socket.shutdown(self.sock, how)  # the plain method, also for an SSLSocket (keeps its state)
        except OSError:
            pass

    def close(self) -> None:
        self.ended.set()
        try:
            self.sock.close()
        except OSError:
            pass


class ConnectionGate:
    """Admission and bookkeeping of every open DIMSE connection of one DIMSE server (all its listeners)."""

    def __init__(self, limits: Limits) -> None:
        self.limits = limits
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        self._open: set[Connection] = set()
        self._per_address: Counter[str] = Counter()
        self._refused = RateLimitedLog(log, logging.INFO)
        self._faulty = RateLimitedLog(logging.getLogger("dicomvault.dimse"), logging.WARNING)
        self.stopping = False

    def __len__(self) -> int:
        return len(self._open)

    def admit(self, sock: socket.socket, address: Any) -> Connection | None:
        """Register an accepted connection, or close it at once (returns None) when a cap is reached or the
        server is stopping. Runs in the accept loop: O(1), never blocks."""
        peer = str(address[0])
        with self._lock:
            if self.stopping:
                reason = "server stopping"
            elif len(self._open) >= self.limits.max_connections:
                reason = f"{len(self._open)} connections open (limit {self.limits.max_connections})"
            elif self._per_address[peer] >= self.limits.max_per_address:
                reason = f"{self._per_address[peer]} connections open from this address " \
                         f"(limit {self.limits.max_per_address})"
            else:
                conn = Connection(sock, address, self.limits, self._faulty)
                self._open.add(conn)
                self._per_address[peer] += 1
                return conn
        self._refused("DIMSE connection from %s refused: %s", peer, reason)
        try:
            sock.close()
        except OSError:
            pass
        return None

    def release(self, conn: Connection) -> None:
        """The connection is closed (called once, by the thread that served it)."""
        conn.close()
        with self._lock:
            if conn in self._open:
                self._open.discard(conn)
                self._per_address[conn.peer] -= 1
                if self._per_address[conn.peer] <= 0:
                    del self._per_address[conn.peer]
            self._changed.notify_all()

    def snapshot(self) -> list[Connection]:
        with self._lock:
            return list(self._open)

    def stop(self, grace: float | None = None) -> None:
        """Refuse new connections; end negotiating and idle ones now; give messages in flight up to ``grace``
        seconds (default: the setting) to complete, logging what is waited for; then cut every connection."""
        grace = self.limits.grace if grace is None else grace
        with self._lock:
            self.stopping = True
            conns = list(self._open)
        for conn in conns:
            conn.stop_requested = True
            if conn.phase not in IN_FLIGHT:
                conn.interrupt(socket.SHUT_RD)  # wakes a reader blocked on a silent peer; it sees the stop
        busy = [c for c in conns if c.phase in IN_FLIGHT]
        if busy:
            log.info("DIMSE stop: waiting up to %g s for %d association(s) with a message in progress: %s",
                     grace, len(busy), ", ".join(f"{c} ({c.phase.value})" for c in busy))
        deadline = time.monotonic() + grace
        self._wait(lambda: not any(c.phase in IN_FLIGHT for c in self._open), deadline)
        # What is not in flight ends by itself within milliseconds (an A-ABORT, then close); give it that.
        self._wait(lambda: not self._open, min(deadline, time.monotonic() + CLOSE_WAIT))
        left = self.snapshot()
        late = [c for c in left if c.phase in IN_FLIGHT]
        if late:
            log.warning("DIMSE stop: aborting %d association(s) still in progress after %g s: %s (nothing was "
                        "acknowledged for them; the senders will retry)", len(late), grace,
                        ", ".join(str(c) for c in late))
        for conn in left:
            conn.forced = True
            conn.interrupt(socket.SHUT_RDWR)
        self._wait(lambda: not self._open, time.monotonic() + CLOSE_WAIT)

    def _wait(self, done: Callable[[], bool], deadline: float) -> None:
        """Wait (polling: phase changes do not notify) until ``done()`` or the deadline."""
        with self._lock:
            while not done() and time.monotonic() < deadline:
                self._changed.wait(min(0.05, max(0.0, deadline - time.monotonic())))
