"""C-GET of a study on a cold (GLACIER, moto) store: the readable objects are sent, the not-restored ones fail and
the final status carries an Error Comment saying the study must be recalled; after the recall, everything goes."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

from pydicom.dataset import Dataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid
from pynetdicom import AE, build_role, evt
from pynetdicom.sop_class import (  # type: ignore[attr-defined]
    CTImageStorage,
    StudyRootQueryRetrieveInformationModelGet,
)

from dicomvault.bootstrap import build_archive
from dicomvault.dimse import status
from dicomvault.dimse.server import DimseServer
from dicomvault.services.recall import build_recall
from tests.dimse.conftest import identifier
from tests.helpers import make_ct
from tests.recall_support import cold_settings


def _c_get(port: int, study: str) -> tuple[list[tuple[Dataset, Dataset | None]], list[str]]:
    received: list[str] = []

    def on_store(event: Any) -> int:
        received.append(str(event.request.AffectedSOPInstanceUID))
        return 0x0000

    ae = AE(ae_title="GETSCU")
    model = StudyRootQueryRetrieveInformationModelGet
    ae.add_requested_context(model)
    ae.add_requested_context(CTImageStorage, [ExplicitVRLittleEndian])
    assoc = ae.associate("127.0.0.1", port, ae_title="DICOMVAULT",
                         ext_neg=[build_role(CTImageStorage, scp_role=True)],
                         evt_handlers=[(evt.EVT_C_STORE, on_store)])
    assert assoc.is_established
    responses = list(assoc.send_c_get(identifier("STUDY", StudyInstanceUID=study), model))
    assoc.release()
    return responses, received


def test_c_get_of_a_study_not_restored_says_recall(tmp_path: Path, s3_bucket_url: str) -> None:
    settings = cold_settings(tmp_path, s3_bucket_url)
    archive = build_archive(settings)
    server = DimseServer(archive)
    server.start()
    try:
        study, series = generate_uid(), generate_uid()
        cold = [archive.ingest.ingest(io.BytesIO(make_ct(study=study, series=series, InstanceNumber=i, seed=i)))
                .sop_instance_uid for i in (1, 2)]
        # One instance on the hot store (the ingest store switched for it): sent first, the cold ones fail.
        hot_archive = build_archive(settings.model_copy(update={"ingest_store": "default"}))
        try:
            hot = hot_archive.ingest.ingest(io.BytesIO(make_ct(study=study, series=series, InstanceNumber=3,
                                                               seed=3))).sop_instance_uid
        finally:
            hot_archive.close()

        responses, received = _c_get(server.port, study)
        final, ident = responses[-1]
        assert received == [hot]
        assert final.Status == status.RETRIEVE_SUBOPS_SOME_FAILED
        assert (final.NumberOfCompletedSuboperations, final.NumberOfFailedSuboperations) == (1, 2)
        assert final.ErrorComment == "On archive storage, not restored: recall the study"
        assert ident is not None and sorted(ident.FailedSOPInstanceUIDList) == sorted(cold)

        recall = archive.recall or build_recall(archive.index, archive.blobs, archive.tiers,
                                                settings.resolved_stores(), archive.jobs)
        assert recall.recall(study).requested == 2
        responses, received = _c_get(server.port, study)
        assert responses[-1][0].Status == status.SUCCESS and sorted(received) == sorted([*cold, hot])
    finally:
        server.stop()
        archive.close()


def test_c_get_of_nothing_restored_fails_with_the_comment(tmp_path: Path, s3_bucket_url: str) -> None:
    archive = build_archive(cold_settings(tmp_path, s3_bucket_url))
    server = DimseServer(archive)
    server.start()
    try:
        study = generate_uid()
        archive.ingest.ingest(io.BytesIO(make_ct(study=study)))
        responses, received = _c_get(server.port, study)
        final, _ = responses[-1]
        assert received == []
        assert final.Status == status.RETRIEVE_SUBOPS_OUT_OF_RESOURCES
        assert final.NumberOfFailedSuboperations == 1 and "recall" in final.ErrorComment
    finally:
        server.stop()
        archive.close()
