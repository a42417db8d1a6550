"""``dicom.header_reader`` reads exactly what pydicom's ``dcmread(stop_before_pixels=True)`` reads, or declines.

Compared on every file of pydicom's test corpus and on generated headers: the raw elements (tag, VR, length,
value, value position, encoding flags), File Meta, preamble, encodings and where reading stopped.
"""

from __future__ import annotations

import io
import warnings

import pydicom
import pytest
from pydicom.misc import size_in_bytes
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian

from dicomvault.dicom.header_reader import read_header
from dicomvault.services.inflate import read_file_meta
from tests.conftest import corpus_dir
from tests.helpers import make_ct

DEFER = int(size_in_bytes("64 KB") or 0)


def _reference(data: bytes) -> tuple[pydicom.FileDataset, int] | None:
    stream = io.BytesIO(data)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ds = pydicom.dcmread(stream, stop_before_pixels=True, defer_size="64 KB")
    except Exception:
        return None
    return ds, stream.tell()


def _fast(data: bytes) -> tuple[pydicom.FileDataset, int] | None:
    stream = io.BytesIO(data)
    try:
        meta, start = read_file_meta(stream)
    except Exception:
        return None
    if meta is None:
        return None
    return read_header(stream, meta, start, len(data), defer_size=DEFER)


def _same(fast: tuple[pydicom.FileDataset, int], ref: tuple[pydicom.FileDataset, int], name: str) -> None:
    ds, stopped = fast
    want, want_stopped = ref
    assert stopped == want_stopped, name
    assert list(ds._dict) == list(want._dict), name
    for tag, elem in ds._dict.items():
        assert tuple(elem) == tuple(want._dict[tag]), (name, tag)
    assert ds.file_meta == want.file_meta, name
    assert ds.preamble == want.preamble, name
    assert ds.original_encoding == want.original_encoding, name
    assert ds.original_character_set == want.original_character_set, name
    assert ds._character_set == want._character_set, name


def test_the_whole_corpus_reads_as_pydicom_reads_it() -> None:
    read = declined = 0
    for path in sorted(p for p in corpus_dir().rglob("*") if p.is_file()):
        data = path.read_bytes()
        ref = _reference(data)
        fast = _fast(data)
        if fast is None:
            declined += 1
            continue
        assert ref is not None, f"{path.name}: read here, refused by pydicom"
        _same(fast, ref, path.name)
        read += 1
    assert read > 100, (read, declined)  # the plain case is the common one


@pytest.mark.parametrize("syntax", [ExplicitVRLittleEndian, ImplicitVRLittleEndian])
def test_generated_headers_with_private_and_large_values(syntax: str) -> None:
    ds = pydicom.dcmread(io.BytesIO(make_ct(seed=5)))
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.InstitutionName = "Hôpital"
    ds.add_new(0x00091010, "LO", "VENDOR")
    ds.add_new(0x00091011, "OB", b"\x01" * (DEFER + 2))  # deferred, like pydicom defers it
    ds.add_new(0x00091012, "LO", "")
    ds.file_meta.TransferSyntaxUID = syntax
    buf = io.BytesIO()
    ds.save_as(buf, implicit_vr=syntax == ImplicitVRLittleEndian, little_endian=True)
    data = buf.getvalue()
    fast, ref = _fast(data), _reference(data)
    assert fast is not None and ref is not None
    _same(fast, ref, syntax)
    assert fast[0]._dict[pydicom.tag.BaseTag(0x00091011)].value is None  # deferred


def test_a_cut_header_is_declined_and_cut_pixel_data_is_not_its_business() -> None:
    ds = pydicom.dcmread(io.BytesIO(make_ct(seed=6)))
    ds.Rows, ds.Columns = 32, 64
    ds.PixelData = bytes(32 * 64 * 2)
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    data = buf.getvalue()
    ref = _reference(data)
    assert ref is not None
    header_end = ref[1]
    # cut inside the header: declined (pydicom's reading, and the archive's refusal built on it, decide)
    assert _fast(data[: header_end - 3]) is None
    # cut inside the pixel data: the header is whole and read; the pixel data checks are the caller's
    cut = _fast(data[: header_end + 100])
    assert cut is not None and cut[1] == header_end


def test_file_meta_reads_as_pydicom_reads_it() -> None:
    from pydicom.filereader import read_dataset

    from dicomvault.dicom.header_reader import read_file_meta as fast_meta

    read = 0
    for path in sorted(p for p in corpus_dir().rglob("*") if p.is_file()):
        data = path.read_bytes()
        stream = io.BytesIO(data)
        fast = fast_meta(stream, len(data))
        if fast is None:
            continue
        stream.seek(132)
        want = read_dataset(stream, False, True, stop_when=lambda tag, vr, length: int(tag) >> 16 != 0x0002)
        assert fast[1] == stream.tell(), path.name
        # raw elements first: comparing data sets converts them
        assert [tuple(e) for e in fast[0]._dict.values()] == [tuple(e) for e in want._dict.values()], path.name
        assert fast[0] == pydicom.dataset.FileMetaDataset(want), path.name
        read += 1
    assert read > 100
