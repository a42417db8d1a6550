"""Connection exhaustion, timers, junk and stop on the DIMSE port (issue #9), on both receive paths.

Raw sockets play the abusive peers (silent, trickling, oversized, junk); dcmtk and pynetdicom play the legitimate
ones that must still be served. Every blocking call has a timeout so that a regression fails instead of hanging.
The lean storage path serves associations proposing storage only; ``query=True`` (a FIND context) or
``dimse_fast_store=False`` sends them to pynetdicom.
"""

from __future__ import annotations

import datetime
import io
import ipaddress
import logging
import os
import socket
import ssl
import struct
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pydicom
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from pydicom.uid import generate_uid
from pynetdicom import AE
from pynetdicom.sop_class import Verification  # type: ignore[attr-defined]

from tests.conftest import free_port
from tests.dimse.conftest import Running, dataset_bytes, run, start
from tests.dimse.raw_peer import Raw
from tests.helpers import make_ct

#: The paths an association can take: (settings, whether Raw proposes a FIND context).
PATHS = {
    "lean": ({}, False),
    "pynetdicom": ({}, True),
    "fast-store-off": ({"dimse_fast_store": False}, False),
}


@pytest.fixture(params=sorted(PATHS))
def path(request: pytest.FixtureRequest) -> tuple[dict[str, object], bool]:
    return PATHS[request.param]


def _start(tmp_path: Path, **settings: object) -> Running:
    return start(tmp_path, **settings)


@pytest.fixture
def stopper() -> Iterator[list[Running]]:
    """Servers to stop at teardown (stop bounded by a short grace, so a failing test cannot hang there)."""
    started: list[Running] = []
    yield started
    for running in started:
        running.server.stop(grace=0.5)
        running.archive.close()


def _echo(running: Running) -> None:
    r = run(["echoscu", "-to", "10", "-aec", "DICOMVAULT", "127.0.0.1", str(running.port)], timeout=30)
    assert r.returncode == 0, r.stderr


def _pynetdicom_echo(running: Running, source: str = "127.0.0.1") -> None:
    ae = AE(ae_title="LEGIT")
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 10
    ae.add_requested_context(Verification)
    assoc = ae.associate("127.0.0.1", running.port, ae_title="DICOMVAULT", bind_address=(source, 0))
    assert assoc.is_established
    assert assoc.send_c_echo().Status == 0x0000
    assoc.release()


def _closed_within(sock: socket.socket, seconds: float) -> bool:
    """True if the server closes (or resets) the connection within ``seconds``, whatever it sends first."""
    sock.settimeout(0.2)
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            if sock.recv(65536) == b"":
                return True
        except TimeoutError:
            continue
        except OSError:
            return True
    return False


def _settled(running: Running, open_connections: int = 0, timeout: float = 5.0) -> None:
    """Wait until the server holds at most ``open_connections`` (its threads finish just after a close)."""
    deadline = time.monotonic() + timeout
    while len(running.server.gate) > open_connections and time.monotonic() < deadline:
        time.sleep(0.02)
    assert len(running.server.gate) <= open_connections


def _rss() -> int:
    """Resident memory of this process (the in-process server's), in bytes."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


# -- the connection gate ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("fast", [True, False], ids=["fast-store", "fast-store-off"])
def test_silent_sockets_get_no_thread_beyond_the_cap(tmp_path: Path, stopper: list[Running], fast: bool) -> None:
    """300 silent connections from one address: past the per-address cap each is closed at once, no thread is
    started for it, and peers from other addresses (echoscu, pynetdicom) are served meanwhile."""
    running = _start(tmp_path, dimse_fast_store=fast, dimse_max_connections_per_address=16, dimse_artim_timeout=60.0)
    stopper.append(running)
    _echo(running)
    time.sleep(0.2)
    before = threading.active_count()
    silent: list[socket.socket] = []
    try:
        for _ in range(300):
            s = socket.socket()
            s.settimeout(10)
            s.bind(("127.0.0.2", 0))
            s.connect(("127.0.0.1", running.port))
            silent.append(s)
        # everything past the first 16 is closed by the server at once
        assert all(_closed_within(s, 5) for s in silent[16:])
        assert threading.active_count() - before <= 16 + 4, threading.active_count() - before
        _echo(running)  # dcmtk, from 127.0.0.1
        _pynetdicom_echo(running)
        assert not _closed_within(silent[0], 0.2)  # the admitted ones wait for their ARTIM (10 s)
    finally:
        for s in silent:
            s.close()


def test_total_cap_counts_every_address(tmp_path: Path, stopper: list[Running]) -> None:
    running = _start(tmp_path, dimse_max_connections=6, dimse_max_connections_per_address=3)
    stopper.append(running)
    held = []
    try:
        for source in ("127.0.0.2", "127.0.0.3"):
            for _ in range(3):
                held.append(socket.create_connection(("127.0.0.1", running.port), timeout=10,
                                                     source_address=(source, 0)))
        time.sleep(0.2)
        extra = socket.create_connection(("127.0.0.1", running.port), timeout=10, source_address=("127.0.0.4", 0))
        assert _closed_within(extra, 5)
        extra.close()
        held.pop().close()
        time.sleep(0.3)
        _pynetdicom_echo(running, source="127.0.0.5")
    finally:
        for s in held:
            s.close()


# -- establishment (ARTIM) -------------------------------------------------------------------------------------


@pytest.mark.parametrize("trickle", [False, True], ids=["truncated", "trickling"])
def test_incomplete_associate_request_is_closed_at_artim(tmp_path: Path, stopper: list[Running], path: tuple[
        dict[str, object], bool], trickle: bool) -> None:
    """An A-ASSOCIATE-RQ whose header announces more than arrives (the socket staying open), or one sent a byte at
    a time: closed when ARTIM expires, counted from the accept (bytes trickling in do not extend it)."""
    settings, query = path
    running = _start(tmp_path, dimse_artim_timeout=1.0, **settings)
    stopper.append(running)
    with Raw(running.port, query=query) as raw:
        request = raw.request()
        started = time.monotonic()
        if trickle:
            raw.sock.settimeout(0.2)
            closed = False
            for byte in request[:40]:
                try:
                    raw.sock.send(bytes([byte]))
                    if raw.sock.recv(1) == b"":
                        closed = True
                        break
                except TimeoutError:
                    continue
                except OSError:
                    closed = True
                    break
            assert closed, "still open after 40 trickled bytes (8 s)"
        else:
            raw.sock.sendall(request[: len(request) // 2])
            assert _closed_within(raw.sock, 5)
        assert time.monotonic() - started < 5
    _echo(running)


def test_oversized_associate_request_is_aborted_unread(tmp_path: Path, stopper: list[Running]) -> None:
    """A header announcing 0xFFFFFFFF bytes: A-ABORT at once, nothing buffered (pynetdicom used to buffer every
    byte sent: +32 MiB for 32 MiB)."""
    for settings in ({}, {"dimse_fast_store": False}):
        running = _start(tmp_path / str(len(stopper)), **settings)
        stopper.append(running)
        rss = _rss()
        sent = 0
        with socket.create_connection(("127.0.0.1", running.port), timeout=10) as sock:
            chunk = bytes(1024 * 1024)
            try:
                sock.sendall(struct.pack(">BxI", 0x01, 0xFFFFFFFF))
                while sent < 64 * 1024 * 1024:
                    sock.sendall(chunk)
                    sent += len(chunk)
            except OSError:
                pass  # the server closed the connection: what we want
            assert sent < 32 * 1024 * 1024, "the server kept reading"
        assert _rss() - rss < 16 * 1024 * 1024, (_rss() - rss) // (1024 * 1024)
        _echo(running)


# -- established associations: idle timeout and per-PDU deadline ----------------------------------------------


def test_idle_associations_are_aborted_and_new_peers_served(tmp_path: Path, stopper: list[Running], path: tuple[
        dict[str, object], bool]) -> None:
    """Idle associations from one AE title fill ``max_associations`` (64 on the lean path; 24 through pynetdicom,
    which needs ~70 ms to set each one up on a loaded machine); one more is refused ("local limit exceeded");
    after the idle timeout every idle one gets an A-ABORT and a new peer is served."""
    settings, query = path
    count = 24 if query or settings else 64
    running = _start(tmp_path, dimse_idle_timeout=4.0, max_associations=count,
                     dimse_max_connections_per_address=count + 8, **settings)
    stopper.append(running)
    idle: list[Raw] = []
    try:
        for _ in range(count):
            idle.append(Raw(running.port, aet="IDLER", query=query))
            idle[-1].associate()
        with Raw(running.port, query=query) as late:
            rj = late.associate(expect=0x03)
            assert tuple(rj[1:4]) == (0x02, 0x03, 0x02)
        started = time.monotonic()
        for raw in idle:
            raw.sock.settimeout(10)
            assert raw.closed_after_abort()
        assert time.monotonic() - started < 8
        _settled(running)
        _echo(running)
    finally:
        for raw in idle:
            raw.sock.close()


def test_trickling_peer_cannot_hold_a_pdu_open(tmp_path: Path, stopper: list[Running], path: tuple[
        dict[str, object], bool]) -> None:
    """A P-DATA-TF whose bytes arrive one every 0.3 s: aborted ``dimse_timeout`` after its first byte, although
    every read returns within a per-read timeout."""
    settings, query = path
    running = _start(tmp_path, dimse_timeout=1.5, **settings)
    stopper.append(running)
    with Raw(running.port, query=query) as raw:
        raw.associate()
        pdu = raw.store_command(generate_uid())
        started = time.monotonic()
        raw.sock.settimeout(0.3)
        aborted = False
        for byte in pdu:
            try:
                raw.sock.send(bytes([byte]))
                answer = raw.sock.recv(16)
            except TimeoutError:
                continue
            except OSError:
                aborted = True
                break
            aborted = answer[:1] in (b"\x07", b"")
            break
        assert aborted, "still open after the whole PDU trickled in"
        assert time.monotonic() - started < 6
    _echo(running)


# -- junk on the port ------------------------------------------------------------------------------------------


JUNK = {
    "random": bytes([0x5A, 0x17, 0xC3]) + os.urandom(509),
    "http": b"GET / HTTP/1.1\r\nHost: archive\r\nUser-Agent: curl/8\r\n\r\n",
    "tls-client-hello": bytes.fromhex("16030100a5010000a10303") + os.urandom(32) + bytes(134),
    "undecodable-request": struct.pack(">BxI", 0x01, 200) + b"\xff" * 200,
    "unknown-pdu": struct.pack(">BxI", 0x09, 4) + bytes(4),
}


@pytest.mark.parametrize("junk", sorted(JUNK))
@pytest.mark.parametrize("fast", [True, False], ids=["fast-store", "fast-store-off"])
def test_junk_is_one_warning_line(tmp_path: Path, stopper: list[Running], caplog: pytest.LogCaptureFixture,
                                  junk: str, fast: bool) -> None:
    running = _start(tmp_path, dimse_fast_store=fast)
    stopper.append(running)
    caplog.set_level(logging.INFO)
    with socket.create_connection(("127.0.0.1", running.port), timeout=10) as sock:
        sock.sendall(JUNK[junk])
        assert _closed_within(sock, 5)
    _echo(running)
    time.sleep(0.3)
    loud = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(loud) == 1, [f"{r.name}: {r.getMessage()}" for r in loud]
    assert loud[0].name.startswith("dicomvault") and "127.0.0.1" in loud[0].getMessage()
    assert not [r for r in caplog.records if r.exc_info and r.levelno > logging.DEBUG]


def test_health_check_connect_is_not_logged(tmp_path: Path, stopper: list[Running],
                                            caplog: pytest.LogCaptureFixture) -> None:
    """A load balancer's TCP check (connect, close) is not a fault: nothing above DEBUG."""
    running = _start(tmp_path)
    stopper.append(running)
    caplog.set_level(logging.INFO)
    for _ in range(5):
        socket.create_connection(("127.0.0.1", running.port), timeout=10).close()
    time.sleep(0.3)
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.INFO and "DIMSE" in r.getMessage()
            and "listening" not in r.getMessage()] == []


# -- a TLS listener behind the same gate ------------------------------------------------------------------------


def _tls_contexts(folder: Path) -> tuple[ssl.SSLContext, ssl.SSLContext]:
    """(server, client) contexts around a self-signed certificate for 127.0.0.1."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "dicomvault-test")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(hours=1))
            .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                           critical=False)
            .sign(key, hashes.SHA256()))
    cert_path, key_path = folder / "cert.pem", folder / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server.load_cert_chain(cert_path, key_path)
    client = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=str(cert_path))
    return server, client


def test_tls_listener_shares_the_gate_and_never_handshakes_in_the_accept_loop(
        tmp_path: Path, stopper: list[Running], caplog: pytest.LogCaptureFixture) -> None:
    """A TLS client that connects and never says hello used to stop every accept (pynetdicom completes the
    handshake in the accept loop); here it waits in its own thread until ARTIM, the caps count TLS connections
    with the plain ones, and plain DICOM on the TLS port is one WARNING line."""
    running = _start(tmp_path, dimse_artim_timeout=1.5, dimse_max_connections_per_address=3)
    stopper.append(running)
    server_context, client_context = _tls_contexts(tmp_path)
    tls_port = free_port()
    running.server.listen("127.0.0.1", tls_port, server_context)
    caplog.set_level(logging.INFO)
    mute = socket.create_connection(("127.0.0.1", tls_port), timeout=10, source_address=("127.0.0.2", 0))
    try:
        ae = AE(ae_title="TLSSCU")
        ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 10
        ae.add_requested_context(Verification)
        assoc = ae.associate("127.0.0.1", tls_port, ae_title="DICOMVAULT", tls_args=(client_context, "127.0.0.1"))
        assert assoc.is_established and assoc.send_c_echo().Status == 0x0000
        assoc.release()
        assert _closed_within(mute, 5)  # no handshake within ARTIM
        socket.create_connection(("127.0.0.1", tls_port), timeout=10).close()  # a health check: not a WARNING
        with Raw(tls_port) as plain:  # a DICOM peer without TLS on the TLS port
            plain.sock.sendall(plain.request())
            assert _closed_within(plain.sock, 5)
        held = [socket.create_connection(("127.0.0.1", running.port), timeout=10, source_address=("127.0.0.3", 0))
                for _ in range(3)]
        try:
            time.sleep(0.2)
            over = socket.create_connection(("127.0.0.1", tls_port), timeout=10, source_address=("127.0.0.3", 0))
            assert _closed_within(over, 2)  # the plain listener's connections count for the TLS one too
            over.close()
        finally:
            for s in held:
                s.close()
    finally:
        mute.close()
    loud = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(loud) == 1 and "TLS handshake failed" in loud[0], loud


# -- stop -------------------------------------------------------------------------------------------------------


def test_stop_closes_idle_connections_at_once_and_finishes_a_store_in_flight(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    running = _start(tmp_path, dimse_shutdown_grace=10.0)
    caplog.set_level(logging.INFO)
    silent = socket.create_connection(("127.0.0.1", running.port), timeout=10)
    idle_lean, idle_pynetdicom, storing = Raw(running.port), Raw(running.port, query=True), Raw(running.port)
    try:
        idle_lean.associate()
        idle_pynetdicom.associate()
        storing.associate()
        uid = generate_uid()
        data = dataset_bytes(make_ct(sop=uid, rows=64, columns=64, PatientName="Secret^Patient"))
        pdus = storing.data_pdus(data, 4000)
        half = len(pdus) // 2 // 4012 * 4012
        storing.sock.sendall(storing.store_command(uid) + pdus[:half])
        time.sleep(0.3)
        stopped = threading.Event()
        stopping = threading.Thread(target=lambda: (running.server.stop(), stopped.set()), daemon=True)
        started = time.monotonic()
        stopping.start()
        assert _closed_within(silent, 2)
        idle_lean.sock.settimeout(2)
        idle_pynetdicom.sock.settimeout(2)
        assert idle_lean.closed_after_abort() and idle_pynetdicom.closed_after_abort()
        assert time.monotonic() - started < 2
        assert not stopped.wait(0.5)  # the store in flight holds the stop
        storing.sock.sendall(pdus[half:])
        pdu_type, body = storing.read_pdu()
        assert pdu_type == 0x04  # the C-STORE response: stored and acknowledged
        assert pydicom.filereader.read_dataset(io.BytesIO(body[6:]), True, True).Status == 0x0000
        assert storing.closed_after_abort()  # then the association ends
        assert stopped.wait(5)
        assert running.archive.index.stats().instances == 1
    finally:
        for s in (silent, idle_lean.sock, idle_pynetdicom.sock, storing.sock):
            s.close()
        running.server.stop(grace=0)
        running.archive.close()
    waited = [r.getMessage() for r in caplog.records if "waiting up to" in r.getMessage()]
    assert len(waited) == 1 and "RAW@127.0.0.1 (receiving)" in waited[0], waited
    assert "Secret" not in caplog.text


def test_stop_aborts_a_store_that_outlasts_the_grace(tmp_path: Path) -> None:
    running = _start(tmp_path, dimse_shutdown_grace=0.5)
    try:
        with Raw(running.port) as raw:
            raw.associate()
            data = dataset_bytes(make_ct(rows=64, columns=64))
            raw.sock.sendall(raw.store_command(generate_uid()) + raw.data_pdus(data, 4000)[:4012])
            time.sleep(0.3)
            stopped = threading.Event()
            threading.Thread(target=lambda: (running.server.stop(), stopped.set()), daemon=True).start()
            assert stopped.wait(3)
            assert _closed_within(raw.sock, 2)
        assert running.archive.index.stats().instances == 0
    finally:
        running.archive.close()
