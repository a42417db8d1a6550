"""Concurrent stores of overlapping studies — threads in one process and two processes on one database and one
blob folder — must give exact counters, no duplicate rows and no orphan blobs."""

from __future__ import annotations

import io
import random
import subprocess
import sys
import threading
from collections import Counter
from pathlib import Path

import pytest
from pydicom.uid import generate_uid

from dicomvault.bootstrap import Archive, build_archive
from dicomvault.domain.errors import Conflict
from dicomvault.domain.records import StoreOutcome
from dicomvault.domain.tags import Level
from dicomvault.settings import Settings
from tests.helpers import make_ct

N_STUDIES, N_SERIES, N_INSTANCES = 3, 4, 6
MODALITIES = ("CT", "MR", "PT", "SR")


def _objects() -> list[bytes]:
    """N_STUDIES studies of two patients, each with N_SERIES series of different modalities."""
    out = []
    for s in range(N_STUDIES):
        study = generate_uid()
        for k in range(N_SERIES):
            series = generate_uid()
            for i in range(N_INSTANCES):
                out.append(make_ct(study=study, series=series, PatientID=f"CONC-{s % 2}", PatientName=f"Conc^{s % 2}",
                                   Modality=MODALITIES[k], SeriesNumber=k + 1, InstanceNumber=i + 1, seed=i,
                                   rows=8, columns=8))
    return out


def _check_exact(archive: Archive, total: int) -> None:
    st = archive.index.stats()
    assert (st.patients, st.studies, st.series, st.instances) == (2, N_STUDIES, N_STUDIES * N_SERIES, total)
    for study in archive.query.search(archive.query.build_spec(Level.STUDY, {})):
        assert study["00201206"]["Value"] == [N_SERIES]
        assert study["00201208"]["Value"] == [N_SERIES * N_INSTANCES]
        assert sorted(study["00080061"]["Value"]) == sorted(MODALITIES)
    per_patient = {p["00100020"]["Value"][0]: p for p in
                   archive.query.search(archive.query.build_spec(Level.PATIENT, {}))}
    n_studies = {"CONC-0": (N_STUDIES + 1) // 2, "CONC-1": N_STUDIES // 2}
    for pid, row in per_patient.items():
        assert row["00201200"]["Value"] == [n_studies[pid]]
        assert row["00201202"]["Value"] == [n_studies[pid] * N_SERIES]
        assert row["00201204"]["Value"] == [n_studies[pid] * N_SERIES * N_INSTANCES]
    for series in archive.query.search(archive.query.build_spec(Level.SERIES, {})):
        assert series["00201209"]["Value"] == [N_INSTANCES]
    refs = list(archive.index.iter_blob_refs())
    assert len({sop for sop, _ in refs}) == len(refs) == total
    assert sorted(archive.blobs.iter_keys()) == sorted(b.key for _, b in refs), "no orphan or missing blob"


def test_threads_store_overlapping_studies(tmp_path: Path, any_index_url: str) -> None:
    objects = _objects()
    archive = build_archive(Settings.load(data_dir=tmp_path / "v", index_url=any_index_url, index_pool_size=8))
    outcomes: Counter[StoreOutcome] = Counter()
    errors: list[BaseException] = []
    lock = threading.Lock()

    def run(seed: int) -> None:
        order = objects[:]
        random.Random(seed).shuffle(order)
        for data in order:
            try:
                res = archive.ingest.ingest(io.BytesIO(data), source=f"thread-{seed}")
            except BaseException as exc:
                errors.append(exc)
                return
            with lock:
                outcomes[res.outcome] += 1

    threads = [threading.Thread(target=run, args=(seed,)) for seed in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    try:
        assert not errors, errors[:3]
        assert outcomes[StoreOutcome.STORED] == len(objects), "each object stored exactly once"
        assert outcomes[StoreOutcome.DUPLICATE] == 5 * len(objects)
        _check_exact(archive, len(objects))
    finally:
        archive.close()


def test_threads_conflicting_content_for_one_uid(tmp_path: Path, any_index_url: str) -> None:
    """Six different objects with one SOP Instance UID at once (policy reject): one wins, five get Conflict, and
    the losers' blobs are removed again."""
    archive = build_archive(Settings.load(data_dir=tmp_path / "v", index_url=any_index_url))
    sop, study, series = generate_uid(), generate_uid(), generate_uid()
    variants = [make_ct(sop=sop, study=study, series=series, seed=n) for n in range(6)]
    results: list[object] = []
    barrier = threading.Barrier(len(variants))

    def run(data: bytes) -> None:
        barrier.wait()
        try:
            results.append(archive.ingest.ingest(io.BytesIO(data)).outcome)
        except Conflict as exc:
            results.append(exc)

    threads = [threading.Thread(target=run, args=(d,)) for d in variants]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    try:
        assert results.count(StoreOutcome.STORED) == 1
        assert sum(isinstance(r, Conflict) for r in results) == 5
        st = archive.index.stats()
        assert (st.studies, st.series, st.instances) == (1, 1, 1)
        assert len(list(archive.blobs.iter_keys())) == 1
    finally:
        archive.close()


_NODE = """
import io, sys, random, threading
from pathlib import Path
from dicomvault.bootstrap import build_archive
from dicomvault.settings import Settings
data_dir, index_url, blob_dir, src, seed = sys.argv[1:6]
archive = build_archive(Settings.load(data_dir=data_dir, index_url=index_url, storage_url="file://" + blob_dir,
                                      index_pool_size=4))
files = sorted(Path(src).iterdir())
stored = []
def run(k):
    order = files[:]
    random.Random(int(seed) * 10 + k).shuffle(order)
    for f in order:
        try:
            stored.append(archive.ingest.ingest(io.BytesIO(f.read_bytes()), source="node" + seed).outcome.value)
        except Exception as exc:
            import traceback
            traceback.print_exc()
            stored.append(type(exc).__name__)
threads = [threading.Thread(target=run, args=(k,)) for k in range(3)]
[t.start() for t in threads]
[t.join() for t in threads]
archive.close()
print(stored.count("stored"), len(stored))
"""


def test_two_processes_share_one_database_and_blob_store(tmp_path: Path, pg_url: str) -> None:
    """Two archive processes (as two cluster nodes) on one PostgreSQL database and one shared blob folder."""
    objects = _objects()
    src = tmp_path / "src"
    src.mkdir()
    for n, data in enumerate(objects):
        (src / f"{n:04}.dcm").write_bytes(data)
    blob_dir = tmp_path / "shared-blobs"
    build_archive(Settings.load(data_dir=tmp_path / "init", index_url=pg_url)).close()  # migrate once
    nodes = [
        subprocess.Popen([sys.executable, "-c", _NODE, str(tmp_path / f"node{n}"), pg_url, str(blob_dir), str(src),
                          str(n)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for n in range(2)
    ]
    reports = []
    for node in nodes:
        out, errs = node.communicate(timeout=120)
        assert node.returncode == 0 and "Traceback" not in errs, errs[-3000:]
        reports.append(tuple(int(x) for x in out.split()))
    assert sum(stored for stored, _ in reports) == len(objects), "each object stored once across both nodes"
    assert all(total == 3 * len(objects) for _, total in reports)
    for node in range(2):  # each node sees everything
        archive = build_archive(Settings.load(data_dir=tmp_path / f"node{node}", index_url=pg_url,
                                              storage_url=f"file://{blob_dir}"))
        try:
            _check_exact(archive, len(objects))
        finally:
            archive.close()


@pytest.mark.parametrize("policy", ["replace", "keep-both"])
def test_concurrent_replacements_keep_counters(tmp_path: Path, pg_url: str, policy: str) -> None:
    """Replace/keep-both races on the same instances (remove + insert in one transaction) stay consistent."""
    archive = build_archive(Settings.load(data_dir=tmp_path / "v", index_url=pg_url, duplicate_policy=policy))
    study, series = generate_uid(), generate_uid()
    sops = [generate_uid() for _ in range(4)]
    versions = [[make_ct(sop=s, study=study, series=series, seed=v, InstanceNumber=i) for v in range(3)]
                for i, s in enumerate(sops)]
    errors: list[BaseException] = []

    def run(v: int) -> None:
        for per_sop in versions:
            try:
                archive.ingest.ingest(io.BytesIO(per_sop[v]))
            except BaseException as exc:
                errors.append(exc)

    threads = [threading.Thread(target=run, args=(v,)) for v in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    try:
        assert not errors, errors[:3]
        st = archive.index.stats()
        assert (st.patients, st.studies, st.series, st.instances) == (1, 1, 1, 4)
        [row] = archive.query.search(archive.query.build_spec(Level.STUDY, {"StudyInstanceUID": study}))
        assert row["00201208"]["Value"] == [4] and row["00201206"]["Value"] == [1]
        refs = list(archive.index.iter_blob_refs())
        expected = 4 if policy == "replace" else 12
        assert len(refs) == expected
        assert sorted(archive.blobs.iter_keys()) == sorted({b.key for _, b in refs})
    finally:
        archive.close()
