"""The one ingest path used by every front end (C-STORE, STOW-RS, CLI import).

parse header (no pixel data) → validate → build index entry and cached JSON → frame index → durable blob put
(SHA-256 computed while streaming) → index in one transaction → only then return, so the caller acknowledges
only what is durable and indexed. If the duplicate policy refuses the object, a blob this call created is removed
again; if the process dies in between, the blob is an orphan that ``verify --repair`` removes: never an index row
without its blob. Blobs are removed only through ``services.lifecycle.BlobRemover``; when the index says the blob
was being removed while this store found it present (``BlobRemovalRace``), the bytes are written again and the
index write retried (the case analysis is in ``services.lifecycle``).

Duplicates (issue #10). The same bytes under a stored SOP Instance UID are a success that writes nothing, after a
look at the stored copy: if it is missing or fails its checksum, the received bytes are written in its place
(``_repair``) before the success is answered. Other bytes under a stored SOP Instance UID are first compared as
data sets (``services.content_identity``: File Meta and encoding left out); the same data set is a success that
stores nothing either. Only a different data set is a conflict, which the duplicate policy settles (``reject``:
``Conflict``; ``replace`` and ``keep-both`` as before). When the stored copy cannot be read to compare, ``reject``
refuses (the stored copy's loss is for ``verify`` to report, not for an unverifiable object to paper over), the
other policies store the received object.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any, BinaryIO

from dicomvault.domain.errors import (
    BlobRemovalRace,
    Conflict,
    DamagedPixelData,
    DicomVaultError,
    InvalidDicom,
    InvalidIdentity,
    NotFound,
    Unavailable,
    WrongStudy,
)
from dicomvault.domain.records import (
    BlobInfo,
    DuplicatePolicy,
    InstanceEntry,
    PixelLengthPolicy,
    StoreOutcome,
    StoreResult,
)
from dicomvault.domain.tags import Level
from dicomvault.domain.tiers import DEFAULT_STORE
from dicomvault.ports.blobs import BlobStore, PutResult
from dicomvault.ports.index import IndexRepository
from dicomvault.services import content_identity
from dicomvault.services import header as hdr
from dicomvault.services.coercion import Coercion
from dicomvault.services.frames import build_frame_index
from dicomvault.services.inflate import Limits
from dicomvault.services.lifecycle import MAX_PUT_AGE, BlobRemover

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class IngestResult:
    outcome: StoreOutcome
    sop_class_uid: str
    sop_instance_uid: str
    study_uid: str
    series_uid: str
    transfer_syntax_uid: str
    blob: BlobInfo
    #: stored under the ``accept-and-flag`` policy although its pixel data cannot be decoded: why
    pixel_problem: str | None = None

    @property
    def warning(self) -> str | None:
        if self.outcome == StoreOutcome.DUPLICATE:
            return None
        if self.outcome in (StoreOutcome.REPLACED, StoreOutcome.VERSIONED):
            return f"an earlier object with this SOP Instance UID was {self.outcome.value}"
        return None


def _check_request(cols: dict[Level, dict[str, Any]], expect: tuple[str, str] | None,
                   target_study: str | None) -> None:
    """The data set against what the request said it is (``IngestService.ingest``'s ``expect``/``target_study``)."""
    sop_class, sop_uid = cols[Level.IMAGE]["sop_class_uid"] or "", cols[Level.IMAGE]["sop_uid"] or ""
    if expect is not None:
        # Storing it would index the object under a UID the sender did not mean.
        if sop_uid != expect[1]:
            raise InvalidIdentity("Affected SOP Instance UID differs from the data set's",
                                  sop_class_uid=sop_class, sop_instance_uid=sop_uid)
        if sop_class != expect[0]:
            raise InvalidIdentity("Affected SOP Class UID differs from the data set's",
                                  sop_class_uid=sop_class, sop_instance_uid=sop_uid)
    if target_study is not None and cols[Level.STUDY]["study_uid"] != target_study:
        raise WrongStudy("Study Instance UID differs from the study in the URL",
                         study_uid=cols[Level.STUDY]["study_uid"] or "", sop_class_uid=sop_class,
                         sop_instance_uid=sop_uid)


def _sha256_of(stream: BinaryIO) -> str:
    stream.seek(0)
    digest = hashlib.sha256()
    while chunk := stream.read(1 << 20):
        digest.update(chunk)
    return digest.hexdigest()


#: Why a re-sent object was refused when the stored copy under its SOP Instance UID cannot be read to compare
#: (at most 64 characters: it becomes an Error Comment).
STORED_COPY_DAMAGED = "stored copy with this SOP Instance UID is damaged: not stored"

#: Seconds between looks at a blob removal that a store is waiting for (one primary-key read each): the first
#: look soon (a live deleter needs a few milliseconds per blob), then doubling up to the last value.
REMOVAL_POLL = (0.002, 0.05)
#: Index writes one store may attempt while removals of the same bytes keep refusing it (each refusal needs a
#: whole new delete of the object racing it; more than a few means something is wrong).
REMOVAL_ATTEMPTS = 5


class IngestService:
    def __init__(
        self,
        index: IndexRepository,
        blobs: BlobStore,
        remover: BlobRemover,
        *,
        policy: DuplicatePolicy,
        precheck_duplicates: bool = True,
        limits: Limits | None = None,
        pixel_policy: PixelLengthPolicy = PixelLengthPolicy.REJECT,
        removal_wait: float = 20.0,
        store_name: str = DEFAULT_STORE,
        ingest_store: BlobStore | None = None,
    ) -> None:
        """``precheck_duplicates``: ask the index whether an identical object is already stored before sending
        the bytes to the blob store. Worth it where a put is expensive (S3: the whole body crosses the network
        before the store can say it has the object). On the filesystem a re-sent object costs one temporary
        write (the store then finds the content-addressed blob present and links nothing), which is cheaper
        overall than a query for every new instance: re-sends are rare, new instances are the hot path.

        ``removal_wait``: how long a store waits for a removal of the same bytes that is in progress before it
        answers ``Unavailable``. A live deleter finishes a batch of ``CLAIM_BATCH`` deletions in well under a
        second; what stays longer is a deleter that died, whose claim the sweep takes over only after
        ``blob_removal_stale_after``. 20 s stays below the usual DIMSE response timeouts (30-60 s)."""
        self.index = index
        self.blobs = blobs
        self.remover = remover
        self.policy = policy
        self.precheck_duplicates = precheck_duplicates
        self.limits = limits or Limits()
        self.pixel_policy = pixel_policy
        self.removal_wait = removal_wait
        #: the named store puts land on (``blobs`` is every store as one: ``services.blob_tiers``), recorded in the
        #: index as the copy's location; its own copy is what ``_repair`` checks and writes again
        self.store_name = store_name
        self.local = ingest_store if ingest_store is not None else blobs
        #: told (SOP Class UID, SOP Instance UID, DICOM JSON header, source) of every object stored or re-sent,
        #: after the index write and before the answer (``services.iocm``: rejection notes hide what they reject);
        #: an error it raises is the store's answer, so the sender retries and the re-sent object applies it again
        self.after_store: Callable[[str, str, dict[str, Any], str], None] | None = None
        #: attribute coercion rules (``services.coercion``; set by bootstrap when ``[[coercion]]`` rules exist)
        self.coercion: Coercion | None = None

    def ingest(self, stream: BinaryIO, *, source: str = "", expect: tuple[str, str] | None = None,
               target_study: str | None = None, _coerced: bool = False) -> IngestResult:
        """Store one Part 10 object read from a seekable ``stream``. Raises ``InvalidDicom``: ``NotDicom`` (empty, or
        no DICOM object at all), ``MalformedDicom`` (truncated, unreadable), ``InvalidIdentity`` (a required UID
        missing or invalid), ``DamagedPixelData`` (native pixel data shorter than the header describes, under the
        ``reject`` policy), each naming the instance when its UIDs could be read; ``TooLarge`` (a deflated data
        set beyond the inflation limits), ``Conflict``, ``Unavailable``. Returns only after the object is durable
        and indexed.

        ``expect``: (SOP Class UID, SOP Instance UID) the sender's command names (C-STORE's Affected SOP Class and
        Instance UIDs): a data set naming others is refused (``InvalidIdentity``). ``target_study``: the study the
        request addresses (STOW-RS to ``/studies/{uid}``): a data set of another study is refused
        (``WrongStudy``). Both are checked on this call's own parse, before anything is written."""
        parsed = hdr.parse_header(stream, self.limits)
        try:
            ds = parsed.dataset
            data = hdr.json_dict(ds, parsed)
            hdr.validate(data)
            cols = hdr.index_columns(data, parsed.transfer_syntax_uid)
            _check_request(cols, expect, target_study)
            if self.coercion and not _coerced:
                rewritten = self.coercion.rewrite(
                    parsed, stream, source=source, modality=cols[Level.SERIES].get("modality"),
                    sop_class=cols[Level.IMAGE]["sop_class_uid"])
                if rewritten is not None:  # what the rules made of the object is stored (its UIDs are unchanged)
                    with rewritten[0] as coerced:
                        return self.ingest(coerced, source=source, target_study=target_study,  # type: ignore[arg-type]
                                           _coerced=True)
            meta_json = hdr.dumps(data)
            problem = parsed.pixel_problem
            if problem is not None:
                if self.pixel_policy == PixelLengthPolicy.REJECT:
                    raise DamagedPixelData(problem, sop_class_uid=cols[Level.IMAGE]["sop_class_uid"] or "",
                                           sop_instance_uid=cols[Level.IMAGE]["sop_uid"] or "")
                cols[Level.IMAGE]["pixel_problem"] = problem[:128]
            frame_index = None
            # A deflated object's frames lie in its inflated data set, not in the blob: no index (retrieval
            # inflates, bounded); damaged pixel data has no frames to locate.
            if parsed.pixel_layout is not None and not parsed.deflated and problem is None:
                try:
                    frame_index = build_frame_index(
                        stream, ds, parsed.transfer_syntax_uid, parsed.pixel_layout, parsed.file_size
                    )
                except Exception:
                    log.debug("frame index not built", exc_info=True)
                    frame_index = None
        finally:
            parsed.close()
        if self.precheck_duplicates:
            sop_uid = cols[Level.IMAGE]["sop_uid"]
            known = self.index.instance_checksum(sop_uid)
            if known is not None and known == _sha256_of(stream) and self._intact(known, known):
                # Re-sent identical object (a modality retrying, an import re-run): success, nothing written.
                if self.after_store is not None:
                    self.after_store(cols[Level.IMAGE]["sop_class_uid"], sop_uid, data, source)
                return IngestResult(StoreOutcome.DUPLICATE, cols[Level.IMAGE]["sop_class_uid"], sop_uid,
                                    cols[Level.STUDY]["study_uid"], cols[Level.SERIES]["series_uid"],
                                    parsed.transfer_syntax_uid, BlobInfo(known, parsed.file_size, known),
                                    pixel_problem=problem)
        entry = InstanceEntry(
            patient=cols[Level.PATIENT],
            study=cols[Level.STUDY],
            series=cols[Level.SERIES],
            instance=cols[Level.IMAGE],
            blob=BlobInfo("", 0, ""),  # set from the put
            metadata_json=meta_json,
            frame_index=frame_index,
            source=source,
        )
        try:
            put, result, same_as = self._put_and_index(stream, entry, parsed.file_size)
        except Conflict as conflict:  # the index names the instance only: the front ends name its class too
            conflict.sop_class_uid = conflict.sop_class_uid or cols[Level.IMAGE]["sop_class_uid"] or ""
            conflict.sop_instance_uid = conflict.sop_instance_uid or cols[Level.IMAGE]["sop_uid"] or ""
            raise
        blob = put.info
        if same_as is not None:
            blob = same_as  # the same data set in other bytes: the stored copy stays the one served
            log.info("re-sent instance has the stored content in another encoding: nothing stored (source=%s)",
                     source)
        elif result.outcome == StoreOutcome.DUPLICATE:
            self._repair(stream, put)
        if result.released_blobs:
            self.remover.remove(b.key for b in result.released_blobs)
        log.info(
            "stored instance outcome=%s size=%d ts=%s source=%s",
            result.outcome.value, put.info.size, parsed.transfer_syntax_uid, source,
        )
        if problem is not None:
            log.warning("stored an instance flagged by pixel_length_policy: %s (source=%s)", problem, source)
        if self.after_store is not None:
            self.after_store(cols[Level.IMAGE]["sop_class_uid"], cols[Level.IMAGE]["sop_uid"], data, source)
        return IngestResult(
            outcome=result.outcome,
            sop_class_uid=cols[Level.IMAGE]["sop_class_uid"],
            sop_instance_uid=cols[Level.IMAGE]["sop_uid"],
            study_uid=cols[Level.STUDY]["study_uid"],
            series_uid=cols[Level.SERIES]["series_uid"],
            transfer_syntax_uid=parsed.transfer_syntax_uid,
            blob=blob,
            pixel_problem=problem,
        )

    def _intact(self, key: str, sha256: str, store: BlobStore | None = None) -> bool:
        """Whether the stored blob ``key`` is present (on ``store``, default: any) and holds bytes with this SHA-256
        (read in full: only on the duplicate path)."""
        try:
            with (store or self.blobs).open(key) as f:
                return _sha256_of(f) == sha256
        except NotFound:
            return False

    def _repair(self, stream: BinaryIO, put: PutResult) -> None:
        """After a duplicate of the same bytes: make sure the stored copy (the same key) is intact. The put above
        wrote it if it was missing; a present but damaged copy is deleted and written again from ``stream``.
        Returns once the repaired copy is durable (the put's guarantee)."""
        if put.created:
            log.info("a missing stored copy was written again from a re-sent object (blob %s)", put.info.key)
            return
        if self._intact(put.info.key, put.info.sha256, self.local):
            return
        # Not through BlobRemover: the key is referenced (the index row is the duplicate's) and its bytes are
        # put back at once; a reader in between finds it missing instead of damaged.
        self.local.delete(put.info.key)
        stream.seek(0)
        again = self.local.put(stream)
        if again.info.sha256 != put.info.sha256:
            raise InvalidDicom("object changed while it was being stored")
        log.info("a damaged stored copy was written again from a re-sent object (blob %s)", put.info.key)

    def _index(self, stream: BinaryIO, entry: InstanceEntry, accept: str | None) -> tuple[StoreResult, BlobInfo | None]:
        """The index write. Under an existing SOP Instance UID with other bytes, compare the data sets first:
        the same content is a duplicate (returned with the stored blob); otherwise the duplicate policy
        applies. The first attempt is always ``reject``, which writes nothing, so that ``replace`` and
        ``keep-both`` do not replace or version an object by the same content in another encoding."""
        try:
            return self.index.store_instance(entry, DuplicatePolicy.REJECT, accept_removal=accept), None
        except Conflict as conflict:
            stored = self._same_as_stored(stream, conflict, entry.blob.sha256)
            if stored is not None:
                return StoreResult(StoreOutcome.DUPLICATE), stored
        return self.index.store_instance(entry, self.policy, accept_removal=accept), None

    def _same_as_stored(self, stream: BinaryIO, conflict: Conflict, received_sha256: str) -> BlobInfo | None:
        """The stored blob when it holds the received data set; None when it holds another one (under the
        ``reject`` policy: raises ``conflict``, or a ``Conflict`` saying the stored copy cannot be compared).
        A stored blob that is the compressed form of exactly these bytes (``services.compression``) is the
        received object: a re-send after compression is a duplicate."""
        stored = BlobInfo(conflict.stored_key, conflict.stored_size, conflict.stored_sha256)
        if conflict.stored_original_sha256 and conflict.stored_original_sha256 == received_sha256:
            return stored
        try:
            received = content_identity.content_digest(stream, self.limits)
        except DicomVaultError:
            received = None  # parsed once already; whatever fails now makes it no duplicate
        kept: str | None = None
        if received is not None and stored.key:
            try:
                if self._intact(stored.key, stored.sha256):
                    with self.blobs.open(stored.key) as f:
                        kept = content_identity.content_digest(f, self.limits)
            except DicomVaultError as exc:
                if isinstance(exc, Unavailable):
                    raise
                log.debug("stored copy not comparable", exc_info=True)
            if kept is None:
                log.warning("the stored copy of a re-sent instance is missing or damaged (blob %s)", stored.key)
                if self.policy == DuplicatePolicy.REJECT:
                    raise Conflict(STORED_COPY_DAMAGED, conflict.sop_instance_uid, stored_key=stored.key,
                                   stored_size=stored.size, stored_sha256=stored.sha256) from conflict
                return None
        if received is not None and received == kept:
            return stored
        if self.policy == DuplicatePolicy.REJECT:
            raise conflict
        return None

    def _put_and_index(
        self, stream: BinaryIO, entry: InstanceEntry, size: int
    ) -> tuple[PutResult, StoreResult, BlobInfo | None]:
        """Durable put, then the index transaction (``_index``); again (at most ``REMOVAL_ATTEMPTS`` times) while
        the index reports a removal of these bytes that the put may not have seen (``BlobRemovalRace``). The
        third value is the stored blob when the object is the stored data set in other bytes (then the bytes
        just put are removed again, referenced by nothing)."""
        accept: str | None = None
        for _ in range(REMOVAL_ATTEMPTS):
            stream.seek(0)
            began = time.monotonic()
            put = self.blobs.put(stream)
            if put.info.size != size:
                raise InvalidDicom("object changed while it was being stored")
            if time.monotonic() - began > MAX_PUT_AGE:
                raise Unavailable("the object took too long to be written to storage; send it again")
            try:
                result, same_as = self._index(
                    stream, replace(entry, blob=put.info, store=self.store_name, blob_created=put.created), accept)
                if same_as is not None and put.created:
                    self.remover.remove([put.info.key], unreferenced_found=True)
                return put, result, same_as
            except Conflict:
                # Refused by the duplicate policy: these bytes are referenced by nothing (another node storing
                # the same bytes gets the same refusal), so a blob this call created goes at once, through the
                # claim protocol like every removal.
                if put.created:
                    self.remover.remove([put.info.key], unreferenced_found=True)
                raise
            except BlobRemovalRace as race:
                accept = self._await_removal(race)
                log.info("store met a removal of the same bytes; writing them again")
            # Any other failure (database unavailable, crash) leaves the blob in place: another node may be
            # about to reference the same content-addressed key. Unreferenced blobs are removed by
            # `verify --repair` after a grace period.
        raise Unavailable("removals of this object's stored copy keep racing its store; try again later")

    def _await_removal(self, race: BlobRemovalRace) -> str | None:
        """Wait until the removal that refused the store has finished; returns the claim to accept on retry
        (None: no removal recorded any more). Raises ``Unavailable`` after ``removal_wait`` seconds."""
        deadline = time.monotonic() + self.removal_wait
        claim, finished = race.claim, race.finished
        pause, longest = REMOVAL_POLL
        while not finished:
            if time.monotonic() >= deadline:
                raise Unavailable("a removal of this object's stored copy is not finished; try again later")
            time.sleep(pause)
            pause = min(longest, pause * 2)
            now = self.index.blob_removal_round(race.key)
            if now is None:
                return None
            claim, finished = now.claim, now.finished
        return claim
