"""Issue #9, defect 1 through the DIMSE front end: a C-STORE re-send (pynetdicom, one association, the lean
storage receiver) racing ``DELETE /studies/{s}`` over HTTP on the same archive must never leave an instance the
index answers for without its exact bytes. Runs on the backends the environment selects (root ``settings``).
Before the claim protocol these rounds lost objects (see tests/services/test_services_delete_race.py).
"""

from __future__ import annotations

import io
import threading
from collections.abc import Iterator

import httpx
import pydicom
import pytest
from pydicom.uid import ExplicitVRLittleEndian
from pynetdicom import AE
from pynetdicom.association import Association
from pynetdicom.sop_class import CTImageStorage  # type: ignore[attr-defined]

from dicomvault.bootstrap import Archive, build_archive
from dicomvault.dicomweb.app import create_app
from dicomvault.dimse.server import DimseServer
from dicomvault.domain.errors import IntegrityFailure, NotFound
from dicomvault.settings import Settings
from tests.dicomweb.dw_live import WIDE_ANONYMOUS, serve
from tests.helpers import make_ct
from tests.race_rounds import ACKNOWLEDGED, UNAVAILABLE, run_rounds

ROUNDS = 40
PER_STUDY = 3
OUT_OF_RESOURCES = 0xA700


@pytest.fixture
def nodes(settings: Settings) -> Iterator[tuple[Archive, int, str]]:
    """One archive served over DIMSE and HTTP: (archive, DIMSE port, DICOMweb base URL); anonymous HTTP may
    delete (loopback only)."""
    archive = build_archive(settings.model_copy(update={"anonymous_scopes": WIDE_ANONYMOUS}))
    dimse = DimseServer(archive)
    dimse.start()
    try:
        with serve(create_app(archive)) as url:
            yield archive, dimse.port, url + "/dicom-web"
    finally:
        dimse.stop()
        archive.close()


def test_delete_racing_a_c_store_resend_loses_nothing(nodes: tuple[Archive, int, str]) -> None:
    archive, port, base = nodes
    ae = AE(ae_title="RACESCU")
    ae.add_requested_context(CTImageStorage, [ExplicitVRLittleEndian])
    assoc: Association = ae.associate("127.0.0.1", port, ae_title=archive.settings.aet)
    assert assoc.is_established
    lock = threading.Lock()  # one association, used by the store step and the re-sending thread in turn

    def send(data: bytes) -> int:
        with lock:
            status = assoc.send_c_store(pydicom.dcmread(io.BytesIO(data)))
        return int(status.Status)

    def store(data: bytes) -> str:
        assert send(data) == 0x0000
        sop = str(pydicom.dcmread(io.BytesIO(data), stop_before_pixels=True).SOPInstanceUID)
        digest = archive.index.instance_checksum(sop)
        assert digest is not None
        return digest

    def resend(datas: list[bytes]) -> list[str]:
        answers = []
        for data in datas:
            status = send(data)
            assert status in (0x0000, OUT_OF_RESOURCES), hex(status)
            answers.append(ACKNOWLEDGED if status == 0x0000 else UNAVAILABLE)
        return answers

    def retrieve(_study: str, _series: str, sop: str) -> bytes | None:
        records = archive.retrieve.locate(sop_uids=[sop])
        try:
            return b"".join(archive.retrieve.iter_bytes(records[0], verify=True)) if records else None
        except (NotFound, IntegrityFailure):
            return None

    with httpx.Client(timeout=60) as http:

        def delete(study: str) -> None:
            assert http.delete(f"{base}/studies/{study}").status_code in (204, 404)

        try:
            tally = run_rounds(
                ROUNDS, PER_STUDY, store=store, delete=delete, resend=resend,
                indexed=lambda study: {r.sop_uid for r in archive.index.instances(study_uid=study)},
                retrieve=retrieve, seed=33, spread=(-4.0, 0.5),
            )
        finally:
            assoc.release()
    assert tally.losses == [], f"{len(tally.losses)} losses in {tally.rounds} rounds: {tally.losses[:5]}"
    assert tally.indexed > 0, f"some re-sends must come after the delete: {tally}"


def test_c_store_of_bytes_whose_removal_never_finishes_is_a700(nodes: tuple[Archive, int, str]) -> None:
    """A deleter that claimed the blob and died: the re-send gets 0xA700 (try again), never a success."""
    archive, port, _ = nodes
    ds = pydicom.dcmread(io.BytesIO(make_ct(seed=78)))
    ae = AE(ae_title="RACESCU")
    ae.add_requested_context(CTImageStorage, [ExplicitVRLittleEndian])
    assoc = ae.associate("127.0.0.1", port, ae_title=archive.settings.aet)
    try:
        assert assoc.send_c_store(ds).Status == 0x0000
        [record] = archive.retrieve.locate(sop_uids=[str(ds.SOPInstanceUID)])
        archive.index.delete(study_uid=record.study_uid)
        archive.index.claim_blob_removals([record.blob.key], stale_after=300)  # ...and the deleter dies here
        archive.ingest.removal_wait = 0.3  # instead of 20 s
        status = assoc.send_c_store(ds)
    finally:
        assoc.release()
    assert status.Status == OUT_OF_RESOURCES and "removal" in str(status.get("ErrorComment", ""))
    assert archive.index.instances(sop_uids=[record.sop_uid]) == []
