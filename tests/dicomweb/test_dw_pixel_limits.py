"""Decoding amplification and damaged pixel data over DICOMweb (issue #9 defects 4 and 10): a small RLE object
describing an 8192 × 8192 frame is rendered with bounded memory, or refused above ``max_decoded_bytes`` before
decoding; an object of 200,000 one-pixel frames gets a frame index of a few characters and any frame in one read;
pixel data shorter than its header is refused at ingest with the reason, and an object stored with it (flag
policy, or before the check existed) answers frames, rendered images and thumbnails with a clear error."""

from __future__ import annotations

import io
from collections.abc import Callable

import httpx
import numpy as np
import pydicom
import pytest
from PIL import Image
from pydicom.uid import RLELossless
from sqlalchemy import create_engine, text

from dicomvault.domain.records import StoreOutcome
from tests.dicomweb.dw_live import DwServer
from tests.helpers import make_ct, peak_rss_growth, short_mr

MB = 1 << 20
SIDE = 8192


@pytest.fixture(scope="module")
def big_rle() -> bytes:
    """~2 MiB of RLE Lossless describing one 8192 × 8192 16-bit frame (128 MiB decoded)."""
    ds = pydicom.dcmread(io.BytesIO(make_ct(rows=16, columns=16)))
    ds.Rows = ds.Columns = SIDE
    arr = np.zeros((SIDE, SIDE), dtype=np.uint16)
    arr[:, : SIDE // 2] = 1000
    arr[SIDE // 4 : SIDE // 2, :] = 3000
    ds.WindowCenter, ds.WindowWidth = 2000, 4000
    ds.compress(RLELossless, arr, generate_instance_uid=False)
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    return buf.getvalue()


def _stow(server: DwServer, data: bytes) -> httpx.Response:
    return httpx.post(server.dicomweb_url + "/studies", content=data, headers={"Content-Type": "application/dicom"},
                      timeout=120)


def _url(server: DwServer, data: bytes) -> str:
    ds = pydicom.dcmread(io.BytesIO(data), stop_before_pixels=True)
    return (f"{server.dicomweb_url}/studies/{ds.StudyInstanceUID}/series/{ds.SeriesInstanceUID}"
            f"/instances/{ds.SOPInstanceUID}")


def test_big_rle_frame_renders_with_bounded_memory(dw_server: DwServer, big_rle: bytes) -> None:
    """Before: +1.6 GB per request (float64 copies of 64 Mpixels). Decoding the RLE frame itself takes about twice
    its 128 MiB; windowing, thumbnailing and encoding add little to it."""
    assert len(big_rle) < 4 * MB
    assert _stow(dw_server, big_rle).status_code == 200
    url = _url(dw_server, big_rle)
    for suffix, size in (("/thumbnail", (128, 128)), ("/rendered?viewport=512,512", (512, 512))):
        with peak_rss_growth() as rss:
            resp = httpx.get(url + suffix, headers={"Accept": "image/png"}, timeout=120)
        assert resp.status_code == 200, resp.text
        img = np.asarray(Image.open(io.BytesIO(resp.content)))
        assert img.shape == size[::-1]
        assert img[size[1] // 8, 0] > img[size[1] - 1, size[0] - 1]  # the windowed levels survive
        assert rss.growth < 400 * MB, f"{suffix}: memory grew by {rss.growth / MB:.0f} MB"


def test_decoded_size_above_the_limit_is_refused_before_decoding(
    make_dw_server: Callable[..., DwServer], big_rle: bytes
) -> None:
    server = make_dw_server(max_decoded_bytes=64 * MB)
    assert _stow(server, big_rle).status_code == 200
    url = _url(server, big_rle)
    for suffix, accept in (("/rendered", "image/jpeg"), ("/thumbnail", "image/jpeg"),
                           ("/frames/1", "application/octet-stream; transfer-syntax=1.2.840.10008.1.2.1")):
        with peak_rss_growth() as rss:
            resp = httpx.get(url + suffix, headers={"Accept": accept}, timeout=60)
        assert resp.status_code == 422, (suffix, resp.text)
        assert resp.json() == {"error": "decoding frame 1 of this instance needs 134217728 bytes in memory, "
                                        "more than max_decoded_bytes (67108864)", "status": 422}
        assert rss.growth < 64 * MB
    # The stored (compressed) frame is still served as is, and the whole object as stored.
    raw = httpx.get(url + "/frames/1", headers={"Accept": "image/dicom-rle; transfer-syntax=*"}, timeout=60)
    assert raw.status_code == 200
    as_stored = httpx.get(url, headers={"Accept": "application/dicom; transfer-syntax=*"}, timeout=60)
    assert as_stored.content == big_rle
    # Converting the whole object would need the decoded frame in memory: refused with the limit named ...
    converted = httpx.get(url, timeout=60, headers={
        "Accept": 'multipart/related; type="application/dicom"; transfer-syntax=1.2.840.10008.1.2.1'})
    assert converted.status_code == 422 and "max_decoded_bytes" in converted.json()["error"]
    # ... and the default representation falls back to the stored syntax, as for undecodable data.
    default = httpx.get(url, headers={"Accept": "application/dicom"}, timeout=60)
    assert default.status_code == 200 and default.content == big_rle


def _one_pixel_frames(count: int) -> bytes:
    ds = pydicom.dcmread(io.BytesIO(make_ct(rows=1, columns=1)))
    ds.BitsAllocated, ds.BitsStored, ds.HighBit = 8, 8, 7
    ds.NumberOfFrames = count
    ds.PixelData = (np.arange(count) % 251).astype(np.uint8).tobytes()
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    return buf.getvalue()


def test_many_frames_get_a_compact_index_and_any_frame_in_one_read(dw_server: DwServer) -> None:
    count = 200_000
    data = _one_pixel_frames(count)
    assert _stow(dw_server, data).status_code == 200
    sop = pydicom.dcmread(io.BytesIO(data), stop_before_pixels=True).SOPInstanceUID
    engine = create_engine(dw_server.settings.resolved_index_url)
    with engine.connect() as conn:
        stored = conn.execute(text("SELECT frame_index FROM instances WHERE sop_uid = :u"), {"u": sop}).scalar_one()
    engine.dispose()
    assert len(stored) < 64, stored  # was 2.6 MB of JSON for 200,000 frames
    url = _url(dw_server, data)
    for n in (1, 123_457, count):
        resp = httpx.get(url + f"/frames/{n}", headers={"Accept": "application/octet-stream; transfer-syntax=*"},
                         timeout=30)
        assert resp.status_code == 200 and resp.content == bytes([(n - 1) % 251])
    assert httpx.get(url + f"/frames/{count + 1}", timeout=30).status_code == 404


def test_short_pixel_data_is_refused_by_stow_with_the_reason(dw_server: DwServer) -> None:
    resp = _stow(dw_server, short_mr())
    assert resp.status_code == 409
    [item] = resp.json()["00081198"]["Value"]
    assert item["00081197"]["Value"] == [0xA900]
    assert item["00000902"]["Value"] == ["pixel data holds 50000 of the 131072 bytes the header describes"]
    assert dw_server.archive.index.stats().instances == 0
    # Odd-length 8-bit data with its padding byte, and 1-bit data packed into whole bytes, are complete.
    for rows, columns, bits in ((3, 3, 8), (3, 5, 1)):
        ds = pydicom.dcmread(io.BytesIO(make_ct(rows=rows, columns=columns)))
        ds.BitsAllocated, ds.BitsStored, ds.HighBit = bits, bits, bits - 1
        ds.PixelData = bytes((rows * columns * bits + 7) // 8) + (b"\0" if (rows * columns * bits + 7) // 8 % 2
                                                                  else b"")
        buf = io.BytesIO()
        ds.save_as(buf, enforce_file_format=True)
        assert _stow(dw_server, buf.getvalue()).status_code == 200, (rows, columns, bits)


DAMAGED_ANSWER = {"error": "pixel data holds 50000 of the 131072 bytes the header describes", "status": 422}


def _assert_damaged_answers(server: DwServer, data: bytes) -> None:
    url = _url(server, data)
    for suffix, accept in (("/rendered", "image/jpeg"), ("/thumbnail", "image/jpeg"),
                           ("/frames/1", "application/octet-stream; transfer-syntax=*"),
                           ("/frames/1", "application/octet-stream; transfer-syntax=1.2.840.10008.1.2.1"),
                           ("/bulk/7FE00010", "application/octet-stream")):
        resp = httpx.get(url + suffix, headers={"Accept": accept}, timeout=30)
        assert (resp.status_code, resp.json()) == (422, DAMAGED_ANSWER), suffix
    converted = httpx.get(url, timeout=30, headers={
        "Accept": 'multipart/related; type="application/dicom"; transfer-syntax=1.2.840.10008.1.2'})
    assert (converted.status_code, converted.json()) == (422, DAMAGED_ANSWER)
    ds = pydicom.dcmread(io.BytesIO(data), stop_before_pixels=True)
    wado = httpx.get(server.base_url + "/wado", timeout=30, params={
        "requestType": "WADO", "studyUID": ds.StudyInstanceUID, "seriesUID": ds.SeriesInstanceUID,
        "objectUID": ds.SOPInstanceUID})
    assert (wado.status_code, wado.json()) == (422, DAMAGED_ANSWER)
    # The object itself is still retrievable as it was received.
    stored = httpx.get(url, headers={"Accept": "application/dicom; transfer-syntax=*"}, timeout=30)
    assert stored.status_code == 200 and stored.content == data


def test_flag_policy_stores_with_a_warning_and_retrieval_names_the_problem(
    make_dw_server: Callable[..., DwServer]
) -> None:
    server = make_dw_server(pixel_length_policy="accept-and-flag")
    data = short_mr()
    resp = _stow(server, data)
    assert resp.status_code == 202
    [item] = resp.json()["00081199"]["Value"]
    assert item["00081196"]["Value"] == [0xB007]
    assert item["00000902"]["Value"] == [DAMAGED_ANSWER["error"]]
    sop = pydicom.dcmread(io.BytesIO(data), stop_before_pixels=True).SOPInstanceUID
    [record] = server.archive.retrieve.locate(sop_uids=[sop])
    assert record.pixel_problem == DAMAGED_ANSWER["error"]
    _assert_damaged_answers(server, data)


def test_object_stored_before_the_check_answers_a_clear_error(dw_server: DwServer,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    """Indexed the way ingest did before this check (no flag, no frame index): the problem is found in the
    object when it is asked for."""
    from dicomvault.services import header

    monkeypatch.setattr(header, "pixel_length_problem", lambda ds, length: None)
    data = short_mr()
    assert dw_server.archive.ingest.ingest(io.BytesIO(data), source="old").outcome == StoreOutcome.STORED
    monkeypatch.undo()
    _assert_damaged_answers(dw_server, data)
