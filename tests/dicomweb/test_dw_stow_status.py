"""One verdict per object, whichever front end receives it (issue #10): ``dicomweb/stow_status.py``'s FailureReason
table and ``dimse/status.py``'s C-STORE table map each domain error type alike, and the same object sent by
storescu and by STOW-RS (httpx) gets the same code with the same reason text."""

from __future__ import annotations

import io
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pydicom
import pytest
from pydicom.uid import CTImageStorage
from pynetdicom import AE, _config

from dicomvault.dicomweb import stow, stow_status
from dicomvault.dicomweb.multipart import Part
from dicomvault.dimse import status
from dicomvault.dimse.server import DimseServer
from dicomvault.domain import errors as e
from tests.dicomweb.dw_live import DwServer
from tests.dicomweb.test_dw_stow import multipart, post, seq
from tests.dimse.conftest import dataset_bytes, run
from tests.helpers import make_ct

PIXEL_DATA = b"\xe0\x7f\x10\x00"  # (7FE0,0010), explicit VR little endian


@pytest.mark.parametrize("error", [
    e.NotDicom("empty object"), e.MalformedDicom("the object is truncated"), e.InvalidIdentity("x", keyword="x"),
    e.DamagedPixelData("short"), e.InvalidDicom("other"), e.TooLarge("big", "max_inflated_bytes"),
    e.Unavailable("down"), e.Unsupported("no"), e.NotFound("gone"),
], ids=lambda exc: type(exc).__name__)
def test_stow_and_c_store_tables_agree(error: e.DicomVaultError) -> None:
    expected = {status.STORE_UNEXPECTED_FAILURE: stow_status.PROCESSING_FAILURE}
    code = status.store_status(error)
    assert stow_status.failure_reason(error) == expected.get(code, code)


def test_a_duplicate_differs_only_by_transport() -> None:
    conflict = e.Conflict("a different object with this SOP Instance UID is already stored")
    assert (status.store_status(conflict), stow_status.failure_reason(conflict)) == (0xC111, 0x0111)


@pytest.fixture
def both(make_dw_server: Callable[..., DwServer]) -> Iterator[tuple[DwServer, int]]:
    """A DICOMweb server and a DIMSE server on the same archive."""
    server = make_dw_server()
    dimse = DimseServer(server.archive)
    dimse.start()
    try:
        yield server, dimse.port
    finally:
        dimse.stop()


def _storescu(port: int, path: Path) -> tuple[int, str]:
    """(Status, Error Comment) of storescu's C-STORE of ``path``, read from its debug output."""
    r = run(["storescu", "-d", "-aec", "DICOMVAULT", "127.0.0.1", str(port), str(path)])
    out = r.stdout + r.stderr
    codes = [line for line in out.splitlines() if "DIMSE Status" in line]
    assert codes, out[-3000:]
    code = int(codes[-1].split(":")[2].strip(), 16)
    comments = [line.split("LO [", 1)[1].rsplit("]", 1)[0] for line in out.splitlines() if "(0000,0902) LO [" in line]
    return code, comments[-1] if comments else ""


def _stow(server: DwServer, data: bytes) -> tuple[int, str, dict[str, Any]]:
    """(FailureReason, Error Comment, failed item) of one part sent alone by STOW-RS."""
    r = post(server, *multipart([data]))
    assert r.status_code == 409, r.text
    [item] = seq(r.json(), "00081198")
    return item["00081197"]["Value"][0], item["00000902"]["Value"][0], item


def test_truncated_object_is_cannot_understand_by_storescu_and_stow(both: tuple[DwServer, int],
                                                                     tmp_path: Path) -> None:
    """An object cut before its pixel data (dcmtk reads it, so storescu sends it)."""
    server, port = both
    full = make_ct(rows=64, columns=64)
    cut = full[: full.rindex(PIXEL_DATA)]
    path = tmp_path / "cut.dcm"
    path.write_bytes(cut)
    code, comment = _storescu(port, path)
    reason, text, _ = _stow(server, cut)
    assert code == status.STORE_CANNOT_UNDERSTAND == 0xC000
    assert reason == stow_status.CANNOT_UNDERSTAND == 49152
    assert comment == text == "the object describes an image but has no pixel data (truncated?)"
    assert server.archive.index.stats().instances == 0


def test_object_without_a_data_set_is_cannot_understand_by_c_store_and_stow(both: tuple[DwServer, int],
                                                                            tmp_path: Path) -> None:
    """A Part 10 object cut right after its File Meta Information: pynetdicom sends its (empty) data set with the
    meta's UIDs in the command (storescu finds no SOP UIDs to send). It was 0xA900 "SOPClassUID is missing" both
    ways, as if a data set lacked an attribute; a File Meta cut short was 0xA900 by STOW-RS too."""
    server, port = both
    full = make_ct()
    meta_only = full[: len(full) - len(dataset_bytes(full))]
    path = tmp_path / "meta-only.dcm"
    path.write_bytes(meta_only)
    ae = AE(ae_title="PYSCU")
    ae.add_requested_context(CTImageStorage, ["1.2.840.10008.1.2.1"])
    assoc = ae.associate("127.0.0.1", port, ae_title="DICOMVAULT")
    assert assoc.is_established
    _config.STORE_SEND_CHUNKED_DATASET = True
    try:
        st = assoc.send_c_store(path)
    finally:
        _config.STORE_SEND_CHUNKED_DATASET = False
        assoc.release()
    reason, text, _ = _stow(server, meta_only)
    assert (st.Status, reason) == (0xC000, 0xC000)
    assert st.ErrorComment == text == "the object has no data set (truncated after its File Meta?)"
    reason, text, _ = _stow(server, meta_only[:-20])  # the File Meta itself cut short
    assert reason == 0xC000, text


def test_missing_series_uid_is_0xa900_by_storescu_and_stow_naming_the_instance(
        both: tuple[DwServer, int], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    server, port = both
    ds = pydicom.dcmread(io.BytesIO(make_ct()))
    del ds.SeriesInstanceUID
    path = tmp_path / "no-series.dcm"
    ds.save_as(path, enforce_file_format=True)
    code, comment = _storescu(port, path)
    reads: list[object] = []
    monkeypatch.setattr(stow, "identity", lambda f: reads.append(f) or (None, None, None))
    reason, text, item = _stow(server, path.read_bytes())
    assert (code, reason) == (0xA900, 0xA900)
    assert comment == text == "SeriesInstanceUID is missing"
    # named from the UIDs the error carries, without reading the part again
    assert item["00081155"]["Value"] == [ds.SOPInstanceUID] and item["00081150"]["Value"] == [CTImageStorage]
    assert reads == []


def test_unreadable_part_is_still_named_from_what_can_be_read(both: tuple[DwServer, int]) -> None:
    """The fallback: pydicom cannot read the data set (a garbled element), yet its first UIDs can be read."""
    server, _ = both
    full = make_ct(rows=64, columns=64)
    ds = pydicom.dcmread(io.BytesIO(full))
    at = full.index(b"\x10\x00\x10\x00PN")  # PatientName: its VR made unknown
    garbled = full[:at + 4] + b"Q!" + full[at + 6:]
    reason, text, item = _stow(server, garbled)
    assert reason == 0xC000, text
    assert item["00081155"]["Value"] == [ds.SOPInstanceUID]


def test_store_part_with_conflict_names_the_class_without_reading_again(
        both: tuple[DwServer, int], monkeypatch: pytest.MonkeyPatch) -> None:
    server, _ = both
    first = make_ct(seed=1)
    sop = pydicom.dcmread(io.BytesIO(first)).SOPInstanceUID
    assert post(server, *multipart([first])).status_code == 200
    monkeypatch.setattr(stow, "identity", lambda f: pytest.fail("the part was read again"))
    other = make_ct(sop=sop, seed=2)
    result = stow.store_part(server.archive.ingest, Part({}, io.BytesIO(other), len(other)), None)
    assert (result.failure, result.sop_class_uid, result.sop_instance_uid) == (0x0111, CTImageStorage, sop)
