"""Deflated Explicit VR Little Endian over DICOMweb (issue #9 defect 3, issue #10): a deflate bomb sent by STOW-RS is
refused with a reason while the server's memory stays flat; legitimate deflated objects are stored and served as
stored, as Explicit VR Little Endian (streamed), frame by frame and as bulk data, each equal to pydicom's own
inflation of the object."""

from __future__ import annotations

import hashlib
import io
import zlib
from collections.abc import Callable
from pathlib import Path

import httpx
import pydicom
import pytest
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset
from pydicom.uid import DeflatedExplicitVRLittleEndian, ExplicitVRLittleEndian, generate_uid

from dicomvault.dimse.server import DimseServer
from dicomvault.services.part10 import dataset_offset
from tests.dicomweb.dw_live import DwServer
from tests.dicomweb.dw_wado_support import DATA, parse_multipart
from tests.dimse.conftest import run
from tests.helpers import deflate_bomb, deflated, make_ct, peak_rss_growth

MB = 1 << 20
DICOM_PART = 'multipart/related; type="application/dicom"'


SOP, STUDY = generate_uid(), generate_uid()


@pytest.fixture(scope="module")
def bomb() -> bytes:
    """The issue's probe: ~255 KiB that inflate to 256 MiB."""
    return deflate_bomb(256 * MB, sop=SOP, study=STUDY)


def _stow(server: DwServer, data: bytes, study: str | None = None) -> httpx.Response:
    url = server.dicomweb_url + "/studies" + (f"/{study}" if study else "")
    return httpx.post(url, content=data, headers={"Content-Type": "application/dicom"}, timeout=120)


def _failure(resp: httpx.Response) -> dict:  # type: ignore[type-arg]
    [item] = resp.json()["00081198"]["Value"]
    return item  # type: ignore[no-any-return]


def _url(server: DwServer, ds: Dataset) -> str:
    return (f"{server.dicomweb_url}/studies/{ds.StudyInstanceUID}/series/{ds.SeriesInstanceUID}"
            f"/instances/{ds.SOPInstanceUID}")


def _spool_files(server: DwServer) -> list[Path]:
    spool = server.settings.data_dir / "spool"
    return list(spool.iterdir()) if spool.exists() else []


def test_deflate_bomb_by_stow_is_refused_with_bounded_memory(dw_server: DwServer, bomb: bytes) -> None:
    assert len(bomb) < 300 * 1024
    for study in (None, STUDY):  # also the target-study check, which reads the header
        with peak_rss_growth() as rss:
            resp = _stow(dw_server, bomb, study)
        assert resp.status_code == 409, resp.text  # a permanent refusal: not 503 "retry later"
        item = _failure(resp)
        assert item["00081197"]["Value"] == [0xA701]
        assert "max_inflate_ratio" in item["00000902"]["Value"][0]
        assert item["00081155"]["Value"] == [SOP]
        assert rss.growth < 150 * MB, f"server memory grew by {rss.growth / MB:.0f} MB"
    assert dw_server.archive.index.stats().instances == 0
    assert _spool_files(dw_server) == []


def test_object_inflating_beyond_max_inflated_bytes_is_refused(make_dw_server: Callable[..., DwServer]) -> None:
    server = make_dw_server(max_inflated_bytes=8 * MB, max_inflate_ratio=0)
    resp = _stow(server, deflate_bomb(16 * MB))
    assert resp.status_code == 409
    item = _failure(resp)
    assert item["00081197"]["Value"] == [0xA701]
    assert "max_inflated_bytes (8388608 bytes)" in item["00000902"]["Value"][0]
    # A cut deflate stream is not a DICOM object that can be understood.
    resp = _stow(server, deflate_bomb(MB)[:-200])
    assert resp.status_code == 409 and _failure(resp)["00081197"]["Value"] == [0xC000]


@pytest.fixture
def legit(dw_server: DwServer) -> list[bytes]:
    """pydicom's image_dfl.dcm and a generated 3-frame 1024 × 1024 16-bit CT (6 MiB inflated), both deflated,
    with a 4 KiB private value and a nested one (bulk data)."""
    ct = pydicom.dcmread(io.BytesIO(make_ct(rows=1024, columns=1024, frames=3, seed=3)))
    ct.add_new(0x00091010, "LO", "DICOMVAULT TEST")
    ct.add_new(0x00091011, "OB", bytes(range(256)) * 16)
    item = Dataset()
    item.add_new(0x00091010, "LO", "DICOMVAULT TEST")
    item.add_new(0x00091011, "OB", bytes(reversed(range(256))) * 8)
    ct.add_new(0x00091012, "SQ", [item])
    buf = io.BytesIO()
    ct.save_as(buf, enforce_file_format=True)
    objects = [(DATA / "image_dfl.dcm").read_bytes(), deflated(buf.getvalue())]
    for data in objects:
        assert pydicom.dcmread(io.BytesIO(data)).file_meta.TransferSyntaxUID == DeflatedExplicitVRLittleEndian
        assert _stow(dw_server, data).status_code == 200
    return objects


def test_legitimate_deflated_objects_are_served_as_stored_and_as_explicit_le(
    dw_server: DwServer, legit: list[bytes]
) -> None:
    for data in legit:
        original = pydicom.dcmread(io.BytesIO(data))  # pydicom's own inflation
        url = _url(dw_server, original)
        stored = httpx.get(url, headers={"Accept": f"{DICOM_PART}; transfer-syntax=*"}, timeout=60)
        assert parse_multipart(stored)[0][1] == data
        for resp in (httpx.get(url, headers={"Accept": DICOM_PART}, timeout=60),
                     httpx.get(dw_server.base_url + "/wado", timeout=60, params={
                         "requestType": "WADO", "contentType": "application/dicom", "studyUID":
                         original.StudyInstanceUID, "seriesUID": original.SeriesInstanceUID,
                         "objectUID": original.SOPInstanceUID})):
            assert resp.status_code == 200
            body = parse_multipart(resp)[0][1] if resp.headers["content-type"].startswith("multipart") \
                else resp.content
            got = pydicom.dcmread(io.BytesIO(body))
            assert got.file_meta.TransferSyntaxUID == ExplicitVRLittleEndian
            assert got == original  # every data set element
            # Inflating is the transcode: the data set bytes are exactly the inflated stream.
            meta_end = dataset_offset(data[:65536])
            assert body[dataset_offset(body[:65536]):] == zlib.decompress(data[meta_end:], -zlib.MAX_WBITS)


def test_deflated_frames_rendered_and_bulk_data(dw_server: DwServer, legit: list[bytes]) -> None:
    """Frames and rendered images come from the inflated data set; every bulk attribute in the metadata
    (Pixel Data included, issue #10) has a BulkDataURI answering the inflated value."""
    for data in legit:
        original = pydicom.dcmread(io.BytesIO(data))
        url = _url(dw_server, original)
        meta = httpx.get(url + "/metadata", timeout=30).json()[0]
        assert meta["7FE00010"]["BulkDataURI"] == url + "/bulk/7FE00010"
        pixels = httpx.get(meta["7FE00010"]["BulkDataURI"], headers={"Accept": "application/octet-stream"},
                           timeout=60)
        assert pixels.status_code == 200 and pixels.content == original.PixelData
        frames = int(original.get("NumberOfFrames", 1) or 1)
        size = len(original.PixelData) // frames
        frame = httpx.get(url + f"/frames/{frames}", timeout=60,
                          headers={"Accept": "application/octet-stream; transfer-syntax=*"})
        assert frame.status_code == 200 and frame.content == original.PixelData[(frames - 1) * size:]
        rendered = httpx.get(url + "/rendered", headers={"Accept": "image/png"}, timeout=60)
        assert rendered.status_code == 200 and rendered.content.startswith(b"\x89PNG")
    meta = httpx.get(_url(dw_server, pydicom.dcmread(io.BytesIO(legit[1]))) + "/metadata", timeout=30).json()[0]
    top = httpx.get(meta["00091011"]["BulkDataURI"], headers={"Accept": "application/octet-stream"}, timeout=30)
    assert top.content == bytes(range(256)) * 16
    nested_uri = meta["00091012"]["Value"][0]["00091011"]["BulkDataURI"]
    nested = httpx.get(nested_uri, headers={"Accept": "application/octet-stream"}, timeout=30)
    assert nested.content == bytes(reversed(range(256))) * 8
    ranged = httpx.get(meta["00091011"]["BulkDataURI"], headers={"Range": "bytes=4000-"}, timeout=30)
    assert ranged.status_code == 206 and ranged.content == (bytes(range(256)) * 16)[4000:]


def _stream_digest(resp: httpx.Response) -> tuple[int, str]:
    digest, n = hashlib.sha256(), 0
    for chunk in resp.iter_bytes():
        digest.update(chunk)
        n += len(chunk)
    return n, digest.hexdigest()


def test_large_deflated_object_streams_as_explicit_le(make_dw_server: Callable[..., DwServer]) -> None:
    """A highly compressible object admitted by the settings (ratio check off) is retrieved as Explicit VR Little
    Endian with bounded memory: 128 MiB inflated on the fly (before: the whole data set and its copy in memory)."""
    server = make_dw_server(max_inflate_ratio=0)
    sop = generate_uid()
    data = deflate_bomb(128 * MB, sop=sop)
    assert _stow(server, data).status_code == 200
    [record] = server.archive.retrieve.locate(sop_uids=[sop])
    url = f"{server.dicomweb_url}/studies/{record.study_uid}/series/{record.series_uid}/instances/{sop}"
    with peak_rss_growth() as rss, httpx.stream("GET", url, headers={"Accept": "application/dicom"},
                                                 timeout=120) as resp:
        assert resp.status_code == 200
        assert "transfer-syntax=1.2.840.10008.1.2.1" in resp.headers["content-type"]
        size, _ = _stream_digest(resp)
    assert size > 128 * MB
    assert rss.growth < 150 * MB, f"server memory grew by {rss.growth / MB:.0f} MB"




@pytest.mark.parametrize("how", ["stow", "storescu", "storescu-deflated"])
def test_pydicom_deflated_image_metadata_has_pixel_data_bulk_uri(dw_server: DwServer, how: str) -> None:
    """pydicom's image_dfl.dcm stored by STOW-RS or C-STORE: every bulk attribute of its metadata has a BulkDataURI
    (Pixel Data included, issue #10) and the URI answers the inflated value."""
    path = Path(get_testdata_file("image_dfl.dcm"))
    original = pydicom.dcmread(path)
    if how == "stow":
        assert _stow(dw_server, path.read_bytes()).status_code == 200
    else:
        dimse = DimseServer(dw_server.archive)
        dimse.start()
        try:
            opts = ["-xd"] if how == "storescu-deflated" else []
            r = run(["storescu", "-v", *opts, "-aec", "DICOMVAULT", "127.0.0.1", str(dimse.port), str(path)])
        finally:
            dimse.stop()
        assert r.returncode == 0, r.stderr
    url = _url(dw_server, original)
    meta = httpx.get(url + "/metadata", timeout=30).json()[0]
    assert meta["7FE00010"]["BulkDataURI"] == url + "/bulk/7FE00010"
    for tag, elem in meta.items():
        if elem.get("vr") in ("OB", "OW", "OF", "OD", "OL", "OV", "UN"):
            assert "BulkDataURI" in elem or "InlineBinary" in elem, tag
    pixels = httpx.get(meta["7FE00010"]["BulkDataURI"], headers={"Accept": "application/octet-stream"}, timeout=60)
    assert pixels.status_code == 200 and pixels.content == original.PixelData
