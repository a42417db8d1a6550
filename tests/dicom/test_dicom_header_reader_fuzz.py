"""Property-based fuzzing of ``dicom.header_reader`` (issue #10): on random and mutated data sets behind a valid
File Meta, it never raises, and whatever it reads is exactly what pydicom reads; where it declines, pydicom (and
the archive's refusals built on pydicom's errors) decides. Example counts and the long-run switch: tests/fuzzing.py.
"""

from __future__ import annotations

import io
import struct
import threading
import warnings

import pydicom
from hypothesis import given
from hypothesis import strategies as st
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian

from dicomvault.dicom.header_reader import read_file_meta, read_header
from dicomvault.services.part10 import file_meta_bytes
from tests.dimse.test_dimse_fuzz import data_sets, mutated
from tests.fuzzing import fuzz_settings

DEFER = 64_000


def _object(data: bytes, implicit: bool) -> bytes:
    meta = file_meta_bytes(sop_class_uid="1.2.840.10008.5.1.4.1.1.7", sop_instance_uid="1.2.3.4",
                           transfer_syntax_uid=ImplicitVRLittleEndian if implicit else ExplicitVRLittleEndian,
                           source_aet="FUZZ")
    return meta + data


def _check(obj: bytes) -> None:
    stream = io.BytesIO(obj)
    meta = read_file_meta(stream, len(obj))
    if meta is None:  # declined (e.g. fewer than 8 bytes after the group): pydicom reads it
        return
    fast = read_header(stream, meta[0], meta[1], len(obj), defer_size=DEFER)
    if fast is None:
        return
    ref_stream = io.BytesIO(obj)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        want = pydicom.dcmread(ref_stream, stop_before_pixels=True, defer_size=DEFER)
    ds, stopped = fast
    assert stopped == ref_stream.tell()
    assert [tuple(e) for e in ds._dict.values()] == [tuple(e) for e in want._dict.values()]
    assert ds.original_encoding == want.original_encoding


@fuzz_settings(400)
@given(mutated(data_sets()))
def test_reads_what_pydicom_reads_or_declines(case: tuple[bytes, bool]) -> None:
    data, implicit = case
    _check(_object(data, implicit))


@fuzz_settings(100)
@given(st.binary(max_size=4096), st.booleans())
def test_random_bytes_never_raise(data: bytes, implicit: bool) -> None:
    _check(_object(data, implicit))


def test_walk_time_is_linear_in_its_input() -> None:
    """64 KiB of the smallest possible elements (8 bytes each, ascending tags): each read once. Bounded by a join
    timeout only: this checks that the walk ends, not how fast."""
    data = b"".join(struct.pack("<HHI", 0x0009, n, 0) for n in range(1, 8192))
    obj = _object(data, True)
    done = threading.Event()
    result: list[object] = []

    def walk() -> None:
        stream = io.BytesIO(obj)
        meta = read_file_meta(stream, len(obj))
        assert meta is not None
        result.append(read_header(stream, meta[0], meta[1], len(obj), defer_size=DEFER))
        done.set()

    threading.Thread(target=walk, daemon=True).start()
    assert done.wait(20)
    assert result and result[0] is not None and len(result[0][0]._dict) == 8191
