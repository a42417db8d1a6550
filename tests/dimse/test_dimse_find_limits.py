"""C-FIND stays bounded (issue #9, defects 2 and 5), with pynetdicom and dcmtk findscu as the SCU:

* a wildcard that made the former regex backtrack for minutes answers at once, and the HTTP ``/healthz`` of the
  same process answers meanwhile;
* a key beyond the configured bounds is refused with 0xC000 and an Error Comment naming it;
* more matches than ``query_max_results``: exactly that many pending responses, then 0xA700 with an Error Comment,
  and one WARNING in the log without patient data;
* keys the index does not hold stop at the scan budget the same way;
* matches are read from the index a page at a time (keyset), not all at once before the first response.
"""

from __future__ import annotations

import io
import logging
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from pydicom.dataset import Dataset
from pydicom.uid import generate_uid
from pynetdicom import AE
from pynetdicom.sop_class import StudyRootQueryRetrieveInformationModelFind  # type: ignore[attr-defined]

from dicomvault.bootstrap import Archive, build_archive
from dicomvault.dicomweb.app import create_app
from dicomvault.dimse.server import DimseServer
from dicomvault.services import query as query_service
from dicomvault.settings import Settings
from tests.dicomweb.dw_live import serve
from tests.dimse.conftest import Running, identifier, run, start
from tests.helpers import PATHOLOGICAL_WILDCARD as PATHOLOGICAL
from tests.helpers import count_selects, make_ct

MODEL = StudyRootQueryRetrieveInformationModelFind


@pytest.fixture
def limited(tmp_path: Path) -> Iterator[Running]:
    running = start(tmp_path, query_max_results=5, query_max_scanned=4, fsync=False)
    yield running
    running.server.stop()
    running.archive.close()


def _ingest(archive: Archive, study: str | None = None, **attrs: Any) -> str:
    study = study or generate_uid()
    archive.ingest.ingest(io.BytesIO(make_ct(study=study, rows=2, columns=2, **attrs)))
    return study


def c_find(port: int, ds: Dataset) -> list[tuple[Dataset, Dataset | None]]:
    """Every (status, identifier) of one C-FIND, the final status last."""
    ae = AE(ae_title="FINDSCU")
    ae.dimse_timeout = ae.acse_timeout = 60
    ae.add_requested_context(MODEL)
    assoc = ae.associate("127.0.0.1", port, ae_title="DICOMVAULT")
    assert assoc.is_established
    try:
        return list(assoc.send_c_find(ds, MODEL))
    finally:
        assoc.release()


def test_pathological_wildcard_answers_while_healthz_keeps_answering(settings: Settings) -> None:
    archive = build_archive(settings)
    dimse = DimseServer(archive)
    dimse.start()
    try:
        target = _ingest(archive, InstitutionName="A" * 63 + "B")
        _ingest(archive, InstitutionName="A" * 64)
        with serve(create_app(archive)) as base:
            outcome: dict[str, Any] = {}

            def query() -> None:
                try:
                    outcome["responses"] = c_find(dimse.port, identifier(
                        "STUDY", StudyInstanceUID="", InstitutionName=PATHOLOGICAL))
                except Exception as exc:
                    outcome["error"] = exc

            thread = threading.Thread(target=query)
            thread.start()
            probes = 0
            try:
                while thread.is_alive() or probes < 3:
                    assert httpx.get(base + "/healthz", timeout=10).status_code == 200
                    probes += 1
            finally:
                thread.join(timeout=120)
    finally:
        dimse.stop()
        archive.close()
    assert "error" not in outcome, outcome
    responses = outcome["responses"]
    assert responses[-1][0].Status == 0x0000
    assert [ident.StudyInstanceUID for status, ident in responses if status.Status == 0xFF00] == [target]


def test_keys_beyond_the_bounds_are_unable_to_process(limited: Running) -> None:
    for ds, key in (
        (identifier("STUDY", StudyInstanceUID="", InstitutionName="A" * 64 + "*"), "InstitutionName"),
        (identifier("STUDY", StudyInstanceUID="", PatientName="*A" * 17), "PatientName"),
    ):
        [(status, _)] = c_find(limited.port, ds)
        assert status.Status == 0xC000 and key in status.ErrorComment, status


def test_more_matches_than_the_maximum_end_with_out_of_resources(
    limited: Running, caplog: pytest.LogCaptureFixture, tmp_path: Path
) -> None:
    studies = [_ingest(limited.archive, PatientID=f"CAP-{i}", PatientName="Secret^Patient") for i in range(8)]
    caplog.set_level(logging.INFO)
    responses = c_find(limited.port, identifier("STUDY", StudyInstanceUID="", PatientName=""))
    pending = [ident.StudyInstanceUID for status, ident in responses if status.Status == 0xFF00]
    final = responses[-1][0]
    assert pending == studies[:5]  # exactly the maximum, in index order
    assert final.Status == 0xA700 and final.ErrorComment == "More than 5 matches: narrow the query"
    ours = [r for r in caplog.records if r.name.startswith("dicomvault")]  # (pynetdicom's SCU logs identifiers)
    assert any(r.levelno == logging.WARNING and "More than 5 matches" in r.getMessage() for r in ours), ours
    assert not any("Secret" in r.getMessage() or "CAP-" in r.getMessage() for r in ours if r.levelno >= logging.INFO)
    # dcmtk's findscu sees the same: five responses, then the refusal with its comment
    out = tmp_path / "found"
    out.mkdir()
    r = run(["findscu", "-v", "-S", "-X", "-od", str(out), "-k", "QueryRetrieveLevel=STUDY", "-k", "StudyInstanceUID",
             "-aec", "DICOMVAULT", "127.0.0.1", str(limited.port)])
    assert len(list(out.glob("rsp*.dcm"))) == 5, r.stdout + r.stderr
    assert "Received Final Find Response (Refused: OutOfResources)" in r.stdout + r.stderr
    # below the maximum nothing changes
    responses = c_find(limited.port, identifier("STUDY", StudyInstanceUID="", PatientID="CAP-1"))
    assert [s.Status for s, _ in responses] == [0xFF00, 0x0000]


def test_scan_budget_for_non_indexed_keys_ends_with_out_of_resources(limited: Running) -> None:
    hits = [_ingest(limited.archive, PatientID=f"SC-{i}", InstitutionName="Match" if i in (1, 5) else "Other")
            for i in range(6)]
    responses = c_find(limited.port, identifier("STUDY", StudyInstanceUID="", InstitutionName="Mat?h"))
    pending = [ident.StudyInstanceUID for status, ident in responses if status.Status == 0xFF00]
    assert pending == [hits[1]]  # the 4 records examined held one match
    assert responses[-1][0].Status == 0xA700 and "Examined 4 records" in responses[-1][0].ErrorComment
    # narrowed by an indexed key, the same non-indexed match completes
    responses = c_find(limited.port, identifier("STUDY", StudyInstanceUID="", PatientID="SC-5", InstitutionName="M*"))
    assert [s.Status for s, _ in responses] == [0xFF00, 0x0000]


def test_matches_are_read_a_page_at_a_time(dimse: Running, monkeypatch: pytest.MonkeyPatch) -> None:
    """The whole result is never selected in one go: every read of the level is a keyset page of SCAN_PAGE rows
    (10 here), so the first response leaves after the first page and memory holds one page."""
    monkeypatch.setattr(query_service, "SCAN_PAGE", 10)
    study = generate_uid()
    for i in range(35):
        _ingest(dimse.archive, study=study, InstanceNumber=i + 1)
    with count_selects(dimse.archive) as selects:
        responses = c_find(dimse.port, identifier("IMAGE", StudyInstanceUID=study, SOPInstanceUID=""))
    assert [s.Status for s, _ in responses].count(0xFF00) == 35 and responses[-1][0].Status == 0x0000
    pages = [s for s in selects if "FROM instances" in s]
    assert len(pages) == 4 and all("LIMIT" in s for s in pages), pages
