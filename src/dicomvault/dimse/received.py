"""A received C-STORE data set as the Part 10 object the archive keeps, without re-encoding or copying it.

pynetdicom hands over the data set bytes exactly as they arrived: in memory (``C_STORE.DataSet``), or, when
``_config.STORE_RECV_CHUNKED_DATASET`` is on (the server turns it on: bounded memory for multi-GB objects), in a
temporary file that starts with pynetdicom's own File Meta Information. Either way the archive's object is our
file meta (naming the calling AE) followed by those unchanged bytes; ``SplicedReader`` presents the two pieces as
one seekable stream, so nothing is concatenated in memory.
"""

from __future__ import annotations

import contextlib
import io
from collections.abc import Iterator
from typing import Any, BinaryIO, cast

from pynetdicom.dimse_primitives import C_STORE

from dicomvault.dicom.positioned import Positioned
from dicomvault.services.part10 import dataset_offset, file_meta_bytes

#: Read-ahead of the stream handed to ingest: header parsing does many small reads.
WINDOW = 64 * 1024


class SplicedReader(Positioned):
    """Read-only, seekable concatenation of byte ranges ``(stream, start, length)`` of other streams.

    Small reads (pydicom parses a header a few bytes at a time) are served from a read-ahead window. Not an
    ``io.BufferedReader`` on purpose: pydicom would take such a stream for a named file and reopen it by name
    for deferred values.
    """

    def __init__(self, parts: list[tuple[BinaryIO, int, int]]) -> None:
        offsets: list[int] = []
        total = 0
        for _, _, length in parts:
            offsets.append(total)
            total += length
        super().__init__(total)
        self._window = b""
        self._window_start = 0
        self._parts = parts
        self._offsets = offsets


    def read(self, size: int | None = -1) -> bytes:
        if size is None or size < 0:
            size = max(0, self._size - self._pos)
        offset = self._pos - self._window_start
        if offset >= 0 and offset + size <= len(self._window):
            data = self._window[offset : offset + size]
        elif size >= WINDOW:
            data = self._read_at(self._pos, size)  # bulk reads (hashing, copying) go straight through
        else:
            self._window, self._window_start = self._read_at(self._pos, WINDOW), self._pos
            data = self._window[:size]
        self._pos += len(data)
        return data

    def readinto(self, buffer: Any) -> int:
        view = memoryview(buffer).cast("B")
        data = self.read(len(view))
        view[: len(data)] = data
        return len(data)

    def _read_at(self, pos: int, size: int) -> bytes:
        chunks: list[bytes] = []
        while size > 0 and pos < self._size:
            index = self._part_at(pos)
            stream, start, length = self._parts[index]
            inside = pos - self._offsets[index]
            stream.seek(start + inside)
            data = stream.read(min(size, length - inside))
            if not data:
                break
            chunks.append(data)
            pos += len(data)
            size -= len(data)
        return chunks[0] if len(chunks) == 1 else b"".join(chunks)

    def _part_at(self, pos: int) -> int:
        for index in range(len(self._parts) - 1, -1, -1):
            if self._offsets[index] <= pos:
                return index
        return 0


@contextlib.contextmanager
def received_dataset(request: C_STORE) -> Iterator[tuple[BinaryIO, int, int]]:
    """(stream, start, length) of the data set bytes exactly as received, wherever pynetdicom put them."""
    path_info = request._dataset_path
    if path_info is None:
        data = request.DataSet
        if data is None:
            yield io.BytesIO(), 0, 0
            return
        data = cast(io.BytesIO, data)
        yield data, 0, len(data.getbuffer())
        return
    path = path_info[0] if isinstance(path_info, tuple) else path_info
    with open(path, "rb", buffering=0) as f:
        start = dataset_offset(f.read(1 << 16))  # pynetdicom's meta group is small; ours replaces it
        size = f.seek(0, io.SEEK_END)
        yield cast(BinaryIO, f), start, size - start


def part10_stream(
    part: tuple[BinaryIO, int, int], sop_class_uid: str, sop_instance_uid: str, transfer_syntax: str, calling_aet: str
) -> BinaryIO:
    """The Part 10 object to ingest: our file meta + the received data set bytes (``part``), as one stream.

    Shared by the pynetdicom handler and the lean storage path (``fast_store``), so both keep identical objects.
    Whether the data set is the instance the command names is checked by ingest on its own parse (``expect``)."""
    meta = file_meta_bytes(
        sop_class_uid=sop_class_uid,
        sop_instance_uid=sop_instance_uid,
        transfer_syntax_uid=transfer_syntax,
        source_aet=calling_aet,
    )
    return cast(BinaryIO, SplicedReader([(io.BytesIO(meta), 0, len(meta)), part]))
