"""Rendered resources and thumbnails: decodable JPEG/PNG of the right size and mode, window and viewport
parameters honoured, MONOCHROME1 inverted, colour objects rendered in RGB, non-images refused."""

from __future__ import annotations

import io
from collections.abc import Iterator

import httpx
import numpy as np
import pydicom
import pytest
from dicomweb_client import DICOMwebClient
from PIL import Image

from dicomvault.domain.records import InstanceRecord
from dicomvault.settings import Settings
from tests.dicomweb.dw_live import DwServer, running
from tests.dicomweb.dw_wado_support import DATA, instance_url, multiframe_native, parse_multipart, restamp, store
from tests.helpers import make_ct


@pytest.fixture(scope="module")
def server(dw_module_settings: Settings) -> Iterator[DwServer]:
    with running(dw_module_settings) as srv:
        yield srv


@pytest.fixture(scope="module")
def objects(server: DwServer) -> dict[str, InstanceRecord]:
    out = {name: store(server.archive, restamp(DATA / name)) for name in (
        "CT_small.dcm", "SC_rgb_jpeg_dcmtk.dcm", "examples_ybr_color.dcm", "SC_rgb_rle_2frame.dcm",
        "examples_palette.dcm", "MR_small_jp2klossless.dcm", "test-SR.dcm", "rtdose.dcm")}
    out["big"] = store(server.archive, multiframe_native(9, 40, 80))
    ramp = np.tile(np.arange(64, dtype=np.uint16) * 64, (32, 1))
    for photometric in ("MONOCHROME1", "MONOCHROME2"):
        ds = pydicom.dcmread(io.BytesIO(make_ct(rows=32, columns=64)))
        ds.PhotometricInterpretation = photometric
        ds.PixelData = ramp.tobytes()
        buf = io.BytesIO()
        ds.save_as(buf, enforce_file_format=True)
        out[photometric] = store(server.archive, buf.getvalue())
    return out


def _get(server: DwServer, rec: InstanceRecord, suffix: str, accept: str = "image/jpeg", **params: str
         ) -> httpx.Response:
    return httpx.get(instance_url(server.dicomweb_url, rec) + suffix, params=params, headers={"Accept": accept},
                     timeout=30)


def _image(resp: httpx.Response) -> Image.Image:
    assert resp.status_code == 200, resp.text
    img = Image.open(io.BytesIO(resp.content))
    img.load()
    return img


def test_rendered_instance_jpeg_and_png(server: DwServer, objects) -> None:
    rec = objects["CT_small.dcm"]
    client = DICOMwebClient(server.dicomweb_url)
    jpeg = Image.open(io.BytesIO(client.retrieve_instance_rendered(rec.study_uid, rec.series_uid, rec.sop_uid)))
    assert jpeg.format == "JPEG" and jpeg.size == (128, 128) and jpeg.mode == "L"
    png = _image(_get(server, rec, "/rendered", "image/png"))
    assert png.format == "PNG" and png.size == (128, 128)
    assert _get(server, rec, "/rendered", "application/pdf").status_code == 406


def test_window_changes_the_output(server: DwServer, objects) -> None:
    rec = objects["CT_small.dcm"]
    default = np.asarray(_image(_get(server, rec, "/rendered", "image/png")))
    narrow = np.asarray(_image(_get(server, rec, "/rendered", "image/png", window="40,80")))
    wide = np.asarray(_image(_get(server, rec, "/rendered", "image/png", window="40,4000,linear_exact")))
    sigmoid = np.asarray(_image(_get(server, rec, "/rendered", "image/png", window="40,400,sigmoid")))
    assert not np.array_equal(default, narrow) and not np.array_equal(narrow, wide)
    assert not np.array_equal(narrow, sigmoid)
    assert (narrow == 255).sum() > (wide == 255).sum()
    for bad in ("40", "a,b", "40,0", "40,80,cubic"):
        resp = _get(server, rec, "/rendered", window=bad)
        assert resp.status_code == 400 and resp.json()["status"] == 400, bad


def test_viewport_scales_and_crops(server: DwServer, objects) -> None:
    rec = objects["big"]  # 80 x 40
    assert _image(_get(server, rec, "/rendered", viewport="40,40")).size == (40, 20)
    assert _image(_get(server, rec, "/rendered", viewport="160,200")).size == (160, 80)
    assert _image(_get(server, rec, "/rendered", "image/png", viewport="20,20,0,0,40,40")).size == (20, 20)
    assert _get(server, rec, "/rendered", viewport="0,10").status_code == 400
    quality_low = _get(server, objects["CT_small.dcm"], "/rendered", quality="5").content
    quality_high = _get(server, objects["CT_small.dcm"], "/rendered", quality="95").content
    assert len(quality_low) < len(quality_high)
    assert _get(server, rec, "/rendered", quality="0").status_code == 400


def test_monochrome1_is_inverted(server: DwServer, objects) -> None:
    one = np.asarray(_image(_get(server, objects["MONOCHROME1"], "/rendered", "image/png")))
    two = np.asarray(_image(_get(server, objects["MONOCHROME2"], "/rendered", "image/png")))
    assert two[0, 0] < two[0, -1] and one[0, 0] > one[0, -1]
    assert np.array_equal(one.astype(int), 255 - two.astype(int))


def test_colour_objects_render_rgb(server: DwServer, objects) -> None:
    for name in ("SC_rgb_jpeg_dcmtk.dcm", "examples_ybr_color.dcm", "SC_rgb_rle_2frame.dcm", "examples_palette.dcm"):
        img = _image(_get(server, objects[name], "/rendered", "image/png"))
        ds = pydicom.dcmread(DATA / name, stop_before_pixels=True)
        assert img.mode == "RGB" and img.size == (ds.Columns, ds.Rows), name
    # a YBR JPEG rendered close to pydicom's own RGB conversion
    ds = pydicom.dcmread(DATA / "SC_rgb_jpeg_dcmtk.dcm")
    ours = np.asarray(_image(_get(server, objects["SC_rgb_jpeg_dcmtk.dcm"], "/rendered", "image/png"))).astype(int)
    assert np.abs(ours - ds.pixel_array.astype(int)).mean() < 2


def test_frames_rendered_pick_the_frame(server: DwServer, objects) -> None:
    rec = objects["big"]
    f1 = np.asarray(_image(_get(server, rec, "/frames/1/rendered", "image/png")))
    f9 = np.asarray(_image(_get(server, rec, "/frames/9/rendered", "image/png")))
    assert f1.shape == (40, 80) and not np.array_equal(f1, f9)
    resp = _get(server, rec, "/frames/1,2/rendered", "image/png")
    assert [ct for ct, _ in parse_multipart(resp)] == ["image/png", "image/png"]
    assert _get(server, rec, "/frames/10/rendered").status_code == 404
    assert _get(server, rec, "/frames/x/rendered").status_code == 400
    dose = objects["rtdose.dcm"]
    client = DICOMwebClient(server.dicomweb_url)
    jpeg = client.retrieve_instance_frames_rendered(dose.study_uid, dose.series_uid, dose.sop_uid, [15])
    assert Image.open(io.BytesIO(jpeg)).size == (10, 10)


def test_thumbnails_at_every_level(server: DwServer, objects) -> None:
    rec = objects["CT_small.dcm"]
    base = server.dicomweb_url
    for url in (f"{base}/studies/{rec.study_uid}/thumbnail", f"{base}/studies/{rec.study_uid}/series/{rec.series_uid}"
                "/thumbnail", instance_url(base, rec) + "/thumbnail", instance_url(base, rec) + "/frames/1/thumbnail",
                f"{base}/studies/{rec.study_uid}/rendered", f"{base}/studies/{rec.study_uid}/series/{rec.series_uid}"
                "/rendered"):
        img = _image(httpx.get(url, timeout=30))
        assert img.format == "JPEG" and max(img.size) <= 128, url
    big = _image(_get(server, objects["MR_small_jp2klossless.dcm"], "/thumbnail", viewport="32,32"))
    assert big.size == (32, 32)
    # the thumbnail of a multi-frame instance is its middle frame
    thumb = np.asarray(_image(_get(server, objects["big"], "/thumbnail", "image/png")))
    middle = np.asarray(_image(_get(server, objects["big"], "/frames/5/thumbnail", "image/png")))
    assert np.array_equal(thumb, middle)


def test_non_image_objects_are_refused(server: DwServer, objects) -> None:
    rec = objects["test-SR.dcm"]
    for suffix in ("/rendered", "/thumbnail"):
        resp = _get(server, rec, suffix)
        assert resp.status_code == 406 and resp.json()["status"] == 406
    resp = httpx.get(f"{server.dicomweb_url}/studies/{rec.study_uid}/rendered")
    assert resp.status_code == 406
