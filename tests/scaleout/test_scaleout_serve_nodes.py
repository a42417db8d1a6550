"""Two ``dicomvault serve`` nodes on one PostgreSQL database and one shared blob folder: modalities storing
overlapping studies over C-STORE (pynetdicom SCU) to either node, plus STOW-RS; counts are exact and a query on
either node sees everything. Runs once the DIMSE front end (``dicomvault.dimse.server``) is present."""

from __future__ import annotations

import io
import os
import random
import signal
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
from pydicom.uid import generate_uid
from pynetdicom import AE
from pynetdicom.sop_class import CTImageStorage  # type: ignore[attr-defined]

from tests.helpers import make_ct
from tests.pg_fixture import wait_until

pytest.importorskip("dicomvault.dimse.server", reason="the DIMSE front end has not landed yet")


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _listening(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


@pytest.fixture
def serve_nodes(tmp_path: Path, pg_url: str) -> Iterator[list[tuple[int, int]]]:
    blob_url = f"file://{tmp_path / 'shared-blobs'}"
    nodes = [(_free_port(), _free_port()) for _ in range(2)]
    procs = []
    for n, (dimse, http) in enumerate(nodes):
        log = (tmp_path / f"node{n}.log").open("w")
        procs.append(subprocess.Popen(
            [sys.executable, "-m", "dicomvault", "serve", "--data-dir", str(tmp_path / f"node{n}"),
             "--index-url", pg_url, "--storage-url", blob_url, "--dimse-port", str(dimse),
             "--http-port", str(http), "--aet", "VAULT"],
            # The test stores over STOW-RS without a token: anonymous write is widened explicitly.
            env={**os.environ, "DICOMVAULT_ANONYMOUS_SCOPES": '["read", "write"]'},
            stdout=log, stderr=subprocess.STDOUT))
    try:
        for dimse, http in nodes:
            assert wait_until(lambda d=dimse, h=http: _listening(d) and _listening(h), timeout=40), (
                "a serve node did not start: " + " | ".join(
                    (tmp_path / f"node{n}.log").read_text()[-1500:] for n in range(2)))
        yield nodes
    finally:
        for p in procs:
            p.send_signal(signal.SIGTERM)
        for p in procs:
            try:
                p.wait(20)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()


def _c_store(port: int, objects: list[bytes], seed: int, failures: list[str]) -> None:
    ae = AE(ae_title="MODALITY")
    ae.add_requested_context(CTImageStorage, ["1.2.840.10008.1.2.1", "1.2.840.10008.1.2"])
    assoc = ae.associate("127.0.0.1", port, ae_title="VAULT")
    if not assoc.is_established:
        failures.append(f"association to {port} rejected")
        return
    order = objects[:]
    random.Random(seed).shuffle(order)
    try:
        for data in order:
            status = assoc.send_c_store(pydicom.dcmread(io.BytesIO(data)))
            if not status or status.Status != 0x0000:
                failures.append(f"C-STORE to {port}: {status}")
    finally:
        assoc.release()


def _stow(port: int, objects: list[bytes], failures: list[str]) -> None:
    boundary = uuid.uuid4().hex
    body = b"".join(b"--" + boundary.encode() + b"\r\nContent-Type: application/dicom\r\n\r\n" + o + b"\r\n"
                    for o in objects) + b"--" + boundary.encode() + b"--\r\n"
    r = httpx.post(f"http://127.0.0.1:{port}/dicom-web/studies", content=body, timeout=60, headers={
        "Content-Type": f'multipart/related; type="application/dicom"; boundary={boundary}'})
    if r.status_code != 200:
        failures.append(f"STOW to {port}: {r.status_code} {r.text[:200]}")


def test_two_serve_nodes_c_store_and_stow_overlapping_studies(serve_nodes: list[tuple[int, int]]) -> None:
    studies = [generate_uid() for _ in range(2)]
    objects = [make_ct(study=study, series=series, PatientID=f"SN-{s}", Modality=mod, SeriesNumber=k + 1,
                       InstanceNumber=i + 1, seed=i, rows=8, columns=8)
               for s, study in enumerate(studies)
               for k, (series, mod) in enumerate(((generate_uid(), "CT"), (generate_uid(), "MR")))
               for i in range(5)]
    failures: list[str] = []
    # The same instance over C-STORE and over STOW-RS are different bytes (C-STORE carries a data set the archive
    # wraps in its own file meta), which the default policy rightly rejects: the two paths get disjoint
    # instances of the same studies and series, and each path sends its instances to both nodes.
    by_dimse, by_stow = objects[::2], objects[1::2]
    workers = [threading.Thread(target=_c_store, args=(serve_nodes[n % 2][0], by_dimse, n, failures))
               for n in range(4)]
    workers += [threading.Thread(target=_stow, args=(http, by_stow, failures)) for _, http in serve_nodes]
    started = time.monotonic()
    for t in workers:
        t.start()
    for t in workers:
        t.join(120)
    assert not failures, failures[:5]
    assert time.monotonic() - started < 120
    for _, http in serve_nodes:
        found = httpx.get(f"http://127.0.0.1:{http}/dicom-web/studies", timeout=30).json()
        assert sorted(s["0020000D"]["Value"][0] for s in found) == sorted(studies)
        assert all(s["00201206"]["Value"] == [2] and s["00201208"]["Value"] == [10] for s in found)
    ae = AE(ae_title="VIEWER")
    ae.add_requested_context("1.2.840.10008.5.1.4.1.2.2.1")  # Study Root Q/R FIND
    for dimse, _ in serve_nodes:
        assoc = ae.associate("127.0.0.1", dimse, ae_title="VAULT")
        assert assoc.is_established
        query = pydicom.Dataset()
        query.QueryRetrieveLevel = "STUDY"
        query.StudyInstanceUID = ""
        query.NumberOfStudyRelatedInstances = ""
        answers = [ds for status, ds in assoc.send_c_find(query, "1.2.840.10008.5.1.4.1.2.2.1")
                   if status and status.Status in (0xFF00, 0xFF01) and ds is not None]
        assoc.release()
        assert sorted(str(ds.StudyInstanceUID) for ds in answers) == sorted(studies)
        assert all(int(ds.NumberOfStudyRelatedInstances) == 10 for ds in answers)
