"""Storage commitment SCP (issue #12 item 4, PS3.4 J) with pynetdicom as the modality: the N-EVENT-REPORT lists
exactly the instances durably stored and intact, and fails the others with their reason; on the request's
association while it is open, else on a new association to the modality (a known peer)."""

from __future__ import annotations

import io
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pydicom
import pytest
from pydicom.uid import CTImageStorage, MRImageStorage, generate_uid
from pynetdicom import AE, evt
from pynetdicom.sop_class import StorageCommitmentPushModel  # type: ignore[attr-defined]

from dicomvault.dicom import commitment
from dicomvault.domain.peers import RemotePeer
from dicomvault.domain.routing import CommitmentResult
from tests.conftest import free_port
from tests.dimse.conftest import Running, start
from tests.helpers import make_ct


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Running]:
    running = start(tmp_path)
    yield running
    running.server.stop()
    running.archive.close()


def _modality_ae() -> AE:
    ae = AE(ae_title="MODALITY")
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 10
    return ae


def test_report_on_the_same_association_lists_exactly_what_is_stored(server: Running) -> None:
    stored = [server.archive.ingest.ingest(io.BytesIO(make_ct(seed=i))).sop_instance_uid for i in range(2)]
    never = generate_uid()
    reports: list[CommitmentResult] = []
    arrived = threading.Event()

    def on_report(event: Any) -> tuple[int, None]:
        result = commitment.read_report(event.event_information)
        assert result is not None
        reports.append(result)
        arrived.set()
        return 0x0000, None

    ae = _modality_ae()
    ae.add_requested_context(StorageCommitmentPushModel)
    ae.add_requested_context(CTImageStorage)  # storage and commitment on one association: pynetdicom's path
    assoc = ae.associate("127.0.0.1", server.port, ae_title=server.settings.aet,
                         evt_handlers=[(evt.EVT_N_EVENT_REPORT, on_report)])
    assert assoc.is_established
    try:
        transaction = generate_uid()
        late = make_ct()
        status = assoc.send_c_store(pydicom.dcmread(io.BytesIO(late)))
        assert status.Status == 0
        late_uid = str(pydicom.dcmread(io.BytesIO(late)).SOPInstanceUID)
        refs = [(CTImageStorage, u) for u in [*stored, late_uid]] + [(CTImageStorage, never)]
        refs.append((MRImageStorage, stored[0]))  # the wrong class for a stored instance
        status, _ = assoc.send_n_action(commitment.request(transaction, refs), 1, StorageCommitmentPushModel,
                                        commitment.PUSH_MODEL_INSTANCE)
        assert status.Status == 0
        assert arrived.wait(10), "no N-EVENT-REPORT on the request's association"
    finally:
        assoc.release()
    [report] = reports
    assert report.transaction_uid == transaction
    assert sorted(report.committed) == sorted([*stored, late_uid])
    assert report.failed == {never: commitment.NO_SUCH_OBJECT, stored[0]: commitment.CLASS_INSTANCE_CONFLICT}


def test_report_on_a_new_association_once_the_modality_released(server: Running) -> None:
    stored = server.archive.ingest.ingest(io.BytesIO(make_ct())).sop_instance_uid
    never = generate_uid()
    reports: list[CommitmentResult] = []
    arrived = threading.Event()

    def on_report(event: Any) -> tuple[int, None]:
        result = commitment.read_report(event.event_information)
        assert result is not None
        reports.append(result)
        arrived.set()
        return 0x0000, None

    port = free_port()
    listener = AE(ae_title="MODALITY")
    listener.add_supported_context(StorageCommitmentPushModel, scu_role=True, scp_role=True)
    scp = listener.start_server(("127.0.0.1", port), block=False, evt_handlers=[(evt.EVT_N_EVENT_REPORT, on_report)])
    try:
        assert server.archive.peers is not None
        server.archive.peers.add(RemotePeer(aet="MODALITY", host="127.0.0.1", port=port))
        ae = _modality_ae()
        ae.add_requested_context(StorageCommitmentPushModel)
        assoc = ae.associate("127.0.0.1", server.port, ae_title=server.settings.aet)
        assert assoc.is_established
        transaction = generate_uid()
        status, _ = assoc.send_n_action(commitment.request(transaction, [(CTImageStorage, stored),
                                                                          (CTImageStorage, never)]),
                                        1, StorageCommitmentPushModel, commitment.PUSH_MODEL_INSTANCE)
        assert status.Status == 0
        assoc.release()  # at once: the report must come on an association of the archive's
        assert arrived.wait(15), "no N-EVENT-REPORT on a new association"
    finally:
        scp.shutdown()
    [report] = reports
    assert report.transaction_uid == transaction
    assert report.committed == (stored,) and report.failed == {never: commitment.NO_SUCH_OBJECT}


def test_damaged_bytes_are_not_committed(server: Running) -> None:
    from dicomvault.services.commitment import CommitmentService

    uid = server.archive.ingest.ingest(io.BytesIO(make_ct())).sop_instance_uid
    [record] = server.archive.retrieve.locate(sop_uids=[uid])
    path = server.archive.blobs.local_path(record.blob.key)
    if path is None:
        pytest.skip("needs a filesystem store to damage a blob")
    path.chmod(0o644)
    data = bytearray(path.read_bytes())
    data[-1] ^= 0xFF
    path.write_bytes(bytes(data))
    committed, failed = CommitmentService(server.archive.retrieve).check([(CTImageStorage, uid)])
    assert committed == [] and failed == {(CTImageStorage, uid): commitment.PROCESSING_FAILURE}
