"""HTTP abuse against the real server (uvicorn with ``dicomweb.http_limits``), with raw sockets: slow and
oversized headers, stalled bodies, too many connections, STOW bodies over the upload limit, and where STOW parts
are spooled. Before issue #9, 500 half-sent requests all stayed open, a 1 MB header was accepted, and spooled parts
went to the system temporary folder."""

from __future__ import annotations

import json
import os
import socket
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from dicomvault.dicomweb.multipart import SPOOL_MAX
from dicomvault.settings import Settings
from tests.dicomweb.dw_live import DwServer
from tests.helpers import make_ct


def address(server: DwServer) -> tuple[str, int]:
    host, port = server.base_url.split("://", 1)[1].rsplit(":", 1)
    return host, int(port)


def connect(server: DwServer, timeout: float = 10) -> socket.socket:
    return socket.create_connection(address(server), timeout=timeout)


def read_until_closed(sock: socket.socket) -> bytes:
    """Everything the server sends until it closes (or resets) the connection; raises on the socket timeout."""
    out = bytearray()
    while True:
        try:
            chunk = sock.recv(65536)
        except ConnectionResetError:
            return bytes(out)
        if not chunk:
            return bytes(out)
        out += chunk


def status_and_json(raw: bytes) -> tuple[int, dict[str, object]]:
    head, _, body = raw.partition(b"\r\n\r\n")
    return int(head.split(b" ", 2)[1]), json.loads(body)


def test_slowloris_connections_are_closed_at_the_header_deadline(make_dw_server: Callable[..., DwServer]) -> None:
    server = make_dw_server(http_header_timeout=1.0, http_max_connections_per_client=1000)
    half_sent = []
    for i in range(300):
        s = connect(server)
        s.sendall(b"GET /dicom-web/studies HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: " + str(i).encode())
        half_sent.append(s)
    idle = [connect(server) for _ in range(20)]  # connected, never sent a byte
    trickle = connect(server)  # one byte every 50 ms for 6 s: well within any per-read timeout
    dripped: list[bool] = []

    def drip() -> None:
        try:
            for byte in b"GET /dicom-web/studies HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Drip: " + b"z" * 80:
                trickle.sendall(bytes([byte]))
                time.sleep(0.05)
            dripped.append(True)
        except OSError:
            pass  # closed by the server: what the test expects

    dripper = threading.Thread(target=drip, daemon=True)
    dripper.start()
    # Everyone else is served meanwhile.
    assert httpx.get(server.dicomweb_url + "/studies", timeout=5).status_code == 200
    try:
        for s in half_sent:
            raw = read_until_closed(s)
            assert status_and_json(raw) == (408, {"error": "request headers not received in time", "status": 408})
        for s in idle:
            assert read_until_closed(s) == b""  # an idle connection is closed without an answer
        assert read_until_closed(trickle).startswith(b"HTTP/1.1 408 ")
    finally:
        for s in [*half_sent, *idle, trickle]:
            s.close()
    dripper.join(10)
    # The deadline counts from the connection's start, not from the last byte: the trickle was cut off mid-way.
    assert not dripper.is_alive() and not dripped
    assert httpx.get(server.dicomweb_url + "/studies", timeout=5).status_code == 200


def test_keep_alive_connection_gets_a_new_header_deadline(make_dw_server: Callable[..., DwServer]) -> None:
    server = make_dw_server(http_header_timeout=1.0)
    with connect(server) as s:
        for _ in range(3):  # each request within the deadline, three deadlines in all
            time.sleep(0.6)
            s.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
            assert s.recv(65536).startswith(b"HTTP/1.1 200 ")
        s.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127")  # then a request that never completes
        assert read_until_closed(s).startswith(b"HTTP/1.1 408 ")


def test_oversized_headers_are_431(dw_server: DwServer) -> None:
    assert Settings.load().http_max_header_bytes == 64 * 1024
    with connect(dw_server) as s:
        s.sendall(b"GET /dicom-web/studies HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Big: " + b"a" * (1 << 20) + b"\r\n\r\n")
        assert status_and_json(read_until_closed(s)) == (431, {"error": "request header fields too large",
                                                               "status": 431})
    with connect(dw_server) as s:  # a long URL counts too
        s.sendall(b"GET /dicom-web/studies?PatientID=" + b"9" * 100_000 + b" HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        assert read_until_closed(s).startswith(b"HTTP/1.1 431 ")
    # Large but reasonable headers (a long bearer token, cookies) pass.
    r = httpx.get(dw_server.dicomweb_url + "/studies", headers={"X-Padding": "b" * 16_000})
    assert r.status_code == 200


def test_malformed_request_is_a_json_400(dw_server: DwServer) -> None:
    with connect(dw_server) as s:
        s.sendall(b"GET /dicom-web/studies HTTP/1.1\r\nHost: 127.0.0.1\r\nBad Header\r\n\r\n")
        assert status_and_json(read_until_closed(s)) == (400, {"error": "malformed HTTP request", "status": 400})


def test_stalled_body_is_dropped_and_a_slow_one_is_not(make_dw_server: Callable[..., DwServer]) -> None:
    server = make_dw_server(http_body_timeout=1.0)
    body = make_ct()
    head = (f"POST /dicom-web/studies HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/dicom\r\n"
            f"Content-Length: {len(body)}\r\n\r\n").encode()
    with connect(server) as s:
        s.sendall(head + body[:1000])  # then nothing
        started = time.monotonic()
        assert read_until_closed(s) == b""  # dropped, no answer
        assert time.monotonic() - started < 5
    # A body that keeps coming, a piece every half timeout, is read to its end.
    with connect(server) as s:
        s.sendall(head)
        step = len(body) // 4 + 1
        for i in range(0, len(body), step):
            time.sleep(0.5)
            s.sendall(body[i:i + step])
        raw = read_until_closed_or_response(s)
        assert raw.startswith(b"HTTP/1.1 200 ")
    assert httpx.get(server.dicomweb_url + "/studies").json()  # the slow one was stored


def read_until_closed_or_response(sock: socket.socket) -> bytes:
    """Read one complete response with a Content-Length (or until the connection closes)."""
    out = bytearray()
    while b"\r\n\r\n" not in out:
        chunk = sock.recv(65536)
        if not chunk:
            return bytes(out)
        out += chunk
    head, _, rest = bytes(out).partition(b"\r\n\r\n")
    length = next(int(line.split(b":")[1]) for line in head.split(b"\r\n")
                  if line.lower().startswith(b"content-length"))
    while len(rest) < length:
        chunk = sock.recv(65536)
        if not chunk:
            break
        rest += chunk
    return head + b"\r\n\r\n" + rest


def test_connection_caps(make_dw_server: Callable[..., DwServer]) -> None:
    server = make_dw_server(http_max_connections_per_client=4)
    held = [connect(server) for _ in range(4)]
    try:
        with connect(server) as extra:
            assert status_and_json(read_until_closed(extra)) == (503, {"error": "too many connections; retry later",
                                                                       "status": 503})
        held.pop().close()
        time.sleep(0.2)
        assert httpx.get(server.dicomweb_url + "/studies", headers={"Connection": "close"}).status_code == 200
    finally:
        for s in held:
            s.close()
    total = make_dw_server(http_max_connections=3, trusted_proxies=["127.0.0.1"], http_max_connections_per_client=1)
    held = [connect(total) for _ in range(3)]  # a trusted proxy is exempt from the per-client cap...
    try:
        with connect(total) as extra:  # ...not from the total
            assert read_until_closed(extra).startswith(b"HTTP/1.1 503 ")
    finally:
        for s in held:
            s.close()
    time.sleep(0.2)
    assert httpx.get(total.dicomweb_url + "/studies").status_code == 200


# -- STOW-RS body size and spooling ------------------------------------------------------------------------------


def multipart(parts: list[bytes]) -> tuple[bytes, str]:
    b = uuid.uuid4().hex
    body = b"".join(f"--{b}\r\nContent-Type: application/dicom\r\n\r\n".encode() + p + b"\r\n" for p in parts)
    return body + f"--{b}--\r\n".encode(), f'multipart/related; type="application/dicom"; boundary={b}'


def test_default_upload_limit_refuses_a_huge_declared_body_at_once(dw_server: DwServer) -> None:
    assert dw_server.settings.max_upload_bytes == 4 * 1024**3
    with connect(dw_server) as s:
        s.sendall(b"POST /dicom-web/studies HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/dicom\r\n"
                  b"Content-Length: 5368709120\r\n\r\n" + make_ct())
        raw = read_until_closed_or_response(s)
    assert status_and_json(raw) == (413, {"error": "request body exceeds the limit of 4294967296 bytes",
                                          "status": 413})


def test_configured_upload_limit_on_content_length_and_chunked(make_dw_server: Callable[..., DwServer]) -> None:
    server = make_dw_server(max_upload_bytes=200_000)
    body, ctype = multipart([make_ct(rows=256, columns=256, seed=n) for n in range(3)])  # ~390 KB
    r = httpx.post(server.dicomweb_url + "/studies", content=body, headers={"Content-Type": ctype})
    assert r.status_code == 413 and r.json()["status"] == 413

    def chunks(data: bytes) -> Iterator[bytes]:  # no Content-Length: counted while streaming
        for i in range(0, len(data), 8192):
            yield data[i:i + 8192]

    # One part larger than the limit (with several parts, those that arrive complete within the limit are stored
    # and the answer is a 202 with a Warning, depending on how the body is cut into reads).
    body, ctype = multipart([make_ct(rows=400, columns=400)])  # ~320 KB
    r = httpx.post(server.dicomweb_url + "/studies", content=chunks(body), headers={"Content-Type": ctype})
    assert r.status_code == 413 and r.json()["error"] == "request body exceeds the limit of 200000 bytes"
    single = make_ct(rows=400, columns=400)
    r = httpx.post(server.dicomweb_url + "/studies", content=chunks(single),
                   headers={"Content-Type": "application/dicom"})
    assert r.status_code == 413
    assert len(httpx.get(server.dicomweb_url + "/studies").json()) == 0  # nothing stored
    # The same connection pool goes on working; a body within the limit is stored.
    assert httpx.post(server.dicomweb_url + "/studies", content=make_ct(),
                      headers={"Content-Type": "application/dicom"}).status_code == 200


def _open_files() -> list[Path]:
    out = []
    for fd in os.listdir("/proc/self/fd"):
        try:
            out.append(Path(os.readlink(f"/proc/self/fd/{fd}").removesuffix(" (deleted)")))
        except OSError:
            continue
    return out


@pytest.mark.skipif(not Path("/proc/self/fd").is_dir(), reason="needs /proc to see the server's open files")
def test_large_parts_spool_to_the_data_folder(dw_server: DwServer) -> None:
    spool = dw_server.settings.data_dir / "spool"
    assert spool.is_dir()  # created at start
    system_tmp = Path(tempfile.gettempdir())
    before = {p for p in _open_files() if p.parent == system_tmp}
    seen: dict[str, list[Path]] = {}
    payload = os.urandom(SPOOL_MAX + (1 << 20))  # past the in-memory spool: the part goes to a file
    boundary = uuid.uuid4().hex

    def body() -> Iterator[bytes]:
        yield f"--{boundary}\r\nContent-Type: application/dicom\r\n\r\n".encode()
        for i in range(0, len(payload), 1 << 20):
            yield payload[i:i + (1 << 20)]
        # The part is not finished yet: the server holds it in its spool file now (the server runs in this
        # process, so its open files are ours).
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            files = _open_files()
            seen["spool"] = [p for p in files if p.parent == spool]
            seen["tmp"] = [p for p in files if p.parent == system_tmp and p not in before]
            if seen["spool"]:
                break
            time.sleep(0.05)
        yield f"\r\n--{boundary}--\r\n".encode()

    r = httpx.post(dw_server.dicomweb_url + "/studies", content=body(), timeout=60,
                   headers={"Content-Type": f'multipart/related; type="application/dicom"; boundary={boundary}'})
    assert r.status_code == 409  # random bytes are not DICOM; what matters is where they waited
    assert seen["spool"], "no spool file under data_dir/spool during the upload"
    assert not seen["tmp"], seen["tmp"]
    assert list(spool.iterdir()) == []  # unnamed files: nothing left behind
