"""Compression at rest over DICOMweb, as a PACS administrator checks it after turning compression on: what
dicomweb-client and plain HTTP (httpx) get from WADO-RS and WADO-URI once instances are stored JPEG-LS lossless.

Every request of a viewer or a client that asks for no particular syntax is answered exactly as before the
instances were compressed (recorded before, compared after: instances, series, studies, frames, bulk data and its
ranges, metadata, rendered images and thumbnails, WADO-URI), and that answer is the original: the Part 10 file as
received for an explicit VR original, its frames and its Pixel Data value byte for byte. A client that asks for
``transfer-syntax=*``, for JPEG-LS by UID or for ``image/jls`` frames gets the stored object and codestreams.

One module-scoped server (on the backends the environment selects: a database and a bucket of its own on
PostgreSQL + S3) holds one study: an explicit VR CT, a 5-frame explicit VR CT, an implicit VR CT, a 2-frame RGB
secondary capture stored colour-by-plane, all compressed at rest, and an 8×8 CT left as it is (too small to be worth
it). An 8-bit object whose Pixel Data has an odd length (and so a pad byte) is tested on its own, and so are
instances compressed while a retrieval that selected them runs (``compress_on_ingest`` works on studies minutes old).
"""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import numpy as np
import pydicom
import pytest
from dicomweb_client import DICOMwebClient
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.encaps import generate_frames
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian, JPEGLSLossless, generate_uid

from dicomvault.domain.records import InstanceRecord
from dicomvault.services.compression import CompressionWork
from dicomvault.settings import Settings
from tests.compression_support import locate_then_compress
from tests.dicomweb.dw_live import DwServer, running
from tests.dicomweb.dw_wado_support import parse_multipart
from tests.helpers import make_ct

JLS = str(JPEGLSLossless)
EXPLICIT = str(ExplicitVRLittleEndian)
IMPLICIT = str(ImplicitVRLittleEndian)
DICOM_ANY = 'multipart/related; type="application/dicom"'
OCTET = "multipart/related; type=application/octet-stream"
COMPRESSED = ("explicit", "multiframe", "implicit", "rgb")


# -- the study ---------------------------------------------------------------------------------------------------


def _implicit(data: bytes) -> bytes:
    ds = pydicom.dcmread(io.BytesIO(data))
    ds.file_meta.TransferSyntaxUID = ImplicitVRLittleEndian
    out = io.BytesIO()
    ds.save_as(out, enforce_file_format=True, implicit_vr=True, little_endian=True)
    return out.getvalue()


def _rgb_planar(study: str, series: str, *, rows: int = 17, columns: int = 19, frames: int = 2) -> bytes:
    """An 8-bit RGB multi-frame secondary capture, colour-by-plane (PlanarConfiguration 1), of odd-sized frames."""
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.7.4"  # MF true colour SC
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    ds.StudyInstanceUID, ds.SeriesInstanceUID = study, series
    ds.PatientID, ds.PatientName, ds.Modality, ds.InstanceNumber = "PID-1", "Doe^John", "OT", 9
    ds.Rows, ds.Columns, ds.NumberOfFrames = rows, columns, frames
    ds.SamplesPerPixel, ds.PhotometricInterpretation, ds.PlanarConfiguration = 3, "RGB", 1
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 8, 8, 7, 0
    ramp = np.arange(rows * columns, dtype=np.uint8).reshape(rows, columns)
    planes = np.stack([np.stack([ramp + 40 * f, ramp[::-1] * 3, np.full_like(ramp, 60 * f)]) for f in range(frames)])
    ds.PixelData = planes.tobytes()  # (frames, 3, rows, columns): colour-by-plane
    out = io.BytesIO()
    ds.save_as(out, enforce_file_format=True)
    return out.getvalue()


@dataclass
class Item:
    name: str
    record: InstanceRecord  # as it is now (compressed at rest, or left as it is)
    original: bytes  # the Part 10 object as received

    @property
    def ds(self) -> Dataset:
        return pydicom.dcmread(io.BytesIO(self.original))

    @property
    def frames(self) -> int:
        return int(self.ds.get("NumberOfFrames", 1) or 1)

    def original_frames(self) -> list[bytes]:
        value = bytes(self.ds.PixelData)
        ds = self.ds
        size = int(ds.Rows) * int(ds.Columns) * int(ds.SamplesPerPixel) * int(ds.BitsAllocated) // 8
        return [value[i * size:(i + 1) * size] for i in range(self.frames)]


@dataclass
class Study:
    server: DwServer
    uid: str
    series: dict[str, str]
    items: dict[str, Item] = field(default_factory=dict)
    #: what each probe answered before the instances were compressed
    before: dict[str, Any] = field(default_factory=dict)

    @property
    def base(self) -> str:
        return self.server.dicomweb_url

    def url(self, name: str) -> str:
        r = self.items[name].record
        return f"{self.base}/studies/{r.study_uid}/series/{r.series_uid}/instances/{r.sop_uid}"

    def stored(self, name: str) -> bytes:
        record = self.items[name].record
        return b"".join(self.server.archive.retrieve.iter_bytes(record, verify=True))


# -- probes: the requests whose answers must not change --------------------------------------------------------


def _get(url: str, accept: str | None = None, **headers: str) -> httpx.Response:
    if accept is not None:
        headers["Accept"] = accept
    resp = httpx.get(url, headers=headers, timeout=60)
    assert resp.status_code in (200, 206), (url, resp.status_code, resp.text[:300])
    return resp


def _parts(resp: httpx.Response) -> list[tuple[str, bytes]]:
    return parse_multipart(resp)


def _media(resp: httpx.Response) -> str:
    return resp.headers["content-type"].split(";")[0]


def _probes(study: Study) -> dict[str, Any]:
    """Each request a client makes without asking for a particular syntax → what it answered (multipart bodies as
    their parts, which do not depend on the boundary)."""
    out: dict[str, Any] = {}
    base = study.base
    out["study"] = _parts(_get(f"{base}/studies/{study.uid}", DICOM_ANY))
    out["study-no-accept"] = _parts(_get(f"{base}/studies/{study.uid}"))
    for label, series in study.series.items():
        out[f"series-{label}"] = _parts(_get(f"{base}/studies/{study.uid}/series/{series}", DICOM_ANY))
        out[f"series-{label}-thumbnail"] = _get(f"{base}/studies/{study.uid}/series/{series}/thumbnail").content
    out["study-rendered"] = _get(f"{base}/studies/{study.uid}/rendered", "image/png").content
    out["study-thumbnail"] = _get(f"{base}/studies/{study.uid}/thumbnail").content
    out["study-metadata"] = _get(f"{base}/studies/{study.uid}/metadata").json()
    for name, item in study.items.items():
        url = study.url(name)
        n = item.frames
        out[f"{name}-instance"] = _parts(_get(url, DICOM_ANY))
        single = _get(url, "application/dicom")
        out[f"{name}-instance-single"] = (single.headers["content-type"], single.content)
        out[f"{name}-metadata"] = _get(f"{url}/metadata").json()
        everything = ",".join(str(k) for k in range(1, n + 1))
        out[f"{name}-frames"] = _parts(_get(f"{url}/frames/{everything}"))
        out[f"{name}-frames-octet"] = _parts(_get(f"{url}/frames/{n},1", OCTET))
        out[f"{name}-frame-single"] = _get(f"{url}/frames/1", "application/octet-stream").content
        out[f"{name}-frames-explicit"] = _parts(_get(f"{url}/frames/1", f"{OCTET}; transfer-syntax={EXPLICIT}"))
        out[f"{name}-bulk"] = _parts(_get(f"{url}/bulk/7FE00010"))
        out[f"{name}-bulk-octet"] = _get(f"{url}/bulk/7FE00010", "application/octet-stream").content
        size = len(out[f"{name}-bulk-octet"])
        for label, rng in (("head", "bytes=0-99"), ("middle", f"bytes={size // 2 - 7}-{size // 2 + 300}"),
                           ("tail", "bytes=-5")):
            resp = _get(f"{url}/bulk/7FE00010", Range=rng)
            out[f"{name}-bulk-range-{label}"] = (resp.status_code, resp.headers["content-range"], resp.content)
        out[f"{name}-rendered"] = _get(f"{url}/rendered", "image/png").content
        out[f"{name}-rendered-jpeg"] = _get(f"{url}/rendered").content
        out[f"{name}-frame-rendered"] = _get(f"{url}/frames/{n}/rendered", "image/png").content
        out[f"{name}-thumbnail"] = _get(f"{url}/thumbnail").content
        record = item.record
        uri = {"requestType": "WADO", "studyUID": record.study_uid, "seriesUID": record.series_uid,
               "objectUID": record.sop_uid}
        resp = httpx.get(f"{study.server.base_url}/wado", params={**uri, "contentType": "application/dicom"})
        out[f"{name}-wado-uri-dicom"] = (resp.status_code, resp.content)
        resp = httpx.get(f"{study.server.base_url}/wado", params=uri)
        out[f"{name}-wado-uri-jpeg"] = (resp.status_code, _media(resp), resp.content)
        resp = httpx.get(f"{study.server.base_url}/wado", params={**uri, "contentType": "image/png",
                                                                    "frameNumber": str(n)})
        out[f"{name}-wado-uri-png"] = (resp.status_code, resp.content)
    return out


@pytest.fixture(scope="module")
def study(dw_module_settings: Settings) -> Iterator[Study]:
    """The study, its probes answered before compression, then every eligible instance compressed at rest (JPEG-LS
    lossless), as a compress rule does it."""
    with running(dw_module_settings) as server:
        archive = server.archive
        uid, a, b = generate_uid(), generate_uid(), generate_uid()
        objects = {
            "explicit": make_ct(study=uid, series=a, rows=64, columns=64, seed=1, InstanceNumber=1),
            "multiframe": make_ct(study=uid, series=a, rows=32, columns=48, frames=5, seed=2, InstanceNumber=2),
            "implicit": _implicit(make_ct(study=uid, series=b, rows=64, columns=64, seed=3, InstanceNumber=3)),
            "rgb": _rgb_planar(uid, b),
            "native": make_ct(study=uid, series=b, rows=8, columns=8, seed=4, InstanceNumber=4),
        }
        s = Study(server, uid, {"a": a, "b": b})
        for name, data in objects.items():
            result = archive.ingest.ingest(io.BytesIO(data), source="STOW")
            (record,) = archive.retrieve.locate(sop_uids=[result.sop_instance_uid])
            s.items[name] = Item(name, record, data)
        s.before = _probes(s)
        assert archive.compression is not None
        for name, item in s.items.items():
            work = CompressionWork()
            archive.compression.compress_instance(item.record, JLS, work)
            assert (work.compressed, work.skipped) == ((1, 0) if name in COMPRESSED else (0, 1)), (name, work)
            (item.record,) = archive.retrieve.locate(sop_uids=[item.record.sop_uid])
            assert (item.record.transfer_syntax_uid == JLS) == (name in COMPRESSED), name
            assert (item.record.original is not None) == (name in COMPRESSED), name
        yield s


@pytest.fixture(scope="module")
def after(study: Study) -> dict[str, Any]:
    """The same probes, answered after compression."""
    return _probes(study)


@pytest.fixture(scope="module")
def client(study: Study) -> DICOMwebClient:
    return DICOMwebClient(study.base)


# -- nothing a default client sees changes ---------------------------------------------------------------------


def test_every_default_answer_is_unchanged(study: Study, after: dict[str, Any]) -> None:
    assert set(after) == set(study.before)
    changed = [key for key in study.before if after[key] != study.before[key]]
    assert changed == []


def test_metadata_unchanged_and_describes_the_original(study: Study, after: dict[str, Any]) -> None:
    assert json.dumps(after["study-metadata"], sort_keys=True) == json.dumps(study.before["study-metadata"],
                                                                           sort_keys=True)
    for name in COMPRESSED:
        (meta,) = after[f"{name}-metadata"]
        original = study.items[name].ds
        assert meta["00280010"]["Value"] == [original.Rows]
        if "PlanarConfiguration" in original:  # colour-by-plane, as received (the JPEG-LS object says 0)
            assert meta["00280006"]["Value"] == [original.PlanarConfiguration] == [1]
        assert meta["7FE00010"]["BulkDataURI"].endswith(f"/instances/{study.items[name].record.sop_uid}"
                                                        "/bulk/7FE00010")


# -- instances, series, study ------------------------------------------------------------------------------------


def test_default_instance_is_the_original_file(study: Study, after: dict[str, Any], client: DICOMwebClient) -> None:
    """No transfer syntax asked: Explicit VR Little Endian, which for an explicit VR original is the file as received,
    byte for byte (multipart and single part); an implicit VR original comes converted from it."""
    for name in ("explicit", "multiframe", "rgb", "native"):
        item = study.items[name]
        assert after[f"{name}-instance"] == [(f"application/dicom; transfer-syntax={EXPLICIT}", item.original)], name
        ctype, body = after[f"{name}-instance-single"]
        assert ctype == f"application/dicom; transfer-syntax={EXPLICIT}" and body == item.original, name
        status, body = after[f"{name}-wado-uri-dicom"]
        assert status == 200 and body == item.original, name
        r = item.record
        ds = client.retrieve_instance(r.study_uid, r.series_uid, r.sop_uid, media_types=(("application/dicom",),))
        assert ds.file_meta.TransferSyntaxUID == EXPLICIT and ds.PixelData == item.ds.PixelData, name
        # (dicomweb-client's retrieve_instance asks for transfer-syntax=* unless told otherwise: as stored)
        ds = client.retrieve_instance(r.study_uid, r.series_uid, r.sop_uid)
        assert ds.file_meta.TransferSyntaxUID == (JLS if name in COMPRESSED else EXPLICIT), name
        assert np.array_equal(ds.pixel_array, item.ds.pixel_array), name
    item = study.items["implicit"]
    ((ctype, body),) = after["implicit-instance"]
    assert ctype == f"application/dicom; transfer-syntax={EXPLICIT}"
    got = pydicom.dcmread(io.BytesIO(body))
    assert got.file_meta.TransferSyntaxUID == EXPLICIT
    assert {str(e.tag): e.value for e in got} == {str(e.tag): e.value for e in item.ds}


def test_series_and_study_default_are_the_originals(study: Study, after: dict[str, Any],
                                                    client: DICOMwebClient) -> None:
    by_uid = {item.record.sop_uid: item for item in study.items.values()}
    for key in ("study", "study-no-accept", "series-a", "series-b"):
        parts = after[key]
        for ctype, body in parts:
            assert ctype == f"application/dicom; transfer-syntax={EXPLICIT}", key
            uid = str(pydicom.dcmread(io.BytesIO(body), stop_before_pixels=True).SOPInstanceUID)
            if by_uid[uid].name != "implicit":
                assert body == by_uid[uid].original, (key, by_uid[uid].name)
    assert len(after["study"]) == len(study.items)
    got = client.retrieve_study(study.uid)
    assert sorted(str(ds.SOPInstanceUID) for ds in got) == sorted(by_uid)
    for ds in got:
        assert ds.PixelData == by_uid[str(ds.SOPInstanceUID)].ds.PixelData


@pytest.mark.parametrize("syntax", ["*", JLS])
def test_stored_syntax_gives_the_stored_object(study: Study, client: DICOMwebClient, syntax: str) -> None:
    """``transfer-syntax=*`` (as stored) or JPEG-LS lossless by UID: the compressed object exactly as stored, one
    fragment per frame, decoding to the original's pixels (at instance, series and study level)."""
    accept = f'multipart/related; type="application/dicom"; transfer-syntax={syntax}'
    for name in COMPRESSED:
        item = study.items[name]
        (part,) = _parts(_get(study.url(name), accept))
        assert part == (f"application/dicom; transfer-syntax={JLS}", study.stored(name)), name
        ds = client.retrieve_instance(item.record.study_uid, item.record.series_uid, item.record.sop_uid,
                                      media_types=(("application/dicom", syntax),))
        assert ds.file_meta.TransferSyntaxUID == JLS
        fragments = list(generate_frames(ds.PixelData, number_of_frames=item.frames))
        assert len(fragments) == item.frames
        assert np.array_equal(ds.pixel_array, item.ds.pixel_array), name
    parts = dict((pydicom.dcmread(io.BytesIO(b), stop_before_pixels=True).SOPInstanceUID, (ct, b))
                 for ct, b in _parts(_get(f"{study.base}/studies/{study.uid}", accept)))
    assert len(parts) == len(study.items)
    for name, item in study.items.items():
        ctype, body = parts[item.record.sop_uid]
        if name in COMPRESSED:
            assert (ctype, body) == (f"application/dicom; transfer-syntax={JLS}", study.stored(name)), name
        elif syntax == "*":  # left as it is: as stored
            assert (ctype, body) == (f"application/dicom; transfer-syntax={EXPLICIT}", item.original)
        else:  # JPEG-LS asked for: encoded for this request, the same pixels
            got = pydicom.dcmread(io.BytesIO(body))
            assert ctype.endswith(JLS) and np.array_equal(got.pixel_array, item.ds.pixel_array)
    series = client.retrieve_series(study.uid, study.series["a"], media_types=(("application/dicom", syntax),))
    assert {str(ds.file_meta.TransferSyntaxUID) for ds in series} == {JLS}


def test_received_syntax_by_uid_gives_the_original(study: Study) -> None:
    """The syntax an instance was received in, asked by UID: the file as received (implicit VR too)."""
    for name, syntax in (("explicit", EXPLICIT), ("implicit", IMPLICIT), ("multiframe", EXPLICIT)):
        accept = f'multipart/related; type="application/dicom"; transfer-syntax={syntax}'
        assert _parts(_get(study.url(name), accept)) == [(f"application/dicom; transfer-syntax={syntax}",
                                                          study.items[name].original)], name
        record = study.items[name].record
        resp = httpx.get(f"{study.server.base_url}/wado", params={
            "requestType": "WADO", "studyUID": record.study_uid, "seriesUID": record.series_uid,
            "objectUID": record.sop_uid, "contentType": "application/dicom", "transferSyntax": syntax})
        assert resp.status_code == 200 and resp.content == study.items[name].original, name


# -- frames ------------------------------------------------------------------------------------------------------


def test_default_frames_are_the_original_frames(study: Study, after: dict[str, Any],
                                                client: DICOMwebClient) -> None:
    octet = f"application/octet-stream; transfer-syntax={EXPLICIT}"
    for name in COMPRESSED:
        item = study.items[name]
        frames = item.original_frames()
        assert after[f"{name}-frames"] == [(octet, f) for f in frames], name
        assert after[f"{name}-frames-octet"] == [(octet, frames[-1]), (octet, frames[0])], name
        assert after[f"{name}-frame-single"] == frames[0], name
        assert after[f"{name}-frames-explicit"] == [(octet, frames[0])], name
        r = item.record
        numbers = list(range(item.frames, 0, -1))  # several frames in one request, last first
        assert client.retrieve_instance_frames(r.study_uid, r.series_uid, r.sop_uid, numbers) == \
            [frames[k - 1] for k in numbers], name


@pytest.mark.parametrize("accept", [f"{OCTET}; transfer-syntax=*", 'multipart/related; type="image/jls"',
                                    f'multipart/related; type="image/jls"; transfer-syntax={JLS}'])
def test_stored_frames_are_the_codestreams(study: Study, accept: str) -> None:
    for name in COMPRESSED:
        item = study.items[name]
        stored = pydicom.dcmread(io.BytesIO(study.stored(name)))
        codestreams = [bytes(f) for f in generate_frames(stored.PixelData, number_of_frames=item.frames)]
        numbers = [item.frames, 1] if item.frames > 1 else [1]
        parts = _parts(_get(f"{study.url(name)}/frames/{','.join(map(str, numbers))}", accept))
        assert parts == [(f"image/jls; transfer-syntax={JLS}", codestreams[k - 1]) for k in numbers], name


def test_single_jls_frame_and_dicomweb_client(study: Study, client: DICOMwebClient) -> None:
    item = study.items["multiframe"]
    stored = pydicom.dcmread(io.BytesIO(study.stored("multiframe")))
    codestreams = [bytes(f) for f in generate_frames(stored.PixelData, number_of_frames=item.frames)]
    resp = _get(f"{study.url('multiframe')}/frames/3", "image/jls")
    assert resp.headers["content-type"].startswith("image/jls") and resp.content == codestreams[2]
    r = item.record
    got = client.retrieve_instance_frames(r.study_uid, r.series_uid, r.sop_uid, [2, 4],
                                          media_types=(("image/jls", JLS),))
    assert got == [codestreams[1], codestreams[3]]


# -- bulk data ---------------------------------------------------------------------------------------------------


def test_pixel_bulk_data_is_the_original_value(study: Study, after: dict[str, Any], client: DICOMwebClient) -> None:
    octet = f"application/octet-stream; transfer-syntax={EXPLICIT}"
    for name in COMPRESSED:
        item = study.items[name]
        value = bytes(item.ds["PixelData"].value)  # as the original held it, its pad byte included
        assert after[f"{name}-bulk"] == [(octet, value)], name
        assert after[f"{name}-bulk-octet"] == value, name
        size = len(value)
        status, content_range, body = after[f"{name}-bulk-range-middle"]
        start, end = size // 2 - 7, min(size // 2 + 300, size - 1)
        assert (status, content_range, body) == (206, f"bytes {start}-{end}/{size}", value[start:end + 1]), name
        assert after[f"{name}-bulk-range-tail"][2] == value[-5:], name
        assert client.retrieve_bulkdata(f"{study.url(name)}/bulk/7FE00010") == [value], name
    (meta,) = after["rgb-metadata"]
    assert client.retrieve_bulkdata(meta["7FE00010"]["BulkDataURI"]) == [bytes(study.items["rgb"].ds.PixelData)]


# -- rendered ----------------------------------------------------------------------------------------------------


def test_rendered_and_thumbnails_still_work(study: Study, after: dict[str, Any], client: DICOMwebClient) -> None:
    """Rendered images come from the decoded codestreams: the same images as before (the probes), valid PNG/JPEG."""
    for name in COMPRESSED:
        assert after[f"{name}-rendered"].startswith(b"\x89PNG"), name
        assert after[f"{name}-frame-rendered"].startswith(b"\x89PNG"), name
        assert after[f"{name}-rendered-jpeg"].startswith(b"\xff\xd8"), name
        assert after[f"{name}-thumbnail"].startswith(b"\xff\xd8"), name
        status, media, body = after[f"{name}-wado-uri-jpeg"]
        assert (status, media) == (200, "image/jpeg") and body.startswith(b"\xff\xd8"), name
    r = study.items["multiframe"].record
    png = client.retrieve_instance_rendered(r.study_uid, r.series_uid, r.sop_uid, media_types=("image/png",))
    assert png == after["multiframe-rendered"]
    for key in ("study-rendered", "study-thumbnail", "series-a-thumbnail", "series-b-thumbnail"):
        assert after[key] == study.before[key] and len(after[key]) > 100, key


# -- odd-length pixel data -------------------------------------------------------------------------------------


def _odd_length(study: Study) -> tuple[bytes, InstanceRecord]:
    """A 3-frame 8-bit MONOCHROME2 object of 17×19 frames: 969 bytes of pixels, a zero pad byte after them."""
    ds = pydicom.dcmread(io.BytesIO(make_ct(study=study.uid, rows=17, columns=19, frames=3, seed=9)))
    ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.7.2"  # MF grayscale byte SC
    ds.Modality, ds.BitsAllocated, ds.BitsStored, ds.HighBit = "OT", 8, 8, 7
    ramp = np.add.outer(np.arange(17), np.arange(19)) * 4  # smooth, so that JPEG-LS gains something
    ds.PixelData = np.stack([(ramp + 9 * f) % 256 for f in range(3)]).astype(np.uint8).tobytes()
    out = io.BytesIO()
    ds.save_as(out, enforce_file_format=True)
    data = out.getvalue()
    assert len(pydicom.dcmread(io.BytesIO(data)).PixelData) == 3 * 17 * 19 + 1
    result = study.server.archive.ingest.ingest(io.BytesIO(data), source="STOW")
    (record,) = study.server.archive.retrieve.locate(sop_uids=[result.sop_instance_uid])
    return data, record


def _odd_answers(study: Study, record: InstanceRecord) -> dict[str, Any]:
    url = f"{study.base}/studies/{record.study_uid}/series/{record.series_uid}/instances/{record.sop_uid}"
    return {"bulk": _get(f"{url}/bulk/7FE00010", "application/octet-stream").content,
            "tail": _get(f"{url}/bulk/7FE00010", Range="bytes=-3").content,
            "frames": _parts(_get(f"{url}/frames/3,1")),
            "instance": _parts(_get(url, DICOM_ANY))}


def test_odd_length_pixel_value_comes_with_its_pad_byte(study: Study) -> None:
    """Bulk data of a native Pixel Data value of odd length: the value as encoded (its pad byte included), as
    pydicom reads it and as a deflated object's value is given; frames are the frames, without it."""
    data, record = _odd_length(study)
    value = bytes(pydicom.dcmread(io.BytesIO(data)).PixelData)
    got = _odd_answers(study, record)
    assert got["bulk"] == value and got["tail"] == value[-3:]
    frame = 17 * 19
    octet = f"application/octet-stream; transfer-syntax={EXPLICIT}"
    assert got["frames"] == [(octet, value[2 * frame:3 * frame]), (octet, value[:frame])]
    assert got["instance"] == [(f"application/dicom; transfer-syntax={EXPLICIT}", data)]


def test_odd_length_pixel_data_is_compressed_and_given_back(study: Study) -> None:
    data, record = _odd_length(study)
    before = _odd_answers(study, record)
    archive = study.server.archive
    assert archive.compression is not None
    work = CompressionWork()
    archive.compression.compress_instance(record, JLS, work)
    assert work.compressed == 1, work
    assert before["instance"] == [(f"application/dicom; transfer-syntax={EXPLICIT}", data)]
    assert _odd_answers(study, record) == before


# -- compressed while being read ---------------------------------------------------------------------------------


@pytest.mark.parametrize("accept", [DICOM_ANY, f"{DICOM_ANY}; transfer-syntax=*", "application/dicom"])
def test_instances_compressed_while_a_retrieve_runs(study: Study, monkeypatch: pytest.MonkeyPatch,
                                                    accept: str) -> None:
    """``compress_on_ingest`` compresses a study about 30 s after it arrived, when it is likely being read: a
    retrieval that selected the instances just before they were switched to their compressed blobs (and the
    originals' blobs removed) still answers every one as it promised (the syntax of each part, as the
    originals)."""
    archive = study.server.archive
    uid, series = generate_uid(), generate_uid()
    single = accept == "application/dicom"
    objects = {}
    for i in range(1 if single else 3):
        data = make_ct(study=uid, series=series, rows=64, columns=64, frames=1 + i, seed=20 + i, InstanceNumber=i)
        objects[archive.ingest.ingest(io.BytesIO(data), source="STOW").sop_instance_uid] = data
    locate = archive.retrieve.locate

    with monkeypatch.context() as patched:
        patched.setattr(archive.retrieve, "locate", locate_then_compress(archive, JLS))
        resp = httpx.get(f"{study.base}/studies/{uid}", headers={"Accept": accept}, timeout=60)
    assert resp.status_code == 200, resp.text
    parts = [(resp.headers["content-type"], resp.content)] if single else _parts(resp)
    assert sorted(body for _, body in parts) == sorted(objects.values())
    assert {ct for ct, _ in parts} == {f"application/dicom; transfer-syntax={EXPLICIT}"}
    assert {r.transfer_syntax_uid for r in locate(study_uid=uid)} == {JLS}
