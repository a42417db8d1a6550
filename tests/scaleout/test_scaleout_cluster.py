"""Cluster behaviour over real HTTP: two archive nodes (separate processes) on one PostgreSQL database and one
shared blob folder, and one node (DICOMweb + DIMSE) riding out a PostgreSQL restart under load."""

from __future__ import annotations

import io
import random
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pydicom
import pytest
import uvicorn
from pydicom.uid import generate_uid
from pynetdicom import AE
from pynetdicom.sop_class import CTImageStorage  # type: ignore[attr-defined]

from dicomvault.bootstrap import build_archive
from dicomvault.dicomweb.app import create_app
from dicomvault.dimse.server import DimseServer
from dicomvault.domain.errors import Unavailable
from dicomvault.jobs.worker import start_worker
from dicomvault.ports.jobs import JobState
from dicomvault.settings import Settings
from tests.helpers import make_ct
from tests.pg_fixture import PgServer, wait_until

BASE = "/dicom-web"


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def stow(client: httpx.Client, objects: list[bytes]) -> httpx.Response:
    boundary = uuid.uuid4().hex
    body = b"".join(b"--" + boundary.encode() + b"\r\nContent-Type: application/dicom\r\n\r\n" + o + b"\r\n"
                    for o in objects) + b"--" + boundary.encode() + b"--\r\n"
    return client.post(f"{BASE}/studies", content=body, headers={
        "Content-Type": f'multipart/related; type="application/dicom"; boundary={boundary}',
        "Accept": "application/dicom+json"})


_NODE = """
import sys, uvicorn
from dicomvault.bootstrap import build_archive
from dicomvault.dicomweb.app import create_app
from dicomvault.dimse.server import DimseServer
from dicomvault.jobs.worker import start_worker
from dicomvault.settings import Settings
data_dir, index_url, storage_url, port, name = sys.argv[1:6]
archive = build_archive(Settings.load(data_dir=data_dir, index_url=index_url, storage_url=storage_url,
                                      http_port=int(port), index_pool_size=4,
                                      anonymous_scopes=["read", "write", "delete"]))
worker = start_worker(archive, poll_interval=0.05, worker_id=name)
uvicorn.run(create_app(archive), host="127.0.0.1", port=int(port), log_level="warning")
worker.stop()
archive.close()
"""


@pytest.fixture
def two_nodes(tmp_path: Path, pg_url: str) -> Iterator[tuple[list[str], str, str]]:
    blob_url = f"file://{tmp_path / 'shared-blobs'}"
    # No schema yet: both nodes migrate the empty database at the same time (serialised by an advisory lock).
    ports = [_free_port(), _free_port()]
    procs = [subprocess.Popen([sys.executable, "-c", _NODE, str(tmp_path / f"node{n}"), pg_url, blob_url,
                               str(port), f"node{n}"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
             for n, port in enumerate(ports)]
    urls = [f"http://127.0.0.1:{p}" for p in ports]
    try:
        for url in urls:
            assert wait_until(lambda url=url: _answers(url), timeout=30), "node did not start"
        yield urls, pg_url, blob_url
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            try:
                p.wait(15)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()


def _answers(url: str) -> bool:
    try:
        return httpx.get(f"{url}/healthz", timeout=1).status_code == 200
    except httpx.HTTPError:
        return False


def test_two_nodes_stow_overlapping_studies_and_share_jobs(
    two_nodes: tuple[list[str], str, str], tmp_path: Path
) -> None:
    urls, pg_url, blob_url = two_nodes
    studies = [generate_uid() for _ in range(3)]
    objects = []
    for s, study in enumerate(studies):
        for k in range(3):
            series = generate_uid()
            objects += [make_ct(study=study, series=series, PatientID=f"CL-{s}", Modality=("CT", "MR", "US")[k],
                                SeriesNumber=k + 1, InstanceNumber=i + 1, seed=i, rows=8, columns=8)
                        for i in range(4)]
    failures: list[str] = []

    def client_run(url: str, seed: int) -> None:
        order = objects[:]
        random.Random(seed).shuffle(order)
        with httpx.Client(base_url=url, timeout=60) as c:
            for i in range(0, len(order), 6):
                r = stow(c, order[i:i + 6])
                if r.status_code != 200:
                    failures.append(f"{url} {r.status_code} {r.text[:300]}")

    threads = [threading.Thread(target=client_run, args=(urls[n % 2], n)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not failures, failures[:3]
    for url in urls:  # either node sees everything, with exact counters
        found = httpx.get(f"{url}{BASE}/studies", params={"includefield": "all"}, timeout=30).json()
        assert sorted(s["0020000D"]["Value"][0] for s in found) == sorted(studies)
        for s in found:
            assert s["00201206"]["Value"] == [3] and s["00201208"]["Value"] == [12]
            assert sorted(s["00080061"]["Value"]) == ["CT", "MR", "US"]
        series = httpx.get(f"{url}{BASE}/studies/{studies[0]}/series", timeout=30).json()
        assert len(series) == 3 and all(x["00201209"]["Value"] == [4] for x in series)

    # Both nodes run a job worker on the shared queue: every job runs once, the work is shared.
    archive = build_archive(Settings.load(data_dir=tmp_path / "ops", index_url=pg_url, storage_url=blob_url))
    try:
        assert archive.jobs is not None
        sops = [sop for sop, _ in archive.index.iter_blob_refs()]
        assert len(sops) == len(objects)
        ids = [archive.jobs.enqueue("fixity", {"sop_uid": sop}) for sop in sops]
        assert wait_until(lambda: all(archive.jobs.get(j).state == JobState.DONE for j in ids),  # type: ignore[union-attr]
                          timeout=60)
        done = [archive.jobs.get(j) for j in ids]
        assert all(j.attempts == 1 and j.result == {"checked": 1, "corrupt": [], "missing_blob": [],
                                                     "not_indexed": []} for j in done)
        assert {j.worker_id for j in done} <= {"node0", "node1"}
    finally:
        archive.close()


class _HttpNode:
    """One archive node (DICOMweb by uvicorn in a thread, DIMSE server) inside this process, so the test can
    watch its errors."""

    def __init__(self, settings: Settings) -> None:
        self.archive = build_archive(settings)
        self.dimse = DimseServer(self.archive)
        self.dimse.start()
        self.port = _free_port()
        self.server = uvicorn.Server(uvicorn.Config(create_app(self.archive), host="127.0.0.1", port=self.port,
                                                    log_level="warning"))
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.thread.start()
        assert wait_until(lambda: _answers(self.url), timeout=20)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def close(self) -> None:
        self.server.should_exit = True
        self.thread.join(10)
        self.dimse.stop()
        self.archive.close()


def test_postgresql_restart_under_load_fails_cleanly_and_recovers(
    tmp_path: Path, own_pg_server: PgServer
) -> None:
    """Only on a throwaway server of the test's own: stop it while clients store and query, expect clean
    Unavailable/503 answers, start it again and expect service to resume without restarting the archive."""
    db = own_pg_server.create_database()
    node = _HttpNode(Settings.load(data_dir=tmp_path / "v", index_url=own_pg_server.url(db), index_pool_size=4,
                                   dimse_port=_free_port(), aet="VAULT",
                                   anonymous_scopes=["read", "write", "delete"]))
    worker = start_worker(node.archive, poll_interval=0.05)
    stop = threading.Event()
    outcomes: dict[str, int] = {}
    unexpected: list[str] = []
    lock = threading.Lock()

    def note(key: str) -> None:
        with lock:
            outcomes[key] = outcomes.get(key, 0) + 1

    def modality() -> None:
        """A C-STORE SCU storing through the outage: every answer is Success or 0xA700 (out of resources)."""
        ae = AE(ae_title="MODALITY")
        ae.add_requested_context(CTImageStorage, ["1.2.840.10008.1.2.1"])
        study, i = generate_uid(), 0
        assoc = None
        while not stop.is_set():
            if assoc is None or not assoc.is_established:
                assoc = ae.associate("127.0.0.1", node.dimse.port, ae_title="VAULT")
                if not assoc.is_established:
                    unexpected.append("association rejected")
                    return
            i += 1
            ds = pydicom.dcmread(io.BytesIO(make_ct(study=study, seed=20_000 + i, rows=8, columns=8)))
            status = assoc.send_c_store(ds)
            code = int(status.Status) if status else -1
            if code in (0x0000, 0xA700):
                note(f"cstore-{code:04X}")
            else:
                unexpected.append(f"C-STORE status {code:#06x}")
            time.sleep(0.01)
        if assoc is not None and assoc.is_established:
            assoc.release()

    def load(n: int) -> None:
        study = generate_uid()
        with httpx.Client(base_url=node.url, timeout=30) as c:
            i = 0
            while not stop.is_set():
                i += 1
                try:
                    node.archive.ingest.ingest(io.BytesIO(make_ct(study=study, seed=i, rows=8, columns=8)))
                    note("ingest-ok")
                except Unavailable:
                    note("ingest-unavailable")
                except Exception as exc:
                    unexpected.append(f"ingest: {type(exc).__name__}: {exc}")
                r = stow(c, [make_ct(study=study, seed=10_000 + i, rows=8, columns=8)])
                q = c.get(f"{BASE}/studies", params={"StudyInstanceUID": study})
                for kind, resp in (("stow", r), ("qido", q)):
                    if resp.status_code in (200, 503):
                        note(f"{kind}-{resp.status_code}")
                    else:
                        unexpected.append(f"{kind}: {resp.status_code} {resp.text[:200]}")
                time.sleep(0.01)

    clients = [threading.Thread(target=load, args=(n,)) for n in range(2)] + [threading.Thread(target=modality)]
    try:
        for t in clients:
            t.start()
        assert wait_until(lambda: outcomes.get("stow-200", 0) >= 5, timeout=20)
        own_pg_server.stop("fast")
        assert wait_until(lambda: outcomes.get("stow-503", 0) >= 3 and outcomes.get("qido-503", 0) >= 3
                          and outcomes.get("cstore-A700", 0) >= 3, 30)
        assert httpx.get(f"{node.url}/readyz", timeout=10).status_code == 503
        job_while_down = outcomes.copy()
        own_pg_server.start()
        assert wait_until(lambda: httpx.get(f"{node.url}/readyz", timeout=10).status_code == 200, timeout=30)
        before, before_dimse = outcomes.get("stow-200", 0), outcomes.get("cstore-0000", 0)
        assert wait_until(lambda: outcomes.get("stow-200", 0) >= before + 5
                          and outcomes.get("cstore-0000", 0) >= before_dimse + 5, timeout=30), "service resumed"
    finally:
        stop.set()
        for t in clients:
            t.join(30)
    assert not unexpected, unexpected[:5]
    assert job_while_down.get("ingest-unavailable", 0) + job_while_down.get("stow-503", 0) > 0
    jobs = node.archive.jobs
    assert jobs is not None
    jid = jobs.enqueue("fixity", {"sop_uid": next(iter(node.archive.index.iter_blob_refs()))[0]})
    assert wait_until(lambda: jobs.get(jid).state == JobState.DONE, timeout=20), "the worker survived the outage"
    worker.stop()
    st = node.archive.index.stats()
    assert st.instances == len(list(node.archive.index.iter_blob_refs())) > 0
    node.close()
    own_pg_server.drop_database(db)
