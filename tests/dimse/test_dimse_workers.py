"""``serve --dimse-workers N``: worker processes accepting on the serve process's DIMSE port (cli/dimse_workers.py).

Real processes throughout. Which process accepts a connection is the kernel's choice, so to prove that a worker
serves, the serve process is frozen (SIGSTOP): it then accepts nothing, and every association it would have taken
waits in the listen backlog for the worker. What a worker stores is then found through the serve process's
DICOMweb API (one index, several writers).
"""

from __future__ import annotations

import io
import os
import signal
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pydicom
import pytest
from pydicom.uid import generate_uid
from pynetdicom import AE
from pynetdicom.sop_class import CTImageStorage, Verification  # type: ignore[attr-defined]

from dicomvault.dimse.connections import Limits, per_process
from dicomvault.settings import MAX_DIMSE_WORKERS, Settings
from tests.cli.cli_helpers import ServeProcess
from tests.helpers import make_ct

pytestmark = pytest.mark.skipif(not Path("/proc/self/task").is_dir(), reason="reads children from Linux /proc")


def children(pid: int) -> list[int]:
    """Live (not zombie) child processes of ``pid``."""
    found: list[int] = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            found += [int(c) for c in (task / "children").read_text().split()]
        except OSError:
            continue
    return [c for c in found if alive(c)]


def alive(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie, ended but not yet reaped, does not count)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"


def workers_of(server: ServeProcess) -> list[int]:
    """The serve process's DIMSE worker children: an argument *equal* to ``dimse-worker`` (a child forked but not yet
    exec'd still shows serve's own command line, whose ``--dimse-workers`` option merely contains the word)."""
    out = []
    for c in children(server.proc.pid):
        try:
            args = Path(f"/proc/{c}/cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if b"dimse-worker" in args:
            out.append(c)
    return out


def wait_for(condition: object, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if callable(condition) and condition():
            return
        time.sleep(0.05)
    raise AssertionError("condition not met in time")


@contextmanager
def frozen(server: ServeProcess) -> Iterator[None]:
    """The serve process stopped (SIGSTOP): only worker processes accept DIMSE connections meanwhile."""
    server.proc.send_signal(signal.SIGSTOP)
    try:
        yield
    finally:
        server.proc.send_signal(signal.SIGCONT)


def echo(port: int) -> int:
    ae = AE(ae_title="ECHOSCU")
    # a worker that is still starting takes the association from the backlog when ready (on a loaded 2-core CI
    # machine a restarted worker took over 20 s to import and build its archive)
    ae.acse_timeout = 60
    ae.add_requested_context(Verification)
    assoc = ae.associate("127.0.0.1", port, ae_title="DVTEST")
    assert assoc.is_established
    status = int(assoc.send_c_echo().Status)
    assoc.release()
    return status


def store_parallel(port: int, objects: list[bytes], associations: int) -> None:
    """Send ``objects`` over ``associations`` associations at once; every C-STORE must succeed."""
    failures: list[str] = []

    def send(part: list[bytes]) -> None:
        ae = AE(ae_title="STORESCU")
        ae.acse_timeout = 20
        ae.add_requested_context(CTImageStorage)
        assoc = ae.associate("127.0.0.1", port, ae_title="DVTEST")
        if not assoc.is_established:
            failures.append("association refused")
            return
        for data in part:
            status = assoc.send_c_store(pydicom.dcmread(io.BytesIO(data)))
            if int(getattr(status, "Status", -1)) != 0:
                failures.append(f"status {getattr(status, 'Status', None)}")
        assoc.release()

    threads = [threading.Thread(target=send, args=(objects[i::associations],)) for i in range(associations)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not failures


def stopped_cleanly(server: ServeProcess, pids: list[int]) -> None:
    server.proc.send_signal(signal.SIGTERM)
    assert server.proc.wait(30) == 0
    assert not [p for p in pids if alive(p)], "a DIMSE worker process outlived the serve process"


def test_per_process_limits_divide_the_totals() -> None:
    s = Settings(max_associations=64, dimse_max_connections_per_address=32)
    assert Limits.from_settings(s) == Limits.from_settings(s, 1)
    halves = Limits.from_settings(s, 2)
    assert (halves.max_connections, halves.max_per_address) == (48, 16)
    assert per_process(3, 4) == 1  # every process still admits someone
    assert Settings(dimse_workers=3).resolved_dimse_workers == 3
    assert Settings(dimse_workers=0).resolved_dimse_workers == min(os.cpu_count() or 1, MAX_DIMSE_WORKERS)
    with pytest.raises(ValueError):
        Settings(dimse_workers=MAX_DIMSE_WORKERS + 1)


def test_dimse_workers_serve_one_port_store_and_stop_together(tmp_path: Path) -> None:
    server = ServeProcess(tmp_path / "vault", tmp_path / "serve.log", "--dimse-workers", "2")
    try:
        server.wait_ready()
        wait_for(lambda: len(workers_of(server)) == 1)
        [worker] = workers_of(server)

        study = generate_uid()
        by_worker = [make_ct(study=study, seed=i) for i in range(8)]
        with frozen(server):  # only the worker accepts: it receives, stores and indexes these on its own
            assert echo(server.dimse_port) == 0
            store_parallel(server.dimse_port, by_worker, associations=4)
        anywhere = [make_ct(study=study, seed=100 + i) for i in range(8)]
        store_parallel(server.dimse_port, anywhere, associations=4)

        found = httpx.get(f"{server.base_url}/dicom-web/studies/{study}/instances", timeout=10)
        assert found.status_code == 200
        sops = {row["00080018"]["Value"][0] for row in found.json()}
        expected = {str(pydicom.dcmread(io.BytesIO(d)).SOPInstanceUID) for d in by_worker + anywhere}
        assert sops == expected
        for data in by_worker[:2] + anywhere[:2]:
            ds = pydicom.dcmread(io.BytesIO(data))
            got = httpx.get(f"{server.base_url}/dicom-web/studies/{study}/series/{ds.SeriesInstanceUID}/instances/"
                            f"{ds.SOPInstanceUID}", headers={"Accept": 'multipart/related; type="application/dicom"'},
                            timeout=10)
            assert got.status_code == 200 and str(ds.SOPInstanceUID).encode() in got.content

        stopped_cleanly(server, [worker])
    finally:
        server.stop()


def test_a_killed_dimse_worker_is_restarted(tmp_path: Path) -> None:
    server = ServeProcess(tmp_path / "vault", tmp_path / "serve.log", "--dimse-workers", "2")
    try:
        server.wait_ready()
        wait_for(lambda: len(workers_of(server)) == 1)
        [first] = workers_of(server)
        os.kill(first, signal.SIGKILL)
        seen: list[int] = []

        def replaced() -> bool:  # one read of /proc per check: the list may change between two reads
            seen[:] = workers_of(server)
            return len(seen) == 1 and seen != [first]

        wait_for(replaced, timeout=60)
        [second] = seen
        server.log.flush()
        assert f"(pid {first}) ended unexpectedly (killed by SIGKILL)" in server.log_path.read_text()
        with frozen(server):  # the replacement accepts on the same socket
            assert echo(server.dimse_port) == 0
        assert echo(server.dimse_port) == 0
        stopped_cleanly(server, [first, second])
    finally:
        server.stop()


def test_dimse_workers_end_when_the_serve_process_dies(tmp_path: Path) -> None:
    server = ServeProcess(tmp_path / "vault", tmp_path / "serve.log", "--dimse-workers", "2")
    try:
        server.wait_ready()
        wait_for(lambda: len(workers_of(server)) == 1)
        [worker] = workers_of(server)
        server.proc.kill()  # no chance to stop its children: their stdin pipe's end-of-file does
        server.proc.wait(10)
        wait_for(lambda: not alive(worker))
    finally:
        server.stop()
