"""Bounded inflation of Deflated Explicit VR Little Endian data sets (PS3.5 A.5), the one place the archive
inflates: ingest (C-STORE, STOW-RS, ``dicomvault import``), retrieval as Explicit VR Little Endian, frames,
rendered images and bulk data of a deflated object.

Why not pydicom's reader: ``dcmread`` inflates the whole data set into memory with one ``zlib.decompress``, with
no limit. A 255 KiB object inflating to 256 MiB raised the server's peak memory by 534 MB at ingest and by
1.28 GB on retrieval (issue #9). Here ``zlib.decompressobj`` produces at most ``CHUNK`` bytes per call (its
``max_length``), so memory stays at one chunk whatever the ratio; the output goes to the caller chunk by chunk
(streamed responses) or into a spool file in the archive's data folder (``data_dir/spool``, never the system's
temporary folder, which is often a small RAM disk), unlinked from the start so that a crash leaves nothing.

Two limits, both checked while inflating (so a bomb costs at most the limit in CPU and spool space):
``max_inflated_bytes`` (the data set's inflated size) and ``max_inflate_ratio`` (inflated ÷ compressed, checked
only once the output passed ``RATIO_FLOOR``). Real objects deflate far less than a bomb: measured 1.4:1 (MR) and
1.6:1 (CT) on pydicom's corpus, 61:1 on ``image_dfl.dcm`` (a mostly black 512×512 image); a stream of zeros
reaches deflate's maximum of ~1030:1, so small blank objects pass whatever the ratio and only a large object
that is almost all one value is refused by the ratio.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, BinaryIO, cast

from pydicom.dataset import FileDataset, FileMetaDataset
from pydicom.filereader import read_dataset
from pydicom.tag import BaseTag

from dicomvault.dicom import header_reader
from dicomvault.domain.errors import MalformedDicom, TooLarge

#: Bytes inflated per step (and per chunk of a streamed response).
CHUNK = 1 << 20
#: Compressed bytes read per step.
READ = 256 * 1024
#: The ratio limit applies once this much has been inflated.
RATIO_FLOOR = 64 << 20


@dataclass(frozen=True)
class Limits:
    """Resource limits of pixel and data set processing, from the settings (``bootstrap`` builds one)."""

    max_inflated_bytes: int = 1 << 30
    max_inflate_ratio: int = 200
    max_decoded_bytes: int = 256 << 20
    spool_dir: Path = field(default_factory=lambda: Path(tempfile.gettempdir()))


def inflate_chunks(source: BinaryIO, limits: Limits) -> Iterator[bytes]:
    """The inflated bytes of the raw deflate stream read from ``source`` (from its current position), in chunks of
    at most ``CHUNK`` bytes. Raises ``TooLarge`` past a limit, ``MalformedDicom`` for a corrupt or cut stream.
    Bytes after the end of the deflate stream (padding some writers add) are ignored."""
    inflater = zlib.decompressobj(-zlib.MAX_WBITS)
    total = consumed = 0
    pending = b""
    while not inflater.eof:
        if not pending:
            pending = source.read(READ)
            if not pending:
                raise MalformedDicom("the deflated data set is truncated (the deflate stream does not end)",
                                     reason="the object is truncated")
            consumed += len(pending)
        try:
            out = inflater.decompress(pending, CHUNK)
        except zlib.error as exc:
            raise MalformedDicom(f"the deflated data set is corrupt ({exc})",
                                 reason="the deflated data set is corrupt") from exc
        pending = inflater.unconsumed_tail
        total += len(out)
        _check(total, consumed, limits)
        if out:
            yield out


def _check(total: int, consumed: int, limits: Limits) -> None:
    if total > limits.max_inflated_bytes:
        # Short enough for an Error Comment (LO, 64 characters) with the limit's value.
        raise TooLarge(f"inflates beyond max_inflated_bytes ({limits.max_inflated_bytes} bytes)",
                       "max_inflated_bytes")
    if limits.max_inflate_ratio and total > RATIO_FLOOR and total > limits.max_inflate_ratio * consumed:
        raise TooLarge(f"inflates more than max_inflate_ratio ({limits.max_inflate_ratio}) times its size",
                       "max_inflate_ratio")


def spool_file(limits: Limits) -> IO[bytes]:
    """An anonymous read/write file in the spool folder (no name on disk: nothing to clean up after a crash)."""
    limits.spool_dir.mkdir(parents=True, exist_ok=True)
    return tempfile.TemporaryFile(dir=limits.spool_dir)


@contextlib.contextmanager
def named_spool_file(limits: Limits, suffix: str = ".dcm") -> Iterator[IO[bytes]]:
    """A spool file with a name (for a library that sends from a path), removed on exit."""
    limits.spool_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile(dir=limits.spool_dir, suffix=suffix) as f:
        yield f


def inflate_to_spool(source: BinaryIO, limits: Limits) -> IO[bytes]:
    """The inflated data set in a spool file positioned at 0 (the caller closes it). Raises like
    ``inflate_chunks``."""
    spool = spool_file(limits)
    try:
        for chunk in inflate_chunks(source, limits):
            spool.write(chunk)
        spool.flush()
        spool.seek(0)
        return spool
    except BaseException:
        spool.close()
        raise


def read_file_meta(stream: BinaryIO | IO[bytes]) -> tuple[FileMetaDataset | None, int]:
    """(File Meta Information, offset of the data set) of a Part 10 object; (None, 0) when it has no preamble
    and ``DICM`` prefix. Reads group 0002 only, so no data set byte is inflated or decoded. Raises
    ``MalformedDicom`` when the meta group cannot be read. The plain case is read by ``dicom.header_reader``;
    pydicom reads the rest (and reports what is wrong)."""
    stream.seek(0, 2)
    fast = header_reader.read_file_meta(stream, stream.tell())
    if fast is not None:
        return fast
    stream.seek(0)
    head = stream.read(132)
    if len(head) < 132 or head[128:132] != b"DICM":
        return None, 0

    def past_meta(tag: BaseTag, vr: str | None, length: int) -> bool:
        return int(tag) >> 16 != 0x0002

    try:
        meta = read_dataset(cast(BinaryIO, stream), is_implicit_VR=False, is_little_endian=True, stop_when=past_meta)
    except (MemoryError, TooLarge):
        raise  # running out of a resource says nothing about the object: not refused as malformed
    except Exception as exc:
        raise MalformedDicom(f"malformed DICOM object: the file meta information cannot be read "
                             f"({type(exc).__name__})", reason="malformed DICOM object") from exc
    return FileMetaDataset(meta), stream.tell()


def spool_size(spool: IO[bytes]) -> int:
    return os.fstat(spool.fileno()).st_size


def stop_at_pixel_data(tag: BaseTag, vr: str | None, length: int) -> bool:
    """``read_dataset``'s ``stop_when`` for reading a header: stop before (and rewind to) the pixel data."""
    return int(tag) in (0x7FE00008, 0x7FE00009, 0x7FE00010)


@dataclass
class Inflated:
    """A deflated object's data set inflated into a spool file (Explicit VR Little Endian from offset 0), with the
    object's File Meta Information. The holder closes it (``close``); datasets read from it with deferred values
    read those values from the spool, so they must be used before."""

    meta: FileMetaDataset
    file: IO[bytes]
    size: int

    def dataset(self, *, stop_before_pixels: bool = True, defer_size: int | str | None = None) -> FileDataset:
        """The data set (up to the pixel data, by default); values above ``defer_size`` stay in the spool. Raises
        ``MalformedDicom``."""
        self.file.seek(0)
        try:
            raw = read_dataset(cast(BinaryIO, self.file), False, True, defer_size=defer_size,
                               stop_when=stop_at_pixel_data if stop_before_pixels else None)
        except (MemoryError, TooLarge):
            raise  # a resource limit, not the object's fault
        except Exception as exc:
            raise MalformedDicom(f"malformed DICOM object: {type(exc).__name__}",
                                 reason="malformed DICOM object") from exc
        # A FileDataset over the spool: pydicom reads deferred values back from its buffer.
        return FileDataset(self.file, raw, preamble=None, file_meta=self.meta, is_implicit_VR=False,
                           is_little_endian=True)

    def close(self) -> None:
        self.file.close()


def inflate_object(stream: BinaryIO, limits: Limits) -> Inflated:
    """Inflate the deflated Part 10 object read from ``stream`` (bounded); raises ``TooLarge``,
    ``MalformedDicom``."""
    meta, offset = read_file_meta(stream)
    if meta is None:
        raise MalformedDicom("malformed DICOM object: a deflated object without file meta information",
                             reason="malformed DICOM object")
    stream.seek(offset)
    spool = inflate_to_spool(stream, limits)
    return Inflated(meta, spool, spool_size(spool))
