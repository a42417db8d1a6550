"""C-GET (dcmtk getscu) and C-MOVE of a study that a lifecycle rule moved to the cold store: the same bytes as
stored, read transparently from the store that holds them."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pydicom
import pytest
from pynetdicom import AE
from pynetdicom.sop_class import StudyRootQueryRetrieveInformationModelMove  # type: ignore[attr-defined]

from dicomvault.jobs.handlers import TIER_KINDS, default_handlers
from dicomvault.jobs.worker import Worker
from tests.dimse.conftest import Loaded, Receiver, Running, dataset_bytes, identifier, load, run, start

RULE = {"name": "to cold", "when": {"study_age_days": 0}, "action": {"move_to": "cold"}}


@pytest.fixture
def moved(tmp_path: Path, receiver: Receiver) -> Iterator[tuple[Running, Loaded]]:
    running = start(tmp_path, move_destinations={receiver.aet: f"127.0.0.1:{receiver.port}"},
                    stores={"hot": {"url": f"file://{tmp_path / 'hot'}"},
                            "cold": {"url": f"file://{tmp_path / 'cold'}"}},
                    ingest_store="hot", lifecycle=[RULE], tier_max_bytes_per_second=0)
    loaded = load(running.archive)
    archive = running.archive
    assert archive.tiering is not None and archive.jobs is not None
    assert archive.tiering.schedule() == len(loaded.studies)
    worker = Worker(archive.jobs, default_handlers(archive), kinds=list(TIER_KINDS), poll_interval=0)
    while worker.run_once():
        pass
    for study in loaded.studies.values():
        assert {b.stores for b in archive.index.study_blobs(study)} == {("cold",)}
    yield running, loaded
    running.server.stop()
    running.archive.close()


def _getscu_study_a(running: Running, loaded: Loaded, out: Path) -> None:
    """dcmtk getscu of study A (3 instances) into ``out``: every file holds the stored data set, byte for byte."""
    out.mkdir()
    r = run(["getscu", "-S", "+B", "-od", str(out), "-aec", "DICOMVAULT", "-k", "QueryRetrieveLevel=STUDY",
             "-k", f"StudyInstanceUID={loaded.studies['A']}", "127.0.0.1", str(running.port)])
    assert r.returncode == 0, r.stderr
    files = list(out.iterdir())
    assert len(files) == 3
    for f in files:
        uid = str(pydicom.dcmread(f, stop_before_pixels=True).SOPInstanceUID)
        assert dataset_bytes(f.read_bytes()) == dataset_bytes(loaded.objects[uid])


def test_getscu_reads_a_moved_study_byte_for_byte(moved: tuple[Running, Loaded], tmp_path: Path) -> None:
    running, loaded = moved
    _getscu_study_a(running, loaded, tmp_path / "got")


def test_move_of_a_moved_study(moved: tuple[Running, Loaded], receiver: Receiver) -> None:
    running, loaded = moved
    ae = AE(ae_title="MOVESCU")
    ae.add_requested_context(StudyRootQueryRetrieveInformationModelMove)
    assoc = ae.associate("127.0.0.1", running.port, ae_title="DICOMVAULT")
    assert assoc.is_established
    responses = list(assoc.send_c_move(identifier("STUDY", StudyInstanceUID=loaded.studies["B"]), receiver.aet,
                                       StudyRootQueryRetrieveInformationModelMove))
    assoc.release()
    assert responses[-1][0].Status == 0x0000
    assert len(receiver.received) == 2
    for uid, (_, data) in receiver.received.items():
        assert dataset_bytes(data) == dataset_bytes(loaded.objects[uid])


def test_getscu_from_an_s3_store_downloads_ahead_and_leaves_no_spool_file(tmp_path: Path,
                                                                          s3_bucket_url: str) -> None:
    running = start(tmp_path, storage_url=s3_bucket_url)
    try:
        loaded = load(running.archive)
        _getscu_study_a(running, loaded, tmp_path / "got")
        spool = running.settings.data_dir / "spool"
        assert not list(spool.glob("prefetch-*")) if spool.exists() else True, "downloads removed once sent"
    finally:
        running.server.stop()
        running.archive.close()
