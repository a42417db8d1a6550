"""HTTP/1.1 connection limits that uvicorn's httptools protocol does not have, as a subclass of it.

Measured on uvicorn 0.54 before this module (issue #9): 500 connections that each sent half a request line all
stayed open indefinitely, and a request with a 1 MB header was accepted. ``HttpToolsProtocol`` has no header size
limit and no header or body read timeout; its keep-alive timer (``timeout_keep_alive``) is cancelled by any byte,
so a client trickling one byte every few seconds keeps a connection (and its buffers) forever. uvicorn's h11
protocol has ``h11_max_incomplete_event_size`` but is several times slower per request, and the DICOMweb benchmarks
(docs/benchmarks.md) depend on httptools; ``limit_concurrency`` answers 503 only once a request's headers are
complete, which a slow client never reaches. So this module keeps httptools and adds, per connection:

* **header size** (``http_max_header_bytes``): bytes received from the start of a request until the end of its
  headers are counted as they arrive, before they are parsed; past the limit the client gets ``431`` and the
  connection is closed;
* **header deadline** (``http_header_timeout``): from connection start, and again from the end of each response
  (keep-alive), the complete request headers must arrive within the deadline, or ``408`` and close (an idle
  keep-alive connection is simply closed: a 408 there could be read as the answer to the client's next request).
  The same deadline bounds how long the rest of the body of a request answered early (413 over
  ``max_upload_bytes``, 401) is read and discarded: a client that writes its whole body before reading then gets
  the answer instead of a connection reset, and one that keeps sending is cut off;
* **body idle timeout** (``http_body_timeout``): while the application waits for more request body, no byte for
  that long closes the connection (the application sees a disconnect). Time the application spends elsewhere
  (storing a part while the client's bytes wait in the socket) does not count: the clock runs only inside
  ``receive()`` when nothing is buffered;
* **connection caps** (``http_max_connections`` in total, ``http_max_connections_per_client`` per peer address,
  trusted reverse proxies exempt): a connection over a cap is answered ``503`` at once and closed.

Every refusal is a JSON body ``{"error": ..., "status": ...}`` with ``Connection: close``; parser errors (uvicorn
answers them in plain text) are rewritten the same way. Log lines of refusals are throttled (one line per kind and
10 s, with the count), since an attack produces them by the thousand.

TLS handshakes happen before ``connection_made``; asyncio bounds them with its own 60 s handshake timeout.

``limited_protocol(limits)`` makes a subclass per server, so that each server has its own per-address counters.
The class overrides ``_start_asgi_task`` (a private method of the pinned uvicorn 0.54; tests/dicomweb/
test_dw_http_limits.py exercises every hook against a real server).
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol, RequestResponseCycle

if TYPE_CHECKING:
    from dicomvault.settings import Settings

log = logging.getLogger(__name__)

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def parse_networks(values: list[str]) -> tuple[Network, ...]:
    """Addresses or CIDR networks (``10.0.0.5``, ``10.0.0.0/8``, ``::1``); raises ValueError for anything else."""
    return tuple(ipaddress.ip_network(v.strip(), strict=False) for v in values if v.strip())


@dataclass(frozen=True)
class HttpLimits:
    """The limits of one HTTP server (see the module docstring); times in seconds, sizes in bytes."""

    max_header_bytes: int = 64 * 1024
    header_timeout: float = 20.0
    body_timeout: float = 60.0
    max_connections: int = 1000
    max_connections_per_client: int = 100
    exempt: tuple[Network, ...] = field(default=())

    @classmethod
    def from_settings(cls, settings: Settings) -> HttpLimits:
        return cls(
            max_header_bytes=settings.http_max_header_bytes,
            header_timeout=settings.http_header_timeout,
            body_timeout=settings.http_body_timeout,
            max_connections=settings.http_max_connections,
            max_connections_per_client=settings.http_max_connections_per_client,
            exempt=parse_networks(settings.trusted_proxies),
        )

    def is_exempt(self, host: str) -> bool:
        try:
            address = ipaddress.ip_address(host)
        except ValueError:
            return False
        return any(address in net for net in self.exempt)


class _Throttled:
    """One log line per ``interval`` seconds for one kind of event, carrying how many happened since."""

    def __init__(self, level: int, message: str, interval: float = 10.0) -> None:
        self.level = level
        self.message = message
        self.interval = interval
        self._last = -interval
        self._count = 0

    def __call__(self, detail: str) -> None:
        self._count += 1
        now = time.monotonic()
        if now - self._last >= self.interval:
            log.log(self.level, "%s (%s; %d time(s) since the last such line)", self.message, detail, self._count)
            self._last = now
            self._count = 0


_over_cap = _Throttled(logging.WARNING, "HTTP connection refused: connection limit reached")
_too_large = _Throttled(logging.INFO, "HTTP request refused: headers larger than http_max_header_bytes")
_slow_headers = _Throttled(logging.INFO, "HTTP connection closed: request headers not complete in time")
_stalled_body = _Throttled(logging.INFO, "HTTP connection closed: request body stalled")
_bad_request = _Throttled(logging.INFO, "HTTP request refused: malformed request")


def _json_response(status: int, message: str) -> bytes:
    body = json.dumps({"error": message, "status": status}).encode()
    return b"".join([
        STATUS_LINE[status],
        b"content-type: application/json\r\n",
        b"content-length: " + str(len(body)).encode() + b"\r\n",
        b"connection: close\r\n\r\n",
        body,
    ])


class LimitedHttpToolsProtocol(HttpToolsProtocol):
    """``HttpToolsProtocol`` with the limits of ``limits`` (a class attribute: uvicorn instantiates the class)."""

    limits: ClassVar[HttpLimits] = HttpLimits()
    per_client: ClassVar[dict[str, int]] = {}

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._in_head = True  # the bytes arriving belong to a request line / headers (not to a body)
        self._head_bytes = 0
        self._tail = b""  # the last bytes of the head so far (a CRLF CRLF may span two reads)
        self._message_begun = False
        self._header_timer: asyncio.TimerHandle | None = None
        self._client_key: str | None = None

    # -- connection admission and teardown ---------------------------------------------------------------------

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        refusal = self._admit()
        if refusal is not None:
            _over_cap(refusal)
            self._refuse(503, "too many connections; retry later")
            return
        self._arm_header_timer()

    def _admit(self) -> str | None:
        """None if this connection is within the caps (and count it), else why not."""
        if len(self.connections) > self.limits.max_connections:  # ``connections`` includes this one
            return f"{self.limits.max_connections} in total"
        host = self.client[0] if self.client else None
        if host is None or self.limits.is_exempt(host):
            return None
        current = self.per_client.get(host, 0)
        if current >= self.limits.max_connections_per_client:
            return f"{self.limits.max_connections_per_client} from {host}"
        self.per_client[host] = current + 1
        self._client_key = host
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_header_timer()
        if self._client_key is not None:
            remaining = self.per_client.get(self._client_key, 1) - 1
            if remaining > 0:
                self.per_client[self._client_key] = remaining
            else:
                self.per_client.pop(self._client_key, None)
            self._client_key = None
        super().connection_lost(exc)

    def _refuse(self, status: int, message: str) -> None:
        """Answer ``status`` with a JSON body and close; while a response is under way, just close."""
        if self.transport.is_closing():
            return
        if self.cycle is None or self.cycle.response_complete:
            self.transport.write(_json_response(status, message))
        self.transport.close()

    def send_400_response(self, msg: str) -> None:
        _bad_request(msg)
        self._refuse(400, "malformed HTTP request")

    # -- header size and deadline ------------------------------------------------------------------------------

    def data_received(self, data: bytes) -> None:
        if self._in_head:
            limit = self.limits.max_header_bytes
            if self._head_bytes + len(data) > limit:
                # Only acceptable if the headers end (CRLF CRLF, possibly split over the previous read) within the
                # limit: checked before parsing, since one read may hold a whole oversized request.
                window = self._tail + data
                end = window.find(b"\r\n\r\n")
                if end < 0 or self._head_bytes - len(self._tail) + end + 4 > limit:
                    _too_large(f"more than {limit} bytes")
                    self._refuse(431, "request header fields too large")
                    return
            self._head_bytes += len(data)
            self._tail = (self._tail + data)[-3:]
        super().data_received(data)

    def on_message_begin(self) -> None:
        self._message_begun = True
        super().on_message_begin()

    def on_headers_complete(self) -> None:
        self._in_head = False
        self._cancel_header_timer()
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        super().on_message_complete()
        self._in_head = True
        self._head_bytes = 0
        self._tail = b""
        self._message_begun = False

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if not self.transport.is_closing():
            self._arm_header_timer()

    def _arm_header_timer(self) -> None:
        self._cancel_header_timer()
        self._header_timer = self.loop.call_later(self.limits.header_timeout, self._header_deadline)

    def _cancel_header_timer(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None

    def _header_deadline(self) -> None:
        self._header_timer = None
        if self.transport.is_closing():
            return
        if self.cycle is not None and not self.cycle.response_complete:
            return  # a request is being served; the deadline is armed again when its response is complete
        if not self._in_head:
            # The body of a request answered early (413, 401, a malformed multipart body) is still arriving and
            # being discarded: that lasts at most one header deadline, then the connection is closed.
            self.transport.close()
        elif self._message_begun:
            _slow_headers(f"{self.limits.header_timeout:g} s")
            self._refuse(408, "request headers not received in time")
        else:
            self.transport.close()  # idle keep-alive connection

    # -- body idle timeout -------------------------------------------------------------------------------------

    def _start_asgi_task(self, cycle: RequestResponseCycle, app: Any) -> None:
        setattr(cycle, "receive", self._watched_receive(cycle, cycle.receive))  # noqa: B010 - replaces a method
        super()._start_asgi_task(cycle, app)

    def _watched_receive(
        self, cycle: RequestResponseCycle, receive: Callable[[], Awaitable[Any]]
    ) -> Callable[[], Awaitable[Any]]:
        """``receive`` with a timer that closes the connection if the application waits ``body_timeout`` seconds
        for body bytes that do not come."""

        async def watched() -> Any:
            timer = None
            if cycle.more_body and not cycle.body and not cycle.disconnected and not cycle.response_complete:
                timer = self.loop.call_later(self.limits.body_timeout, self._body_stalled, cycle)
            try:
                return await receive()
            finally:
                if timer is not None:
                    timer.cancel()

        return watched

    def _body_stalled(self, cycle: RequestResponseCycle) -> None:
        if cycle is self.cycle and not self.transport.is_closing():
            _stalled_body(f"no byte for {self.limits.body_timeout:g} s")
            self.transport.close()


def limited_protocol(limits: HttpLimits) -> type[LimitedHttpToolsProtocol]:
    """A protocol class for one server: ``limits`` and its own per-address connection counters."""
    return type("LimitedHttpToolsProtocol", (LimitedHttpToolsProtocol,), {"limits": limits, "per_client": {}})
