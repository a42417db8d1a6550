"""Lossless compression at rest (issue #11 item 4): native objects re-encoded to a lossless syntax, proved, and
given back bit for bit.

What compressing one instance does, in this order (``compress_instance``):

1. read the stored object in full, checking its SHA-256 (a damaged object is never compressed), within
   ``max_object_bytes`` (the object, its frames and the compressed form are held in memory);
2. ``dicom.lossless``: is it eligible (native little endian, 8/16-bit integer samples, a layout the codec's DICOM
   profile takes …)? If not, the reason is recorded (``compression_skips``) and the object stays as it is;
3. encode every frame (one fragment per frame, so a frame stays one read), in ``processes`` worker processes
   when configured (the codecs hold the GIL: threads would share one core);
4. build the compressed Part 10 object: the same data set with the new Transfer Syntax UID, encapsulated Pixel
   Data and PlanarConfiguration 0 (PS3.5 8.2 requires it for these syntaxes), and the *recipe*: the original's
   bytes before and after its Pixel Data value and the frames' layout;
5. rebuild the original from exactly that compressed object and recipe (``services.originals``: every frame
   decoded) and compare its SHA-256 with the one received: nothing unproven is ever switched;
6. put the compressed object on every store that holds a verified copy of the original and read it back there
   (``BlobCopier.check``);
7. switch the instance to it in one index transaction (``adapters.index.compression``: copies and recipe recorded,
   the original released as a pending removal), and once the study is done remove the originals' bytes through
   the claim protocol (one claim for the study's keys).

A crash (kill -9) before step 7 leaves the original referenced and intact and the compressed bytes unreferenced
(the orphan sweep removes them); after it, the original's pending removal is finished by the removal sweep. The
work runs in the ``tier-study`` job of the study (``services.tiering``), throttled like tier moves.

Retrieval (``services.retrieve``): a client that accepts the stored syntax gets the compressed object as stored;
one that asks for the original syntax gets the rebuilt original (streamed frame by frame); any other syntax is
converted from the rebuilt original, so nothing differs from what it got before compression. HTJ2K has no
encoder on this Python (``dicom.lossless``), so the policy offers JPEG-LS lossless (the default: best ratio and
speed measured here, docs/benchmarks.md section 8) and JPEG 2000 lossless.
"""

from __future__ import annotations

import hashlib
import io
import logging
import multiprocessing
import threading
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import pydicom
from pydicom.encaps import encapsulate
from pydicom.errors import InvalidDicomError
from pydicom.uid import UID

from dicomvault.dicom import lossless
from dicomvault.domain.errors import DicomVaultError, IntegrityFailure, NotFound, NotRestored
from dicomvault.domain.records import BlobInfo, InstanceRecord, OriginalForm, OriginalRecipe
from dicomvault.ports.index import IndexRepository
from dicomvault.services import metrics, originals
from dicomvault.services.blob_copier import BlobCopier
from dicomvault.services.blob_tiers import TieredBlobs
from dicomvault.services.frames import build_frame_index
from dicomvault.services.header import parse_header
from dicomvault.services.inflate import Limits
from dicomvault.services.lifecycle import BlobRemover
from dicomvault.services.retrieve import RetrieveService

log = logging.getLogger(__name__)

NATIVE = frozenset({"1.2.840.10008.1.2", "1.2.840.10008.1.2.1"})
#: Default for ``compression_max_object_bytes``: an object, its frames and the compressed form fit in memory.
MAX_OBJECT_BYTES = 1 << 30


@dataclass
class CompressionWork:
    """What compressing one study did."""

    compressed: int = 0
    original_bytes: int = 0
    stored_bytes: int = 0
    skipped: int = 0
    #: reason → instances left as they are for it (this run)
    reasons: dict[str, int] = field(default_factory=dict)
    unreadable: int = 0  # on an archive storage class and not restored, or no intact copy: tried again later

    def as_dict(self) -> dict[str, Any]:
        return {"compressed": self.compressed, "original_bytes": self.original_bytes,
                "stored_bytes": self.stored_bytes, "skipped": self.skipped, "reasons": dict(self.reasons),
                "unreadable": self.unreadable}


#: Compressed instances proved per index page.
PROOF_PAGE = 200


@dataclass
class OriginalsReport:
    """What ``prove_all`` found: how many originals were rebuilt, and those that did not match (SOP Instance UID,
    blob key, what differs)."""

    checked: int = 0
    failed: list[tuple[str, str, str]] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {"checked": self.checked,
                "failed": [{"sop_uid": s, "key": k, "problem": p} for s, k, p in self.failed]}


@dataclass(frozen=True)
class Compressed:
    """A compressed object built in memory, with what rebuilds its original."""

    data: bytes
    syntax: str
    recipe: OriginalRecipe
    frame_index: str | None


def build_compressed(raw: bytes, syntax: str, limits: Limits) -> Compressed:
    """The compressed Part 10 object of the original ``raw`` and its recipe, proved to rebuild ``raw``; raises
    ``LosslessError`` with the reason when the object is not eligible or the proof fails."""
    try:
        ds = pydicom.dcmread(io.BytesIO(raw))
    except InvalidDicomError as exc:  # no File Meta Information: its syntax is a guess, not a fact to rebuild
        raise lossless.LosslessError(f"not a Part 10 file with File Meta Information ({exc})") from None
    reason = lossless.eligibility(ds, syntax)
    if reason is not None:
        raise lossless.LosslessError(reason)
    layout = lossless.frame_layout(ds)
    parsed = parse_header(io.BytesIO(raw), limits)
    try:
        pixel = parsed.pixel_layout
        original_syntax = parsed.transfer_syntax_uid
    finally:
        parsed.close()
    if pixel is None or pixel.encapsulated:
        raise lossless.LosslessError("the pixel data element could not be located")
    # Not verified frame by frame here: the proof below decodes every frame anyway, as part of the whole original.
    frames = lossless.encode_frames(ds, syntax, verify=False)
    # The same data set, re-encoded: explicit VR little endian (every compressed syntax is), encapsulated pixel
    # data with one fragment per frame (and a Basic Offset Table below 4 GiB), planar configuration 0.
    ds.PixelData = encapsulate(frames, has_bot=sum(len(f) + 8 for f in frames) < 0xFFFFFFFF)
    ds["PixelData"].VR = "OB"
    ds["PixelData"].is_undefined_length = True
    if "PlanarConfiguration" in ds:
        ds.PlanarConfiguration = 0
    ds.file_meta.TransferSyntaxUID = UID(syntax)
    out = io.BytesIO()
    ds.save_as(out, enforce_file_format=True, implicit_vr=False, little_endian=True)
    data = out.getvalue()
    form = OriginalForm(original_syntax, len(raw), hashlib.sha256(raw).hexdigest(), layout.as_dict(), pixel.length)
    recipe = OriginalRecipe(form, raw[:pixel.value_offset], raw[pixel.value_offset + pixel.length:], pixel.length)
    index = _frame_index(data, limits)
    if index is None or not index.encapsulated or index.count != layout.number_of_frames:
        raise lossless.LosslessError("the compressed object's frames could not be indexed")
    problem = originals.prove(io.BytesIO(data), syntax, index.first, recipe)
    if problem is not None:
        raise lossless.LosslessError(problem)
    return Compressed(data, syntax, recipe, index.encode())


def _build(raw: bytes, syntax: str, limits: Limits) -> Compressed | str:
    """``build_compressed``, with the reason (a string) instead of an exception when the object is left as it is:
    what a worker process sends back (domain errors do not all survive pickling)."""
    try:
        return build_compressed(raw, syntax, limits)
    except lossless.LosslessError as exc:
        return str(exc)
    except DicomVaultError as exc:  # the stored object does not parse as it did at ingest
        return f"not compressible: {exc.message}"


def _frame_index(data: bytes, limits: Limits) -> Any:
    stream = io.BytesIO(data)
    parsed = parse_header(stream, limits)
    try:
        if parsed.pixel_layout is None:
            return None
        return build_frame_index(stream, parsed.dataset, parsed.transfer_syntax_uid, parsed.pixel_layout,
                                 parsed.file_size)
    finally:
        parsed.close()


class CompressionService:
    def __init__(self, index: IndexRepository, tiers: TieredBlobs, copier: BlobCopier, retrieve: RetrieveService,
                 remover: BlobRemover, limits: Limits, *, max_object_bytes: int = MAX_OBJECT_BYTES,
                 processes: int = 1) -> None:
        self.index = index
        self.tiers = tiers
        self.copier = copier
        self.retrieve = retrieve
        self.remover = remover
        self.limits = limits
        self.max_object_bytes = max_object_bytes
        #: encoding processes (1: in the calling thread; the codecs hold the GIL, so threads would not help)
        self.processes = processes
        self._pool: ProcessPoolExecutor | None = None
        self._pool_lock = threading.Lock()

    # -- one study, one instance -----------------------------------------------------------------------------

    def _executor(self) -> ProcessPoolExecutor | None:
        if self.processes <= 1:
            return None
        with self._pool_lock:
            if self._pool is None:
                # spawn: the job worker has threads (and maybe open database connections) that a fork would copy
                self._pool = ProcessPoolExecutor(self.processes, mp_context=multiprocessing.get_context("spawn"))
            return self._pool

    def close(self) -> None:
        with self._pool_lock:
            if self._pool is not None:
                self._pool.shutdown(cancel_futures=True)
                self._pool = None

    def compress_study(self, study_uid: str, syntax: str, *,
                       should_stop: Callable[[], bool] = lambda: False) -> CompressionWork:
        """Compress every instance of the study still in a native syntax and not left as it is before. With
        ``processes`` > 1 the encoding runs in that many processes (the codecs hold the GIL), a few objects
        ahead of the writes; the originals are removed once per study (one claim for all their keys)."""
        work = CompressionWork()
        records = [r for r in self.retrieve.locate(study_uid=study_uid)
                   if r.transfer_syntax_uid in NATIVE and r.original is None and r.rows is not None]
        known = self.index.compression_skips([r.blob.key for r in records])
        todo = [r for r in records if r.blob.key not in known]
        released: list[str] = []
        pool = self._executor()
        window: deque[tuple[InstanceRecord, Future[Compressed | str]]] = deque()
        try:
            for record in todo:
                if should_stop():
                    break
                raw = self._read(record, work)
                if raw is None:
                    continue
                if pool is None:
                    self._finish(record, _build(raw, syntax, self.limits), work, released)
                    continue
                window.append((record, pool.submit(_build, raw, syntax, self.limits)))
                del raw
                while len(window) > 2 * self.processes:
                    done, future = window.popleft()
                    self._finish(done, future.result(), work, released)
            while window:
                done, future = window.popleft()
                self._finish(done, future.result(), work, released)
        finally:
            for _, future in window:
                future.cancel()
            if released:
                self.remover.remove(released)
        if work.compressed or work.skipped:
            log.info("compression: study done (%d compressed, %d -> %d bytes, %d left as they are)",
                     work.compressed, work.original_bytes, work.stored_bytes, work.skipped)
        return work

    def compress_instance(self, record: InstanceRecord, syntax: str, work: CompressionWork | None = None) -> None:
        """Compress one instance now, in this thread (``compress_study`` is the batch form)."""
        work = work if work is not None else CompressionWork()
        raw = self._read(record, work)
        if raw is None:
            return
        released: list[str] = []
        self._finish(record, _build(raw, syntax, self.limits), work, released)
        if released:
            self.remover.remove(released)

    def _read(self, record: InstanceRecord, work: CompressionWork) -> bytes | None:
        """The original's bytes, checked against its SHA-256 (None: left as it is, or not readable now)."""
        if record.blob.size > self.max_object_bytes:
            self._skip(record, f"larger than compression_max_object_bytes ({self.max_object_bytes})", work)
            return None
        try:
            raw = b"".join(self.retrieve.iter_bytes(record, verify=True))
        except (NotRestored, NotFound, IntegrityFailure) as exc:
            # Not the object's fault: fixity repairs or reports it, a recall makes it readable; tried again later.
            log.warning("compression: blob %s not readable now (%s)", record.blob.key, type(exc).__name__)
            work.unreadable += 1
            return None
        self.copier.throttle.take(len(raw))
        return raw

    def _finish(self, record: InstanceRecord, built: Compressed | str, work: CompressionWork,
                released: list[str]) -> None:
        """Store the compressed form on every store holding the original and switch the instance to it (or record
        why it is left as it is); the original's key joins ``released`` for the caller's removal."""
        if isinstance(built, str):
            self._skip(record, built, work)
            return
        if len(built.data) >= record.blob.size:
            self._skip(record, "the compressed form is not smaller", work)
            return
        stores = [c.store for c in self.index.blob_copies([record.blob.key]).get(record.blob.key, [])]
        stores = stores or [self.tiers.ingest_name]
        new = self._put(built.data, stores)
        if new is None:
            work.unreadable += 1
            return
        outcome = self.index.switch_to_compressed(
            record.sop_uid, record.blob, new, syntax=built.syntax, frame_index=built.frame_index,
            recipe=built.recipe, stores=stores)
        if not outcome.done:
            log.info("compression: instance changed meanwhile; compressed bytes left to the orphan sweep")
            return
        released.extend(b.key for b in outcome.released)
        work.compressed += 1
        work.original_bytes += record.blob.size
        work.stored_bytes += new.size
        metrics.COMPRESSED_INPUT_BYTES.inc(record.blob.size)
        metrics.COMPRESSED_OUTPUT_BYTES.inc(new.size)

    def _put(self, data: bytes, stores: list[str]) -> BlobInfo | None:
        """Write ``data`` to each store and read it back there; None when a store failed (tried again later)."""
        digest = hashlib.sha256(data).hexdigest()
        new: BlobInfo | None = None
        for name in stores:
            self.copier.throttle.take(len(data))
            put = self.tiers.store(name).put(io.BytesIO(data))
            if put.info.sha256 != digest or put.info.size != len(data):
                log.error("compression: store %s wrote other bytes than given", name)
                return None
            new = put.info
            problem = self.copier.check(new, name)
            if problem is not None:
                log.error("compression: the compressed copy on store %s reads back wrong (%s)", name, problem)
                return None
        return new

    def _skip(self, record: InstanceRecord, reason: str, work: CompressionWork) -> None:
        log.info("compression: an instance is left as it is: %s", reason)
        self.index.record_compression_skip(record.blob.key, reason)
        metrics.COMPRESSION_SKIPPED.inc()
        work.skipped += 1
        work.reasons[reason] = work.reasons.get(reason, 0) + 1

    # -- the deep fixity proof -------------------------------------------------------------------------------

    def prove_all(self, progress: Callable[[int], None] | None = None) -> OriginalsReport:
        """Rebuild the original of every instance compressed at rest and compare it with the SHA-256 received
        (``dicomvault verify --originals``): the proof that compression lost nothing, years later."""
        report = OriginalsReport()
        after = 0
        while page := self.index.compressed_instances(after_id=after, limit=PROOF_PAGE):
            after = page[-1][0]
            for record in self.retrieve.locate(sop_uids=[uid for _, uid in page]):
                try:
                    problem = self.prove(record)
                except (NotFound, NotRestored, IntegrityFailure) as exc:
                    problem = f"the compressed object cannot be read ({type(exc).__name__})"
                report.checked += 1
                if problem is not None:
                    report.failed.append((record.sop_uid, record.blob.key, problem))
                    log.error("compression: the original of blob %s cannot be proved: %s", record.blob.key, problem)
            if progress is not None:
                progress(report.checked)
        return report

    def prove(self, record: InstanceRecord) -> str | None:
        """None when the instance is not compressed at rest or its original rebuilds with the SHA-256 received;
        else what is wrong (read from the first readable store, like every read)."""
        if record.original is None:
            return None
        recipe = self.index.original_recipe(record.blob.key)
        index = record.frame_index
        if recipe is None or index is None:
            return "the recipe or the frame index of the compressed object is missing"
        with self.tiers.open(record.blob.key) as f:
            return originals.prove(f, record.transfer_syntax_uid, index.first, recipe)


__all__ = ["CompressionService", "CompressionWork", "OriginalsReport", "build_compressed"]
