"""WADO-URI (``/wado``): application/dicom, image/jpeg (default), image/png, frame/window/size parameters, and
400 JSON for missing or malformed parameters."""

from __future__ import annotations

import io
from collections.abc import Iterator

import httpx
import numpy as np
import pydicom
import pytest
from PIL import Image

from dicomvault.domain.records import InstanceRecord
from dicomvault.settings import Settings
from tests.dicomweb.dw_live import DwServer, running
from tests.dicomweb.dw_wado_support import DATA, multiframe_native, restamp, store


@pytest.fixture(scope="module")
def server(dw_module_settings: Settings) -> Iterator[DwServer]:
    with running(dw_module_settings) as srv:
        yield srv


@pytest.fixture(scope="module")
def objects(server: DwServer) -> dict[str, tuple[bytes, InstanceRecord]]:
    out = {}
    for name in ("CT_small.dcm", "MR_small_RLE.dcm", "test-SR.dcm", "rtplan.dcm"):
        data = restamp(DATA / name)
        out[name] = (data, store(server.archive, data))
    data = multiframe_native(4, 20, 30)
    out["mf"] = (data, store(server.archive, data))
    return out


def _wado(server: DwServer, rec: InstanceRecord | None, **params: str) -> httpx.Response:
    query = {"requestType": "WADO"}
    if rec is not None:
        query |= {"studyUID": rec.study_uid, "seriesUID": rec.series_uid, "objectUID": rec.sop_uid}
    query |= params
    return httpx.get(server.base_url + "/wado", params={k: v for k, v in query.items() if v is not None}, timeout=30)


def test_application_dicom(server: DwServer, objects) -> None:
    data, rec = objects["MR_small_RLE.dcm"]
    resp = _wado(server, rec, contentType="application/dicom", transferSyntax="1.2.840.10008.1.2.5")
    assert resp.status_code == 200 and resp.headers["content-type"].startswith("application/dicom")
    assert resp.content == data
    default = _wado(server, rec, contentType="application/dicom")
    ds = pydicom.dcmread(io.BytesIO(default.content))
    assert ds.file_meta.TransferSyntaxUID == "1.2.840.10008.1.2.1"
    assert np.array_equal(ds.pixel_array, pydicom.dcmread(io.BytesIO(data)).pixel_array)
    _, sr = objects["test-SR.dcm"]
    resp = _wado(server, sr)  # no pixel data: application/dicom is the default
    assert resp.headers["content-type"].startswith("application/dicom")
    assert pydicom.dcmread(io.BytesIO(resp.content)).SOPInstanceUID == sr.sop_uid
    assert _wado(server, rec, contentType="application/dicom", transferSyntax="1.2.840.10008.1.2.4.50"
                 ).status_code == 406


def test_jpeg_is_the_default_and_png_is_offered(server: DwServer, objects) -> None:
    _, rec = objects["CT_small.dcm"]
    resp = _wado(server, rec)
    assert resp.headers["content-type"] == "image/jpeg"
    img = Image.open(io.BytesIO(resp.content))
    assert img.format == "JPEG" and img.size == (128, 128)
    png = Image.open(io.BytesIO(_wado(server, rec, contentType="image/png").content))
    assert png.format == "PNG"
    assert _wado(server, rec, contentType="image/gif").status_code == 406


def test_image_parameters(server: DwServer, objects) -> None:
    _, rec = objects["mf"]
    small = Image.open(io.BytesIO(_wado(server, rec, rows="10").content))
    assert small.size == (15, 10)
    frames = [np.asarray(Image.open(io.BytesIO(_wado(server, rec, contentType="image/png", frameNumber=n).content)))
              for n in ("1", "4")]
    assert not np.array_equal(*frames)
    _, ct = objects["CT_small.dcm"]
    a = _wado(server, ct, contentType="image/png", windowCenter="40", windowWidth="80").content
    b = _wado(server, ct, contentType="image/png", windowCenter="400", windowWidth="2000").content
    assert a != b
    assert _wado(server, rec, frameNumber="5").status_code == 400


def test_bad_requests_are_400_json(server: DwServer, objects) -> None:
    _, rec = objects["CT_small.dcm"]
    for params in ({"requestType": "WADOX"}, {"objectUID": ""}, {"frameNumber": "x"}, {"windowCenter": "40"},
                   {"rows": "-3"}, {"imageQuality": "300"}):
        resp = _wado(server, rec, **params)
        assert resp.status_code == 400, params
        assert resp.json()["status"] == 400 and resp.json()["error"]
    assert httpx.get(server.base_url + "/wado").status_code == 400
    resp = _wado(server, None, studyUID=rec.study_uid, seriesUID=rec.series_uid, objectUID="1.2.3.4")
    assert resp.status_code == 404
