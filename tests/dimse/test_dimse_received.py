"""The seekable splice that presents our file meta + the received data set bytes as one Part 10 stream; the quick
reading of the data set's SOP UIDs and the hand-encoded file meta, each checked against pydicom."""

from __future__ import annotations

import io
import os
import random
from pathlib import Path
from unittest.mock import patch

import pydicom
import pytest
from pydicom.dataset import Dataset

from dicomvault.dimse import received
from dicomvault.dimse.received import WINDOW as BUFFER
from dicomvault.dimse.received import SplicedReader
from dicomvault.services.part10 import dataset_offset, file_meta_bytes, file_meta_bytes_pydicom


def test_spliced_reader_matches_the_concatenation() -> None:
    data = os.urandom(3 * BUFFER + 17)
    # the second part lies inside a larger stream, as a data set inside pynetdicom's spool file does
    reader = SplicedReader([(io.BytesIO(data[:300]), 0, 300),
                            (io.BytesIO(b"meta" + data[300:] + b"tail"), 4, len(data) - 300)])
    rng = random.Random(7)
    for _ in range(2000):
        pos = rng.randrange(0, len(data) + 10)
        size = rng.choice([0, 1, 4, 8, 132, 5000, BUFFER - 1, BUFFER, 2 * BUFFER, -1])
        reader.seek(pos)
        expected = data[pos:] if size < 0 else data[pos : pos + size]
        assert reader.read(size) == expected
        assert reader.tell() == pos + len(expected)
    assert reader.seek(0, io.SEEK_END) == len(data)
    reader.seek(0)
    assert reader.read() == data


def _dataset_part(path: Path) -> tuple[io.BytesIO, int, int, str]:
    data = path.read_bytes()
    start = dataset_offset(data[:1 << 16])
    ts = str(pydicom.dcmread(path, stop_before_pixels=True).file_meta.TransferSyntaxUID)
    return io.BytesIO(data), start, len(data) - start, ts


def _pydicom_identity(part: tuple[io.BytesIO, int, int], ts: str) -> tuple[str, str] | None:
    """The reader dataset_identity falls back on (an unknown transfer syntax makes it skip the quick walk)."""
    with patch.object(received, "identity_from_bytes", return_value=None):
        return received.dataset_identity(part, ts)


def test_quick_identity_walk_agrees_with_pydicom_on_the_corpus(corpus: list[Path]) -> None:
    walked = 0
    for path in corpus:
        stream, start, length, ts = _dataset_part(path)
        expected = _pydicom_identity((stream, start, length), ts)
        assert received.dataset_identity((stream, start, length), ts) == expected, path.name
        uid = pydicom.uid.UID(ts)
        if uid.is_little_endian and not uid.is_deflated:
            stream.seek(start)
            head = stream.read(min(length, received.QUICK_PREFIX))
            quick = received.identity_from_bytes(head, uid.is_implicit_VR, whole=length <= received.QUICK_PREFIX)
            assert quick in (None, expected), path.name
            walked += quick is not None
    assert walked > len(corpus) // 2  # the quick walk answers for most objects, not only falls back


def test_quick_identity_walk_gives_up_rather_than_guess() -> None:
    ds = Dataset()
    ds.SOPClassUID, ds.SOPInstanceUID, ds.PatientName = "1.2.3", "1.2.3.4", "X"
    buf = io.BytesIO()
    ds.save_as(buf, implicit_vr=False, little_endian=True)
    raw = buf.getvalue()
    assert received.identity_from_bytes(raw, False, whole=True) == ("1.2.3", "1.2.3.4")
    # Cut inside the SOP Instance UID's value, or before anything past (0008,0018): not sure, so None.
    assert received.identity_from_bytes(raw[:20], False, whole=False) is None
    cut = raw.index(b"1.2.3.4") + 8
    assert received.identity_from_bytes(raw[:cut], False, whole=False) is None
    # A multi-valued SOP Instance UID (malformed) is left to pydicom.
    ds.SOPInstanceUID = ["1.2.3.4", "1.2.3.5"]
    buf = io.BytesIO()
    ds.save_as(buf, implicit_vr=True, little_endian=True)
    assert received.identity_from_bytes(buf.getvalue(), True, whole=True) is None


@pytest.mark.parametrize("aet", [None, "", "STORESCU", "ODD", " PADDED ", "A" * 20])
@pytest.mark.parametrize("sop_uid", ["1.2.3.4", "1.2.3.45"])
def test_file_meta_bytes_are_the_bytes_pydicom_writes(aet: str | None, sop_uid: str) -> None:
    for ts in ("1.2.840.10008.1.2", "1.2.840.10008.1.2.1", "1.2.840.10008.1.2.4.50", "1.2.840.10008.1.2.4.201"):
        kwargs = {"sop_class_uid": "1.2.840.10008.5.1.4.1.1.2", "sop_instance_uid": sop_uid,
                  "transfer_syntax_uid": ts, "source_aet": aet}
        ours = file_meta_bytes(**kwargs)  # type: ignore[arg-type]
        assert ours == file_meta_bytes_pydicom(**kwargs)  # type: ignore[arg-type]
        assert dataset_offset(ours) == len(ours)
