"""C-GET and C-MOVE address at most ``retrieve_max_instances`` instances (issue #9, defect 5), with pynetdicom and
dcmtk getscu: above the bound the request is refused with 0xA701 and an Error Comment before any sub-operation,
whether unique keys (counted from the index's counters) or other keys (selected page by page) address them; at or
below it nothing changes."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from pydicom.uid import ExplicitVRLittleEndian
from pynetdicom.sop_class import (  # type: ignore[attr-defined]
    CTImageStorage,
    PatientRootQueryRetrieveInformationModelGet,
    StudyRootQueryRetrieveInformationModelGet,
    StudyRootQueryRetrieveInformationModelMove,
)

from tests.dimse.conftest import Loaded, Receiver, Running, identifier, load, run, start
from tests.dimse.test_dimse_retrieve import c_get, c_move

CT = [(CTImageStorage, [ExplicitVRLittleEndian])]


@pytest.fixture
def capped(tmp_path: Path, receiver: Receiver) -> Iterator[tuple[Running, Loaded]]:
    """Three studies (A: 3 CT, B: 2 MR of patient P1; C: 2 CT of P2), at most 2 instances per retrieve."""
    running = start(tmp_path, retrieve_max_instances=2, move_destinations={receiver.aet: f"127.0.0.1:{receiver.port}"})
    yield running, load(running.archive)
    running.server.stop()
    running.archive.close()


def test_get_above_the_bound_is_refused_below_it_unchanged(capped: tuple[Running, Loaded]) -> None:
    running, loaded = capped
    refused = (
        (identifier("STUDY", StudyInstanceUID=loaded.studies["A"]), StudyRootQueryRetrieveInformationModelGet,
         "3 instances, more than the maximum of 2"),
        (identifier("PATIENT", PatientID="P1"), PatientRootQueryRetrieveInformationModelGet,
         "5 instances, more than the maximum of 2"),
        (identifier("STUDY", StudyInstanceUID=f"{loaded.studies['B']}\\{loaded.studies['C']}"),
         StudyRootQueryRetrieveInformationModelGet, "4 instances, more than the maximum of 2"),
        # not unique keys: selected by the query engine, stopped one past the bound
        (identifier("STUDY", PatientName="DOE*", StudyInstanceUID=""), StudyRootQueryRetrieveInformationModelGet,
         "More than 2 matches: narrow the query"),
    )
    for ident, model, comment in refused:
        final, received = c_get(running, ident, model, CT)
        assert final.Status == 0xA701 and final.ErrorComment == comment, final
        assert received == {}
    for ident in (identifier("STUDY", StudyInstanceUID=loaded.studies["C"]),
                  identifier("STUDY", PatientName="MÜLLER*", StudyInstanceUID="")):
        final, received = c_get(running, ident, StudyRootQueryRetrieveInformationModelGet, CT)
        assert final.Status == 0x0000 and final.NumberOfCompletedSuboperations == 2
        assert len(received) == 2


def test_move_above_the_bound_is_refused(capped: tuple[Running, Loaded], receiver: Receiver) -> None:
    running, loaded = capped
    model = StudyRootQueryRetrieveInformationModelMove
    final = c_move(running, identifier("STUDY", StudyInstanceUID=loaded.studies["A"]), receiver.aet, model)[-1][0]
    assert final.Status == 0xA701 and final.ErrorComment == "3 instances, more than the maximum of 2"
    assert receiver.received == {}
    final = c_move(running, identifier("STUDY", StudyInstanceUID=loaded.studies["B"]), receiver.aet, model)[-1][0]
    assert final.Status == 0x0000 and len(receiver.received) == 2


def test_getscu_sees_the_refusal(capped: tuple[Running, Loaded], tmp_path: Path) -> None:
    running, loaded = capped
    out = tmp_path / "got"
    out.mkdir()
    r = run(["getscu", "-v", "-S", "-od", str(out), "-k", "QueryRetrieveLevel=STUDY",
             "-k", f"StudyInstanceUID={loaded.studies['A']}", "-aec", "DICOMVAULT", "127.0.0.1", str(running.port)])
    assert list(out.iterdir()) == []
    assert "DIMSE status is: Refused: OutOfResourcesNumberOfMatches" in r.stdout + r.stderr, r.stdout + r.stderr
