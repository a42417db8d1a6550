"""The seekable splice that presents our file meta + the received data set bytes as one Part 10 stream."""

from __future__ import annotations

import io
import os
import random

from dicomvault.dimse.received import WINDOW as BUFFER
from dicomvault.dimse.received import SplicedReader


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
