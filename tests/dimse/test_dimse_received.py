"""The seekable splice that presents our file meta + the received data set bytes as one Part 10 stream, and the
hand-encoded file meta checked against pydicom."""

from __future__ import annotations

import io
import os
import random

import pytest

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


@pytest.mark.parametrize("aet", [None, "", "STORESCU", "ODD", " PADDED ", "A" * 20])
@pytest.mark.parametrize("sop_uid", ["1.2.3.4", "1.2.3.45"])
def test_file_meta_bytes_are_the_bytes_pydicom_writes(aet: str | None, sop_uid: str) -> None:
    for ts in ("1.2.840.10008.1.2", "1.2.840.10008.1.2.1", "1.2.840.10008.1.2.4.50", "1.2.840.10008.1.2.4.201"):
        kwargs = {"sop_class_uid": "1.2.840.10008.5.1.4.1.1.2", "sop_instance_uid": sop_uid,
                  "transfer_syntax_uid": ts, "source_aet": aet}
        ours = file_meta_bytes(**kwargs)  # type: ignore[arg-type]
        assert ours == file_meta_bytes_pydicom(**kwargs)  # type: ignore[arg-type]
        assert dataset_offset(ours) == len(ours)
