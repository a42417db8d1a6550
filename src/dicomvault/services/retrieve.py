"""Locating stored instances and streaming their bytes, frames, or a transcoded copy.

C-GET/C-MOVE and WADO-RS/WADO-URI call this; none of them touches the blob store directly.

Bounded work (issue #9): a deflated object is only ever inflated through ``services.inflate`` (chunk by chunk,
within ``max_inflated_bytes``); its Explicit VR Little Endian form is that inflation streamed behind a new File
Meta Information, since the two syntaxes encode the data set identically. Any other conversion holds the object
in memory, so it is refused (``TooLarge``) when that would take more than ``max_decoded_bytes``; pixel data
shorter than its header describes is answered with ``DamagedPixelData`` instead of a decoder's error.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import shutil
import tempfile
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import BinaryIO

import pydicom
from pydicom.dataset import Dataset
from pydicom.uid import DeflatedExplicitVRLittleEndian, ExplicitVRLittleEndian

from dicomvault.domain.errors import (
    DamagedPixelData,
    IntegrityFailure,
    NotFound,
    TooLarge,
    Unavailable,
    Unsupported,
)
from dicomvault.domain.records import InstanceRecord, OriginalRecipe
from dicomvault.ports.blobs import BlobStore
from dicomvault.ports.index import IndexRepository
from dicomvault.services import inflate, originals, transcode
from dicomvault.services.frames import (
    decoded_frame_bytes,
    expected_pixel_bytes,
    number_of_frames,
    pixel_element,
    pixel_length_problem,
)
from dicomvault.services.inflate import Inflated, Limits
from dicomvault.services.part10 import file_meta_bytes

CHUNK = 1 << 20
#: Recipes of compressed blobs kept per process (``iter_original``), and the largest one kept (head + tail bytes).
RECIPE_CACHE = 4096
RECIPE_CACHE_ITEM = 64 << 10
#: Values larger than this stay unread in a header dataset (LUT data and icons are far smaller).
HEADER_DEFER = 1 << 20


class RetrieveService:
    def __init__(self, index: IndexRepository, blobs: BlobStore, limits: Limits | None = None,
                 on_read: Callable[[str], None] | None = None) -> None:
        self.index = index
        self.blobs = blobs
        self.limits = limits or Limits()
        #: told the Study Instance UID of every read of stored bytes (``services.read_tracker``: last-read times
        #: for lifecycle rules); fixity's reads (``iter_bytes(verify=True)``) are not reads of a user
        self.on_read = on_read
        self._recipes: OrderedDict[str, OriginalRecipe] = OrderedDict()
        self._recipes_lock = threading.Lock()

    def locate(
        self,
        *,
        patient_id: str | None = None,
        study_uid: str | None = None,
        series_uid: str | None = None,
        sop_uids: list[str] | None = None,
    ) -> list[InstanceRecord]:
        return self.index.instances(
            patient_id=patient_id, study_uid=study_uid, series_uid=series_uid, sop_uids=sop_uids
        )

    def instance(self, study_uid: str, series_uid: str | None, sop_uid: str) -> InstanceRecord:
        found = self.index.instances(study_uid=study_uid, series_uid=series_uid, sop_uids=[sop_uid])
        if not found:
            raise NotFound("instance not found")
        return found[0]

    def refreshed(self, record: InstanceRecord) -> InstanceRecord | None:
        """The instance's record as the index has it now when it points at another blob than ``record`` (read
        before the instance was compressed at rest or replaced, whose previous blob is then removed), else None
        (unchanged, or the instance is gone). For a reader that found ``record``'s blob missing."""
        found = self.index.instances(study_uid=record.study_uid, series_uid=record.series_uid,
                                     sop_uids=[record.sop_uid])
        if not found or found[0].blob.key == record.blob.key:
            return None
        return found[0]

    def open(self, record: InstanceRecord) -> BinaryIO:
        """The stored Part 10 object as a readable stream (exactly the bytes received)."""
        if self.on_read is not None:
            self.on_read(record.study_uid)
        return self.blobs.open(record.blob.key)

    def iter_bytes(self, record: InstanceRecord, *, verify: bool = False, chunk: int = CHUNK) -> Iterator[bytes]:
        """Stream the stored object in chunks of ``chunk`` bytes (larger chunks: fewer reads and writes for a
        sender that can hold them); with ``verify`` the SHA-256 is checked at the end."""
        digest = hashlib.sha256() if verify else None
        remaining = record.blob.size
        with (self.blobs.open(record.blob.key) if verify else self.open(record)) as f:
            # Reads sized to what is left: a read of ``chunk`` bytes allocates ``chunk`` bytes whatever the file
            # holds, and knowing the size saves the read that would only find the end.
            while chunk_bytes := f.read(min(chunk, remaining) if remaining > 0 else chunk):
                if digest is not None:
                    digest.update(chunk_bytes)
                remaining -= len(chunk_bytes)
                yield chunk_bytes
                if remaining == 0:
                    break
        if digest is not None and digest.hexdigest() != record.blob.sha256:
            # The message reaches logs above DEBUG: it names the blob (a content hash), never the instance's UID.
            raise IntegrityFailure(f"the stored object (blob {record.blob.key}) failed its checksum")

    @contextlib.contextmanager
    def as_file(self, record: InstanceRecord) -> Iterator[Path]:
        """A local file holding the object: the blob itself on a filesystem store, else a temporary copy."""
        if self.on_read is not None:
            self.on_read(record.study_uid)
        path = self.blobs.local_path(record.blob.key)
        if path is not None and path.exists():
            yield path
            return
        if path is not None:
            raise NotFound(f"the stored object (blob {record.blob.key}) is missing")
        with tempfile.NamedTemporaryFile(suffix=".dcm") as tmp, self.open(record) as src:
            shutil.copyfileobj(src, tmp, CHUNK)
            tmp.flush()
            yield Path(tmp.name)

    # -- data sets ---------------------------------------------------------------------------------------------

    @staticmethod
    def is_deflated(record: InstanceRecord) -> bool:
        return record.transfer_syntax_uid == DeflatedExplicitVRLittleEndian

    def open_inflated(self, record: InstanceRecord) -> Inflated:
        """A deflated object's data set inflated into a spool (the caller closes it); raises ``TooLarge``."""
        with self.open(record) as f:
            return inflate.inflate_object(f, self.limits)

    @contextlib.contextmanager
    def inflated(self, record: InstanceRecord) -> Iterator[Inflated]:
        found = self.open_inflated(record)
        try:
            yield found
        finally:
            found.close()

    def header(self, record: InstanceRecord) -> Dataset:
        """The stored object's dataset up to (not including) its pixel data; values over ``HEADER_DEFER`` bytes
        are left unread (and cannot be read later). Raises ``Unsupported`` when it cannot be parsed."""
        try:
            if self.is_deflated(record):
                with self.inflated(record) as found:
                    return found.dataset(defer_size=HEADER_DEFER)
            with self.open(record) as f:
                return pydicom.dcmread(f, stop_before_pixels=True, defer_size=HEADER_DEFER, force=True)
        except (TooLarge, NotFound, Unavailable):  # a store down or an object not restored: not the object's fault
            raise
        except Exception as exc:
            raise Unsupported(f"the stored object cannot be parsed: {type(exc).__name__}") from exc

    def read_dataset(self, record: InstanceRecord, *, stop_before_pixels: bool = False) -> Dataset:
        """The object (or its header) with every value in memory: callers that take the pixel data check
        ``memory_needed`` first. A deflated object is read from its bounded inflated spool."""
        if self.is_deflated(record):
            with self.inflated(record) as found:
                return found.dataset(stop_before_pixels=stop_before_pixels)
        with self.open(record) as f:
            return pydicom.dcmread(f, stop_before_pixels=stop_before_pixels)

    def pixel_problem(self, record: InstanceRecord) -> str | None:
        """Why the object's native pixel data cannot be decoded (shorter than its header describes), from the
        index flag or, for an object stored before that check, from its header; None when it can."""
        if record.pixel_problem:
            return record.pixel_problem
        if record.frame_index is not None or self.is_deflated(record):
            return None  # indexed native frames fit their header; a deflated one was checked inflated at ingest
        syntax = record.transfer_syntax_uid
        with self.open(record) as f:
            try:
                ds = pydicom.dcmread(f, stop_before_pixels=True, defer_size=HEADER_DEFER, force=True)
            except Exception:
                return None  # a decoder will say what is wrong
            located = pixel_element(f, syntax, f.tell())
        if located is None or located[1] == 0xFFFFFFFF:
            return None
        return pixel_length_problem(ds, located[1])

    def memory_needed(self, record: InstanceRecord, target_ts: str | None = None) -> int:
        """Bytes a whole-object conversion to ``target_ts`` (None: decoding the pixel data) holds in memory: the
        decoded pixel data, at least the object. Between uncompressed syntaxes nothing is decoded, so the header is
        read only otherwise (a study retrieved from S3 in another uncompressed syntax costs no extra request per
        instance)."""
        if record.transfer_syntax_uid in transcode.NATIVE_UNDEFLATED and target_ts in transcode.UNCOMPRESSED:
            return record.blob.size
        header = self.header(record)
        decoded = decoded_frame_bytes(header) * number_of_frames(header) if "Rows" in header else 0
        return max(decoded, record.blob.size)

    def check_memory(self, needed: int, what: str) -> None:
        cap = self.limits.max_decoded_bytes
        if needed > cap:
            raise TooLarge(f"{what} needs {needed} bytes in memory, more than max_decoded_bytes ({cap})",
                           "max_decoded_bytes")

    # -- frames ------------------------------------------------------------------------------------------------

    def frame(self, record: InstanceRecord, number: int) -> bytes:
        """Frame ``number`` (1-based) in the stored transfer syntax: one byte-range read per fragment. Raises
        ``NotFound``, ``DamagedPixelData``, ``TooLarge``."""
        n_frames = record.number_of_frames or 1
        if number < 1 or number > n_frames:
            raise NotFound(f"frame {number} does not exist (the instance has {n_frames})")
        if record.pixel_problem:
            raise DamagedPixelData(record.pixel_problem)
        if self.on_read is not None:
            self.on_read(record.study_uid)
        index = record.frame_index
        if index is not None and number <= index.count:
            spans = index.spans(number, lambda start, length: self._index_text(record, start, length))
            if len(spans) == 1:
                return self.blobs.read_range(record.blob.key, spans[0][0], spans[0][1])
            return b"".join(self.blobs.read_range(record.blob.key, o, n) for o, n in spans)
        if self.is_deflated(record):
            return self._deflated_frame(record, number)
        # No index (big endian, 1-bit, pixel data that does not fit its header): decode once from the object.
        problem = self.pixel_problem(record)
        if problem is not None:
            raise DamagedPixelData(problem)
        self.check_memory(self.memory_needed(record), "reading this frame (the whole object is decoded)")
        ds = self.read_dataset(record)
        return transcode.frame_from_dataset(ds, number)

    def _index_text(self, record: InstanceRecord, start: int, length: int | None) -> str:
        text = self.index.frame_index_text(record.sop_uid, record.blob.key, start, length)
        if text is None:
            raise NotFound("the instance was replaced or removed while its frame was being read")
        return text

    def _deflated_frame(self, record: InstanceRecord, number: int) -> bytes:
        with self.inflated(record) as found:
            header = found.dataset(defer_size=HEADER_DEFER)
            located = pixel_element(found.file, ExplicitVRLittleEndian, found.file.tell())
            if located is None or located[1] == 0xFFFFFFFF:
                raise NotFound("the instance has no pixel data")
            offset, length = located
            problem = pixel_length_problem(header, length)
            if problem is not None:
                raise DamagedPixelData(problem)
            if int(header.get("BitsAllocated", 8) or 8) == 1:  # 1-bit frames are not byte-aligned: decode
                self.check_memory(decoded_frame_bytes(header) * number_of_frames(header), "reading this frame")
                return transcode.frame_from_dataset(found.dataset(stop_before_pixels=False), number)
            frame_length = expected_pixel_bytes(header, frames=1) or length // number_of_frames(header)
            found.file.seek(offset + (number - 1) * frame_length)
            return found.file.read(frame_length)

    # -- other transfer syntaxes -------------------------------------------------------------------------------

    def streams(self, record: InstanceRecord, target_ts: str) -> bool:
        """Whether ``iter_transcoded`` streams (bounded memory, errors may only show mid-stream) rather than
        building the object in memory first."""
        return target_ts == record.transfer_syntax_uid or (
            self.is_deflated(record) and target_ts == ExplicitVRLittleEndian) or (
            record.original is not None and target_ts == record.original.syntax)

    def fits(self, record: InstanceRecord, target_ts: str) -> bool:
        """Whether the object can be provided in ``target_ts`` within ``max_decoded_bytes`` (reads the header
        when a conversion in memory would be needed)."""
        if self.streams(record, target_ts):
            return True
        try:
            return self.memory_needed(record, target_ts) <= self.limits.max_decoded_bytes
        except (Unsupported, TooLarge):
            return False

    def iter_transcoded(self, record: InstanceRecord, target_ts: str) -> Iterator[bytes]:
        """The object as a Part 10 file in ``target_ts``, in chunks. Raises ``Unsupported``, ``TooLarge``,
        ``DamagedPixelData``."""
        if target_ts == record.transfer_syntax_uid:
            yield from self.iter_bytes(record)
        elif record.original is not None and target_ts == record.original.syntax:
            yield from self.iter_original(record)
        elif self.streams(record, target_ts):
            yield from self._iter_inflated(record)
        else:
            yield self.transcoded(record, target_ts)

    def _recipe(self, key: str) -> OriginalRecipe | None:
        """The recipe of a compressed blob, from a small per-process cache: a content-addressed key's recipe never
        changes, and a study retrieval would otherwise ask the index once per instance."""
        with self._recipes_lock:
            found = self._recipes.get(key)
            if found is not None:
                self._recipes.move_to_end(key)
                return found
        recipe = self.index.original_recipe(key)
        if recipe is not None and len(recipe.head) + len(recipe.tail) <= RECIPE_CACHE_ITEM:
            with self._recipes_lock:
                self._recipes[key] = recipe
                while len(self._recipes) > RECIPE_CACHE:
                    self._recipes.popitem(last=False)
        return recipe

    def iter_original(self, record: InstanceRecord, source: BinaryIO | None = None) -> Iterator[bytes]:
        """The object exactly as received, for an instance compressed at rest (``services.originals``): its
        recipe, then the compressed blob read once from the start, decoded frame by frame. ``source``: the stored
        object already at hand (a download-ahead spool file, ``services.prefetch``), read instead of the store."""
        recipe = self._recipe(record.blob.key) if record.original is not None else None
        index = record.frame_index
        if recipe is None or index is None:
            raise IntegrityFailure(f"the original of blob {record.blob.key} cannot be rebuilt: no recipe or frame "
                                   "index")
        if source is not None:
            yield from originals.iter_original(source, record.transfer_syntax_uid, index.first, recipe)
            return
        with self.open(record) as f:
            yield from originals.iter_original(f, record.transfer_syntax_uid, index.first, recipe)

    def _iter_inflated(self, record: InstanceRecord) -> Iterator[bytes]:
        """A deflated object as Explicit VR Little Endian: new File Meta Information, then the inflated data set
        chunk by chunk (the encodings are identical, PS3.5 A.5), within ``max_inflated_bytes``."""
        with self.open(record) as f:
            meta, offset = inflate.read_file_meta(f)
            source = str(meta.get("SourceApplicationEntityTitle", "") or "") if meta is not None else ""
            yield file_meta_bytes(sop_class_uid=record.sop_class_uid, sop_instance_uid=record.sop_uid,
                                  transfer_syntax_uid=ExplicitVRLittleEndian, source_aet=source or None)
            f.seek(offset)
            yield from inflate.inflate_chunks(f, self.limits)

    def transcoded(self, record: InstanceRecord, target_ts: str) -> bytes:
        """The object re-encoded in ``target_ts`` as a Part 10 file, built in memory; raises ``Unsupported``,
        ``TooLarge`` (above ``max_decoded_bytes``), ``DamagedPixelData``."""
        if target_ts == record.transfer_syntax_uid:
            return b"".join(self.iter_bytes(record))
        if record.original is not None:
            # Compressed at rest: every other syntax is made from the rebuilt original, exactly as it was made
            # before the object was compressed (the same data set, the same pixel bit patterns).
            self.check_memory(2 * record.original.size, "converting this instance")
            original = b"".join(self.iter_original(record))
            if target_ts == record.original.syntax:
                return original
            received = pydicom.dcmread(io.BytesIO(original), force=True)
            buf = io.BytesIO()
            pydicom.dcmwrite(buf, transcode.to_syntax(received, target_ts), enforce_file_format=True)
            return buf.getvalue()
        if self.streams(record, target_ts):
            return b"".join(self._iter_inflated(record))
        problem = self.pixel_problem(record)
        if problem is not None:
            raise DamagedPixelData(problem)
        ds: Dataset
        if self.is_deflated(record):
            with self.inflated(record) as found:
                self.check_memory(found.size, "converting this instance")
                ds = found.dataset(stop_before_pixels=False)
        else:
            self.check_memory(self.memory_needed(record, target_ts), "converting this instance")
            ds = self.read_dataset(record)
        out = transcode.to_syntax(ds, target_ts)
        buf = io.BytesIO()
        # dcmwrite, not save_as: a change of byte order is allowed (``transcode.swap_byte_order`` made it)
        pydicom.dcmwrite(buf, out, enforce_file_format=True)
        return buf.getvalue()

    @contextlib.contextmanager
    def transcoded_file(self, record: InstanceRecord, target_ts: str, staged: Path | None = None) -> Iterator[Path]:
        """A spool file (in the data folder) holding the object in ``target_ts``, for a sender that streams from
        a path; raises like ``iter_transcoded`` before yielding. ``staged``: the stored object already downloaded
        (``services.prefetch``), from which the original of an instance compressed at rest is rebuilt rather than
        read from the store a second time."""
        with inflate.named_spool_file(self.limits) as f:
            if staged is not None and record.original is not None and target_ts == record.original.syntax:
                with staged.open("rb") as source:
                    for chunk in self.iter_original(record, source):
                        f.write(chunk)
            else:
                for chunk in self.iter_transcoded(record, target_ts):
                    f.write(chunk)
            f.flush()
            yield Path(f.name)

    def can_transcode(self, source_ts: str, target_ts: str) -> bool:
        return transcode.can_transcode(source_ts, target_ts)


__all__ = ["RetrieveService", "Unsupported"]
