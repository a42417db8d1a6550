"""The guarded pynetdicom path under garbage that arrives right behind a valid A-ASSOCIATE-RQ (issue #9, found
by the abuse campaign's garbage-PDU fuzzing): the DUL aborts while the association's own thread is still answering
the request, and pynetdicom used to raise ``InvalidEventError`` in its DUL thread — an uncaught exception and a
traceback on stderr per such connection."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from dicomvault.dimse.pynetdicom_guard import GuardedStateMachine
from tests.dimse.conftest import run, start
from tests.dimse.raw_peer import Raw

ROUNDS = 10


@pytest.fixture
def thread_errors() -> Iterator[list[str]]:
    """Uncaught exceptions of any thread while the test runs (as ``threading.excepthook`` sees them)."""
    seen: list[str] = []
    previous = threading.excepthook

    def hook(args: threading.ExceptHookArgs) -> None:
        seen.append(f"{args.exc_type.__name__}: {args.exc_value}")

    threading.excepthook = hook
    try:
        yield seen
    finally:
        threading.excepthook = previous


def test_garbage_right_behind_the_request_ends_the_connection_without_a_thread_error(
    tmp_path: Path, thread_errors: list[str],
) -> None:
    running = start(tmp_path)
    try:
        for i in range(ROUNDS):
            with Raw(running.port, query=True) as raw:  # a FIND context: pynetdicom serves the association
                # a P-DATA-TF or an A-RELEASE-RQ where the A-ASSOCIATE-AC is awaited: the DUL aborts (Sta13)
                early = (b"\x04\x00\x00\x00\x00\x06\x00\x00\x00\x02\x01\x03" if i % 2
                         else b"\x05\x00\x00\x00\x00\x04\x00\x00\x00\x00")
                raw.sock.sendall(raw.request() + early)
                raw.sock.settimeout(10)
                try:  # as a real peer: read until the A-ABORT (or the close), then close
                    while raw.read_pdu()[0] not in (0x00, 0x07):
                        pass
                except OSError:
                    pass
        r = run(["echoscu", "-to", "10", "-aec", "DICOMVAULT", "127.0.0.1", str(running.port)], timeout=30)
        assert r.returncode == 0, r.stderr
    finally:
        running.server.stop(grace=0.5)
        running.archive.close()
    assert thread_errors == []


class _Dul:
    pass


def test_only_closing_states_ignore_events_without_a_transition() -> None:
    machine = GuardedStateMachine(_Dul())  # type: ignore[arg-type]
    machine.current_state = "Sta13"
    machine.do_action("Evt7")  # A-ASSOCIATE response while awaiting the transport close: ignored
    assert machine.current_state == "Sta13"
    machine.current_state = "Sta6"
    with pytest.raises(Exception, match="Invalid event 'Evt7'"):
        machine.do_action("Evt7")
