"""STOW-RS against the real server: dicomweb-client for the happy paths, raw httpx/sockets for the bad ones."""

from __future__ import annotations

import io
import logging
import socket
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pydicom
import pytest
from dicomweb_client.api import DICOMwebClient
from pydicom.uid import generate_uid
from requests.exceptions import HTTPError

from dicomvault.domain.tags import Level
from tests.dicomweb.dw_live import DwServer
from tests.helpers import make_ct

CT = "1.2.840.10008.5.1.4.1.1.2"


def multipart(parts: list[bytes], *, boundary: str | None = None, part_headers: str = "Content-Type: application/dicom",
              close: bool = True, preamble: bytes = b"", epilogue: bytes = b"") -> tuple[bytes, str]:
    b = boundary or uuid.uuid4().hex
    body = bytearray(preamble)
    for i, p in enumerate(parts):
        body += (b"" if i == 0 and not preamble else b"\r\n") + f"--{b}\r\n{part_headers}\r\n\r\n".encode() + p
    if close:
        body += f"\r\n--{b}--\r\n".encode() + epilogue
    return bytes(body), f'multipart/related; type="application/dicom"; boundary="{b}"'


def post(server: DwServer, body: bytes, ctype: str, path: str = "/studies") -> httpx.Response:
    return httpx.post(server.dicomweb_url + path, content=body, headers={"Content-Type": ctype}, timeout=60)


def count(server: DwServer, level: Level = Level.IMAGE) -> int:
    return len(server.archive.query.search(server.archive.query.build_spec(level, {})))


def seq(body: dict[str, Any], tag: str) -> list[dict[str, Any]]:
    return list(body.get(tag, {}).get("Value", []))


def _rewritable(ds: pydicom.Dataset) -> bool:
    """dicomweb-client re-encodes datasets with pydicom; a few corpus files (odd VRs) cannot be re-encoded."""
    try:
        pydicom.dcmwrite(io.BytesIO(), ds)
        return True
    except Exception:
        return False


def test_stow_corpus_with_dicomweb_client(dw_server: DwServer, corpus: list[Path]) -> None:
    client = DICOMwebClient(url=dw_server.dicomweb_url)
    datasets = [pydicom.dcmread(p) for p in corpus]
    encodable = [ds for ds in datasets if _rewritable(ds)]
    assert len(encodable) > 80
    result = client.store_instances(encodable)
    assert "FailedSOPSequence" not in result
    stored = {str(item.ReferencedSOPInstanceUID) for item in result.ReferencedSOPSequence}
    assert stored == {str(ds.SOPInstanceUID) for ds in encodable}
    for item in result.ReferencedSOPSequence:
        assert str(item.RetrieveURL).endswith(f"/instances/{item.ReferencedSOPInstanceUID}")
        assert item.ReferencedSOPClassUID
    # The rest as they are on disk, through a raw multipart request.
    kept = {id(ds) for ds in encodable}
    rest = [p for p, ds in zip(corpus, datasets, strict=True) if id(ds) not in kept]
    if rest:
        r = post(dw_server, *multipart([p.read_bytes() for p in rest]))
        assert r.status_code == 200, r.text
    # Durable and indexed before the response: visible to QIDO-RS at once.
    found = client.search_for_instances()
    assert {i["00080018"]["Value"][0] for i in found} == {str(ds.SOPInstanceUID) for ds in datasets}


def test_stow_to_study_rejects_other_study(dw_server: DwServer) -> None:
    study = generate_uid()
    good = make_ct(study=study)
    other = make_ct()
    client = DICOMwebClient(url=dw_server.dicomweb_url)
    body, ctype = multipart([good, other])
    r = post(dw_server, body, ctype, f"/studies/{study}")
    assert r.status_code == 202
    assert r.headers["content-type"] == "application/dicom+json"
    j = r.json()
    assert j["00081190"]["Value"][0].endswith(f"/dicom-web/studies/{study}")
    assert len(seq(j, "00081199")) == 1
    failed = seq(j, "00081198")
    assert len(failed) == 1
    assert failed[0]["00081197"]["Value"] == [43265]
    assert failed[0]["00081155"]["Value"] == [pydicom.dcmread(io.BytesIO(other)).SOPInstanceUID]
    assert failed[0]["00081150"]["Value"] == [CT]
    assert count(dw_server) == 1
    assert len(client.search_for_studies()) == 1


def test_single_application_dicom_body(dw_server: DwServer) -> None:
    r = post(dw_server, make_ct(), "application/dicom")
    assert r.status_code == 200, r.text
    assert len(seq(r.json(), "00081199")) == 1


def test_boundary_forms_preamble_epilogue(dw_server: DwServer) -> None:
    b = "simple-boundary_42"
    body, _ = multipart([make_ct(), make_ct()], boundary=b, preamble=b"This is a preamble.\r\n",
                        epilogue=b"and an epilogue\r\n")
    r = post(dw_server, body, f"multipart/related; boundary={b}; type=application/dicom")
    assert r.status_code == 200, r.text
    # Part headers with Content-Length and Content-Location, no type parameter on the request.
    data = make_ct()
    body, _ = multipart([data], boundary=b, part_headers=(
        f"Content-Type: application/dicom\r\nContent-Length: {len(data)}\r\nContent-Location: a.dcm"))
    r = post(dw_server, body, f"Multipart/Related; boundary=\"{b}\"")
    assert r.status_code == 200, r.text
    assert count(dw_server) == 3


def test_wrong_media_types_are_415(dw_server: DwServer) -> None:
    assert post(dw_server, b"{}", "application/json").status_code == 415
    body, _ = multipart([make_ct()])
    r = post(dw_server, body, 'multipart/related; type="application/dicom+json"; boundary=x')
    assert r.status_code == 415
    assert r.json()["status"] == 415
    r = httpx.post(dw_server.dicomweb_url + "/studies", content=make_ct())  # no Content-Type at all
    assert r.status_code == 415
    assert count(dw_server) == 0


def test_truncated_multipart_is_400_and_stores_nothing(dw_server: DwServer) -> None:
    body, ctype = multipart([make_ct()], close=False)
    r = post(dw_server, body[:-100], ctype)
    assert r.status_code == 400
    assert "truncated" in r.json()["error"]
    assert count(dw_server) == 0
    r = post(dw_server, b"no boundary anywhere", ctype)
    assert r.status_code == 400


def test_truncated_after_complete_parts_reports_what_was_stored(dw_server: DwServer) -> None:
    body, ctype = multipart([make_ct(), make_ct()], close=False)
    r = post(dw_server, body[:-50], ctype)
    assert r.status_code == 202
    assert "truncated" in r.headers["warning"]
    assert len(seq(r.json(), "00081199")) == 1
    assert count(dw_server) == 1


def test_part_length_mismatch_is_400(dw_server: DwServer) -> None:
    data = make_ct()
    body, ctype = multipart([data], part_headers=f"Content-Type: application/dicom\r\nContent-Length: {len(data) + 9}")
    r = post(dw_server, body, ctype)
    assert r.status_code == 400
    assert "Content-Length" in r.json()["error"]


def test_not_dicom_alone_is_409_mixed_is_202(dw_server: DwServer) -> None:
    body, ctype = multipart([b"this is not a DICOM object at all" * 10])
    r = post(dw_server, body, ctype)
    assert r.status_code == 409
    failed = seq(r.json(), "00081198")
    assert [f["00081197"]["Value"] for f in failed] == [[0xC000]]
    assert seq(r.json(), "00081199") == []

    body, ctype = multipart([make_ct(), b"\x00" * 400, make_ct()])
    r = post(dw_server, body, ctype)
    assert r.status_code == 202
    assert len(seq(r.json(), "00081199")) == 2
    assert len(seq(r.json(), "00081198")) == 1
    assert count(dw_server) == 2


def test_missing_identifying_uid_is_a900(dw_server: DwServer) -> None:
    ds = pydicom.dcmread(io.BytesIO(make_ct()))
    del ds.SeriesInstanceUID
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    body, ctype = multipart([buf.getvalue()])
    r = post(dw_server, body, ctype)
    assert r.status_code == 409
    item = seq(r.json(), "00081198")[0]
    assert item["00081197"]["Value"] == [0xA900]
    assert item["00081155"]["Value"] == [ds.SOPInstanceUID]


def test_duplicates(dw_server: DwServer) -> None:
    sop = generate_uid()
    first = make_ct(sop=sop, seed=1)
    body, ctype = multipart([first])
    assert post(dw_server, body, ctype).status_code == 200
    assert post(dw_server, body, ctype).status_code == 200  # identical content again: success
    body, ctype = multipart([make_ct(sop=sop, seed=2)])  # same UID, different content, policy reject
    r = post(dw_server, body, ctype)
    assert r.status_code == 409
    assert seq(r.json(), "00081198")[0]["00081197"]["Value"] == [0x0111]
    assert count(dw_server) == 1


def test_same_data_set_in_other_bytes_is_success_and_a_modified_one_fails(dw_server: DwServer) -> None:
    """Issue #10: another File Meta or implicit VR is the same data set (200, listed as stored); another Patient's
    Name under the same SOP Instance UID is a failure (0x0111) with its reason in Error Comment, 409 alone."""
    sop = generate_uid()
    first = make_ct(sop=sop)
    assert post(dw_server, *multipart([first])).status_code == 200
    ds = pydicom.dcmread(io.BytesIO(first))
    ds.file_meta.SourceApplicationEntityTitle = "OTHERAE"
    ds.file_meta.TransferSyntaxUID = pydicom.uid.ImplicitVRLittleEndian
    implicit = io.BytesIO()
    ds.save_as(implicit, enforce_file_format=True)
    r = post(dw_server, *multipart([implicit.getvalue()]))
    assert r.status_code == 200, r.text
    assert seq(r.json(), "00081199")[0]["00081155"]["Value"] == [sop] and "00081198" not in r.json()
    ds.PatientName = "Other^Patient"
    modified = io.BytesIO()
    ds.save_as(modified, enforce_file_format=True)
    r = post(dw_server, *multipart([modified.getvalue()]))
    assert r.status_code == 409
    failed = seq(r.json(), "00081198")[0]
    assert failed["00081197"]["Value"] == [0x0111] and failed["00081155"]["Value"] == [sop]
    assert failed["00000902"]["Value"] == ["a different object with this SOP Instance UID is already stored"]
    assert count(dw_server) == 1


def test_replaced_duplicate_is_a_warning(make_dw_server: Callable[..., DwServer]) -> None:
    server = make_dw_server(duplicate_policy="replace")
    sop = generate_uid()
    assert post(server, *multipart([make_ct(sop=sop, seed=1)])).status_code == 200
    r = post(server, *multipart([make_ct(sop=sop, seed=2)]))
    assert r.status_code == 202
    assert seq(r.json(), "00081199")[0]["00081196"]["Value"] == [0xB000]


def test_upload_limit_is_413(make_dw_server: Callable[..., DwServer]) -> None:
    server = make_dw_server(max_upload_bytes=20_000)
    body, ctype = multipart([make_ct(rows=128, columns=128)])
    r = post(server, body, ctype)
    assert r.status_code == 413

    def chunks() -> Iterator[bytes]:
        for i in range(0, len(body), 4096):
            yield body[i:i + 4096]

    r = httpx.post(server.dicomweb_url + "/studies", content=chunks(), headers={"Content-Type": ctype})
    assert r.status_code == 413
    assert post(server, *multipart([make_ct()])).status_code == 200
    assert count(server) == 1


def test_short_body_with_huge_content_length_does_not_hurt_the_server(dw_server: DwServer) -> None:
    host, port = dw_server.base_url.removeprefix("http://").split(":")
    data, ctype = multipart([make_ct()], close=False)
    head = (f"POST /dicom-web/studies HTTP/1.1\r\nHost: {host}\r\nContent-Type: {ctype}\r\n"
            f"Content-Length: {50 * 1024**3}\r\n\r\n").encode()
    with socket.create_connection((host, int(port)), timeout=10) as s:
        s.sendall(head + data)
    # The client went away mid-body; the server drops that request and keeps answering others.
    assert httpx.get(dw_server.dicomweb_url + "/studies").status_code == 200
    assert post(dw_server, *multipart([make_ct()])).status_code == 200


def test_dicomweb_client_sees_failures(dw_server: DwServer) -> None:
    client = DICOMwebClient(url=dw_server.dicomweb_url)
    ds = pydicom.dcmread(io.BytesIO(make_ct()))
    with pytest.raises(HTTPError) as info:
        client.store_instances([ds], study_instance_uid=generate_uid())
    assert info.value.response is not None and info.value.response.status_code == 409


def test_failure_reasons_as_text_in_the_response_and_the_log(dw_server: DwServer,
                                                             caplog: pytest.LogCaptureFixture) -> None:
    """Issue #9: FailedSOPSequence carried only a FailureReason number; each failed instance now also has its reason
    as Error Comment text (read here by dicomweb-client, i.e. pydicom's DICOM JSON reader), and one INFO line per
    failed part says the same without UIDs."""
    caplog.set_level(logging.INFO, logger="dicomvault.dicomweb.stow")
    good = pydicom.dcmread(io.BytesIO(make_ct()))
    no_series = pydicom.dcmread(io.BytesIO(make_ct(PatientName="DOE^JANE")))
    del no_series.SeriesInstanceUID
    sop = generate_uid()
    assert post(dw_server, *multipart([make_ct(sop=sop, seed=1)])).status_code == 200
    conflicting = pydicom.dcmread(io.BytesIO(make_ct(sop=sop, seed=2)))
    client = DICOMwebClient(url=dw_server.dicomweb_url)
    result = client.store_instances([good, no_series, conflicting])  # 202: dicomweb-client returns the response
    failed = {item.ReferencedSOPInstanceUID: item for item in result.FailedSOPSequence}
    assert failed[no_series.SOPInstanceUID].FailureReason == 0xA900
    assert failed[no_series.SOPInstanceUID].ErrorComment == "SeriesInstanceUID is missing"
    assert failed[sop].FailureReason == 0x0111
    assert failed[sop].ErrorComment == "a different object with this SOP Instance UID is already stored"
    assert len(result.ReferencedSOPSequence) == 1
    lines = [r.getMessage() for r in caplog.records if r.name == "dicomvault.dicomweb.stow"]
    assert "STOW-RS part 2 of 3 not stored: SeriesInstanceUID is missing (Failure Reason 0xA900)" in lines
    assert ("STOW-RS part 3 of 3 not stored: a different object with this SOP Instance UID is already stored "
            "(Failure Reason 0x0111)") in lines
    everything = "\n".join(r.getMessage() for r in caplog.records if r.levelno >= logging.INFO)
    assert sop not in everything and no_series.SOPInstanceUID not in everything and "DOE^JANE" not in everything


def test_long_reasons_fit_an_error_comment(dw_server: DwServer) -> None:
    body, ctype = multipart([b"\x00" * 300, make_ct(rows=64, columns=64)[:3000]])  # not DICOM; truncated
    r = post(dw_server, body, ctype)
    assert r.status_code == 409
    comments = [item["00000902"]["Value"][0] for item in seq(r.json(), "00081198")]
    assert len(comments) == 2 and all(0 < len(c) <= 64 and "\\" not in c and c.isascii() for c in comments)
    assert comments[1].startswith("the object is truncated")
