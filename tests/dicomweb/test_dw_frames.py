"""WADO-RS frames: stored-syntax frames byte-identical to pydicom's extraction, decoded frames equal to
``pixel_array``, media types per transfer syntax, frame list validation, a 200-frame object."""

from __future__ import annotations

import io
import time
from collections.abc import Iterator

import httpx
import numpy as np
import pydicom
import pytest
from dicomweb_client import DICOMwebClient
from pydicom.encaps import generate_frames
from pydicom.uid import JPEG2000Lossless, JPEGLSLossless, RLELossless

from dicomvault.domain.records import InstanceRecord
from dicomvault.settings import Settings
from tests.dicomweb.dw_live import DwServer, running
from tests.dicomweb.dw_wado_support import DATA, instance_url, multiframe_native, parse_multipart, restamp, store

OHIF_ACCEPT = "multipart/related; type=application/octet-stream; transfer-syntax=*"
NATIVE_FILES = ("rtdose.dcm", "SC_rgb_small_odd.dcm", "MR_small_implicit.dcm", "SC_ybr_full_422_uncompressed.dcm",
                "liver_1frame.dcm", "image_dfl.dcm",
                "MR_small_bigendian.dcm")
ENCAPSULATED_FILES = {
    "SC_rgb_rle_2frame.dcm": "image/dicom-rle", "SC_rgb_rle_16bit_2frame.dcm": "image/dicom-rle",
    "rtdose_rle.dcm": "image/dicom-rle", "examples_ybr_color.dcm": "image/jpeg",
    "MR_small_jp2klossless.dcm": "image/jp2", "MR_small_jpeg_ls_lossless.dcm": "image/jls",
    "SC_rgb_jpeg_gdcm.dcm": "image/jpeg",
}


def _compressed_multiframe(syntax: str, frames: int = 5) -> bytes:
    ds = pydicom.dcmread(io.BytesIO(multiframe_native(frames, 32, 48, seed=7)))
    ds.compress(syntax)
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    return buf.getvalue()


@pytest.fixture(scope="module")
def server(dw_module_settings: Settings) -> Iterator[DwServer]:
    with running(dw_module_settings) as srv:
        yield srv


@pytest.fixture(scope="module")
def objects(server: DwServer) -> dict[str, tuple[bytes, InstanceRecord]]:
    out: dict[str, tuple[bytes, InstanceRecord]] = {}
    for name in (*NATIVE_FILES, *ENCAPSULATED_FILES):
        data = restamp(DATA / name)
        out[name] = (data, store(server.archive, data))
    for label, syntax in (("gen_jls", JPEGLSLossless), ("gen_j2k", JPEG2000Lossless), ("gen_rle", RLELossless)):
        data = _compressed_multiframe(syntax)
        out[label] = (data, store(server.archive, data))
    data = multiframe_native(200, 256, 256)
    out["big"] = (data, store(server.archive, data))
    return out


def _frames(server: DwServer, rec: InstanceRecord, numbers: list[int], accept: str = OHIF_ACCEPT
            ) -> list[tuple[str, bytes]]:
    url = instance_url(server.dicomweb_url, rec) + "/frames/" + ",".join(map(str, numbers))
    resp = httpx.get(url, headers={"Accept": accept}, timeout=60)
    assert resp.status_code == 200, resp.text
    return parse_multipart(resp)


def _native_frames(ds: pydicom.Dataset) -> list[bytes]:
    arr = ds.pixel_array
    n = int(ds.get("NumberOfFrames", 1) or 1)
    frames = arr if n > 1 else arr[None]
    if ds.file_meta.TransferSyntaxUID != "1.2.840.10008.1.2.2" and ds.PhotometricInterpretation != "YBR_FULL_422":
        size = len(ds.PixelData) // n if len(ds.PixelData) % n == 0 else frames[0].nbytes
        return [bytes(ds.PixelData[i * size:(i + 1) * size])[:frames[0].nbytes] for i in range(n)]
    return [f.astype(f.dtype.newbyteorder("<")).tobytes() for f in frames]


def test_native_frames_are_the_stored_bytes(server: DwServer, objects) -> None:
    for name in NATIVE_FILES:
        data, rec = objects[name]
        ds = pydicom.dcmread(io.BytesIO(data))
        expected = _native_frames(ds) if ds.PhotometricInterpretation != "YBR_FULL_422" else None
        n = int(ds.get("NumberOfFrames", 1) or 1)
        parts = _frames(server, rec, list(range(1, n + 1)))
        assert len(parts) == n
        for ct, _ in parts:
            assert ct == "application/octet-stream; transfer-syntax=1.2.840.10008.1.2.1", name
        if expected is not None:
            assert [body[:len(e)] for (_, body), e in zip(parts, expected, strict=True)] == expected, name
        else:  # YBR_FULL_422 native: 2 bytes per pixel pair, the stored bytes as they are
            assert parts[0][1] == bytes(ds.PixelData), name


def test_encapsulated_frames_match_pydicom_and_media_types(server: DwServer, objects) -> None:
    client = DICOMwebClient(server.dicomweb_url)
    for name, media in {**ENCAPSULATED_FILES, "gen_jls": "image/jls", "gen_j2k": "image/jp2",
                        "gen_rle": "image/dicom-rle"}.items():
        data, rec = objects[name]
        ds = pydicom.dcmread(io.BytesIO(data))
        n = int(ds.get("NumberOfFrames", 1) or 1)
        expected = [bytes(f) for f in generate_frames(ds.PixelData, number_of_frames=n)]
        parts = _frames(server, rec, list(range(1, n + 1)))
        assert [body for _, body in parts] == expected, name
        assert all(ct == f"{media}; transfer-syntax={rec.transfer_syntax_uid}" for ct, _ in parts), (name, parts[0][0])
        # dicomweb-client, asking for the stored media type explicitly
        got = client.retrieve_instance_frames(rec.study_uid, rec.series_uid, rec.sop_uid, [n],
                                              media_types=((media, rec.transfer_syntax_uid),))
        assert got == [expected[-1]], name


def test_decoded_frames_equal_pixel_array(server: DwServer, objects) -> None:
    accept = "multipart/related; type=application/octet-stream; transfer-syntax=1.2.840.10008.1.2.1"
    for name in ("SC_rgb_rle_2frame.dcm", "rtdose_rle.dcm", "gen_jls", "gen_j2k", "MR_small_jp2klossless.dcm"):
        data, rec = objects[name]
        ds = pydicom.dcmread(io.BytesIO(data))
        arr = ds.pixel_array
        n = int(ds.get("NumberOfFrames", 1) or 1)
        numbers = [1, n] if n > 1 else [1]
        parts = _frames(server, rec, numbers, accept)
        for (ct, body), k in zip(parts, numbers, strict=True):
            assert ct == "application/octet-stream; transfer-syntax=1.2.840.10008.1.2.1"
            frame = arr[k - 1] if n > 1 else arr
            assert body == frame.astype(frame.dtype.newbyteorder("<")).tobytes(), name


def test_default_accept_decodes_lossless_and_keeps_lossy(server: DwServer, objects) -> None:
    _, rle = objects["gen_rle"]
    (ct, _), = _frames(server, rle, [1], "multipart/related; type=application/octet-stream")
    assert ct.endswith("transfer-syntax=1.2.840.10008.1.2.1")
    _, jpeg = objects["examples_ybr_color.dcm"]
    resp = httpx.get(instance_url(server.dicomweb_url, jpeg) + "/frames/3")
    assert resp.status_code == 200
    assert parse_multipart(resp)[0][0].startswith("image/jpeg; transfer-syntax=1.2.840.10008.1.2.4.50")


def test_single_part_for_one_frame_with_bare_accept(server: DwServer, objects) -> None:
    data, rec = objects["gen_jls"]
    ds = pydicom.dcmread(io.BytesIO(data))
    second = bytes(list(generate_frames(ds.PixelData, number_of_frames=5))[1])
    resp = httpx.get(instance_url(server.dicomweb_url, rec) + "/frames/2", headers={"Accept": "image/jls"})
    assert resp.status_code == 200 and resp.headers["content-type"].startswith("image/jls")
    assert resp.content == second


def test_frame_list_order_and_errors(server: DwServer, objects) -> None:
    data, rec = objects["gen_rle"]
    ds = pydicom.dcmread(io.BytesIO(data))
    expected = [bytes(f) for f in generate_frames(ds.PixelData, number_of_frames=5)]
    parts = _frames(server, rec, [5, 1, 3])
    assert [b for _, b in parts] == [expected[4], expected[0], expected[2]]
    base = instance_url(server.dicomweb_url, rec) + "/frames/"
    for bad in ("a", "0", "1,,2", "-1", "1.5"):
        resp = httpx.get(base + bad, headers={"Accept": OHIF_ACCEPT})
        assert resp.status_code == 400, bad
        assert resp.json()["status"] == 400
    assert httpx.get(base + "6", headers={"Accept": OHIF_ACCEPT}).status_code == 404
    assert httpx.get(base + "1,99", headers={"Accept": OHIF_ACCEPT}).status_code == 404
    no_such = f"{server.dicomweb_url}/studies/{rec.study_uid}/series/{rec.series_uid}/instances/1.2.3/frames/1"
    assert httpx.get(no_such).status_code == 404


def test_unsatisfiable_frame_media_type_is_406(server: DwServer, objects) -> None:
    _, rec = objects["gen_rle"]
    url = instance_url(server.dicomweb_url, rec) + "/frames/1"
    resp = httpx.get(url, headers={"Accept": "multipart/related; type=image/jpeg"})
    assert resp.status_code == 406 and resp.json()["status"] == 406
    resp = httpx.get(url, headers={
        "Accept": "multipart/related; type=application/octet-stream; transfer-syntax=1.2.840.10008.1.2.4.50"})
    assert resp.status_code == 406


def test_big_multiframe_first_middle_last(server: DwServer, objects) -> None:
    data, rec = objects["big"]
    assert rec.number_of_frames == 200
    size = 256 * 256 * 2
    ds = pydicom.dcmread(io.BytesIO(data))
    pixels = bytes(ds.PixelData)
    url = instance_url(server.dicomweb_url, rec) + "/frames/"
    timings = {}
    with httpx.Client(timeout=30) as c:
        c.get(url + "1", headers={"Accept": OHIF_ACCEPT})
        for n in (1, 100, 200):
            t0 = time.perf_counter()
            resp = c.get(url + str(n), headers={"Accept": OHIF_ACCEPT})
            timings[n] = time.perf_counter() - t0
            (_, body), = parse_multipart(resp)
            assert body == pixels[(n - 1) * size:n * size]
            assert np.frombuffer(body, "<u2")[0] == n - 1
    assert max(timings.values()) < 1.0, timings
