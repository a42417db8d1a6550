"""The index repository port: the patient/study/series/instance catalogue.

Every method is one transaction. The SQLite and PostgreSQL adapters implement the same contract and are run
through the same contract tests; differences between engines are the adapter's business, never a service's.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from datetime import datetime
from typing import Any, Protocol

from dicomvault.domain.compression import CompressedSwitch, CompressionSavings
from dicomvault.domain.query import QuerySpec
from dicomvault.domain.records import (
    ArchiveStats,
    BlobClaim,
    BlobInfo,
    DuplicatePolicy,
    InstanceEntry,
    InstanceRecord,
    OriginalRecipe,
    RemovalRound,
    StoreResult,
)
from dicomvault.domain.tags import Level
from dicomvault.domain.tiers import (
    BlobCopy,
    CopyTarget,
    StoreUsage,
    StudyBlob,
    StudyCandidate,
    StudyCondition,
    StudyFacts,
)
from dicomvault.domain.trash import Deletion, DeletionEntry, PurgeBatch, Rejected, TrashItem


class IndexRepository(Protocol):
    def store_instance(
        self, entry: InstanceEntry, policy: DuplicatePolicy, *, accept_removal: str | None = None
    ) -> StoreResult:
        """Index one instance in a single transaction (patient, study, series upserts, counters, instance row).

        Safe under concurrent calls for the same study. Raises ``Conflict`` (naming the stored blob) when the
        policy is ``reject`` and other bytes exist under the same SOP Instance UID; whether they are another data
        set is for ingest to decide. Blobs the policy releases are recorded as
        pending removals in the same transaction (``StoreResult.released_blobs``).

        Blob removal protocol (``services.lifecycle``): a pending removal of the entry's blob key is cancelled
        (the blob is referenced again); a claimed one raises ``BlobRemovalRace`` (unfinished), a finished one
        raises it too (finished) unless its claim is ``accept_removal``, which the caller passes after writing
        the blob again once that claim had finished.
        """
        ...

    def find(self, spec: QuerySpec) -> list[dict[str, Any]]:
        """Rows matching ``spec``, each a mapping of keyword → value for the indexed attributes of the level and
        its parents, plus ``_metadata`` (the cached DICOM JSON text) at IMAGE level and ``_uid`` of the row."""
        ...

    def find_study_json(self, spec: QuerySpec) -> list[tuple[int, str, str | dict[str, Any]]]:
        """For a STUDY-level ``spec``: (row id, Study Instance UID, answer) per matching study, in the order and
        page of ``find``. The answer is the study's default QIDO-RS object as compact DICOM JSON text, cached by
        the index and kept current in every transaction that changes the study; where no current one is cached
        (a study indexed before the cache existed), it is the study's row as ``find`` returns it instead."""
        ...

    def representative_metadata(self, *, study_uid: str, series_uid: str | None = None) -> str | None:
        """The cached DICOM JSON of one instance of the study (or series): the source of non-indexed return
        keys at study and series level."""
        ...

    def representative_metadata_many(self, level: Level, row_ids: list[int]) -> dict[int, str]:
        """``representative_metadata`` for a page of STUDY or SERIES rows of ``find`` (by their ``_id``) in one
        query: row id → the cached DICOM JSON of the row's first stored instance (rows without one are absent)."""
        ...

    def instances(
        self,
        *,
        patient_id: str | None = None,
        study_uid: str | None = None,
        series_uid: str | None = None,
        sop_uids: list[str] | None = None,
    ) -> list[InstanceRecord]:
        """Instances under the given identifiers, ordered by series then instance number."""
        ...

    def frame_index_text(self, sop_uid: str, blob_key: str, start: int, length: int | None) -> str | None:
        """``length`` characters (None: all) of the stored frame index text of ``sop_uid`` from character
        ``start`` (0-based), while its current content is ``blob_key``; None if it is not (any longer)."""
        ...

    def metadata(
        self, *, study_uid: str, series_uid: str | None = None, sop_uid: str | None = None
    ) -> Iterator[str]:
        """Cached DICOM JSON texts (one per instance), never read from blobs."""
        ...

    def metadata_documents(
        self, *, study_uid: str, series_uid: str | None = None, sop_uid: str | None = None
    ) -> list[tuple[str, str, str]]:
        """(Series Instance UID, SOP Instance UID, cached DICOM JSON text) per instance, in ``metadata`` order:
        the UIDs spare the caller a search through each text."""
        ...

    def metadata_version(self, *, study_uid: str, series_uid: str | None = None) -> tuple[Any, ...] | None:
        """A cheap token that differs whenever an instance of the study (or series) has been stored, removed or
        replaced since it was taken, also by another process; None when no instance matches. Read it before
        the documents it validates."""
        ...

    def delete(
        self, *, study_uid: str, series_uid: str | None = None, sop_uid: str | None = None,
        deletion: Deletion | None = None,
    ) -> list[BlobInfo]:
        """Remove instances (and now-empty series, studies, patients); return blobs no longer referenced (a key in
        the trash is referenced), which the same transaction records as pending removals (remove them with
        ``services.lifecycle``). When anything was removed, the same transaction writes a ``delete`` row of the
        deletion log naming ``deletion`` (None: unattributed, e.g. fixity dropping rows of lost data)."""
        ...

    # -- Soft delete, the trash and the deletion log (``services.trash``, ``adapters.index.trash``) -----------------
    # A key in the trash counts as referenced wherever this port decides whether a blob is: removal claims,
    # ``blob_referenced``, the release decision of ``delete`` and of a replacing store, ``add_blob_copy``, and the
    # walks ``iter_blob_refs``, ``iter_blob_copies`` and ``iter_uncopied_blobs``.

    def soft_delete(
        self, *, study_uid: str, series_uid: str | None = None, sop_uid: str | None = None,
        purge_after: datetime, deletion: Deletion,
    ) -> list[BlobInfo]:
        """``delete``, except that the released blobs go into the trash (restorable until ``purge_after``, then
        purged) instead of being recorded as pending removals, and the log row says ``soft-delete``. One
        transaction. A key already trashed (its object was sent again since) is trashed again with these times.
        Returns the trashed blobs."""
        ...

    def record_rejections(self, rows: Sequence[Rejected]) -> None:
        """Remember instances rejected by IOCM rejection notes (a later note replaces an instance's code)."""
        ...

    def rejection(self, sop_uid: str) -> Rejected | None:
        """The rejection of ``sop_uid`` if a note rejected it (one primary-key read)."""
        ...

    def has_rejections(self) -> bool:
        """Whether any instance was ever rejected (lets ingest skip the per-object check on archives that never
        received a rejection note)."""
        ...

    def trash_items(self, *, study_uid: str | None = None, series_uid: str | None = None,
                    sop_uid: str | None = None, limit: int | None = None) -> list[TrashItem]:
        """Trashed blobs (optionally of one study, series, instance), ordered by study, series, instance."""
        ...

    def trash_due(self, *, now: datetime, limit: int) -> list[str]:
        """Keys of at most ``limit`` trashed blobs whose ``purge_after`` is at or before ``now``, oldest first."""
        ...

    def untrash_restored(self, keys: Sequence[str], *, study_uid: str, series_uid: str | None, sop_uid: str | None,
                         instances_count: int, deletion: Deletion) -> int:
        """After a restore ingested the objects of ``keys`` again: delete the trash rows of those keys an instance
        or prior-version row references now (the others stay trashed) and write a ``restore`` log row, in one
        transaction; returns the rows deleted."""
        ...

    def purge_trash(self, keys: Sequence[str], *, due_at: datetime | None, deletion: Deletion) -> PurgeBatch:
        """Purge the trashed ``keys`` whose ``purge_after`` is at or before ``due_at`` (None: regardless): in one
        transaction that locks them, delete their trash rows, record those no instance or prior-version row
        references as pending removals, and write a ``purge`` log row per study. ``PurgeBatch.remove`` is what
        the caller must now remove with ``BlobRemover.remove``; it is empty when the adapter could not yet make
        that safe (the pending removals are then finished by the sweep)."""
        ...

    def deletion_log(self, *, study_uid: str | None = None, limit: int = 100) -> list[DeletionEntry]:
        """The latest ``limit`` rows of the deletion log (of one study), newest first."""
        ...

    def claim_blob_removals(
        self, keys: Sequence[str], *, stale_after: float, unreferenced_found: bool = False
    ) -> BlobClaim:
        """In one write transaction, claim the removal of each of ``keys`` that no index row references: a
        pending removal, or one claimed more than ``stale_after`` seconds ago and not finished (its deleter
        crashed). With ``unreferenced_found`` (the caller saw the blob present and unreferenced: an orphan, a
        refused duplicate's bytes) keys without a pending removal are claimed too. A pending removal whose key
        is referenced again is cancelled. Only the returned keys may be deleted, then ``finish_blob_removals``."""
        ...

    def finish_blob_removals(self, claim: str, keys: Sequence[str]) -> None:
        """Record that the blobs of ``keys`` claimed under ``claim`` are deleted."""
        ...

    def blob_removal_round(self, key: str) -> RemovalRound | None:
        """The latest claimed removal of ``key`` (None: no claim recorded). Cheap: one primary-key read."""
        ...

    def blob_removals_due(self, *, stale_after: float, limit: int) -> list[str]:
        """Keys whose removal was left unfinished for ``stale_after`` seconds: pending, or claimed and not
        finished (the periodic sweep claims them again)."""
        ...

    def forget_blob_removals(self, *, older_than: float) -> int:
        """Drop records of removals finished more than ``older_than`` seconds ago; returns how many."""
        ...

    def iter_blob_refs(self) -> Iterator[tuple[str, BlobInfo]]:
        """(SOP Instance UID, blob) for every indexed blob, current and prior versions and the trash (verify,
        migration)."""
        ...

    def blob_referenced(self, key: str) -> bool:
        """Whether an instance or prior-version row references ``key`` or the trash holds it."""
        ...

    def instance_checksum(self, sop_uid: str) -> str | None:
        """SHA-256 of the current content of ``sop_uid``, or None if it is not stored (cheap duplicate check)."""
        ...

    def replace_blob_key(self, old_key: str, new: BlobInfo) -> int:
        """Point every reference to ``old_key`` at ``new`` (storage migration); returns rows changed."""
        ...

    def stats(self) -> ArchiveStats: ...

    # -- Storage tiers: verified copies of blobs on named stores (``services.tiering``) ----------------------------
    # ``store_instance`` records the copy on ``entry.store`` in its transaction when the put wrote the blob
    # (``entry.blob_created``) or when no copy of the key is recorded yet; a put that found bytes a tier move is
    # about to delete records nothing, because the copy the move recorded elsewhere already holds them.
    # ``finish_blob_removals`` forgets the copies of the keys it finishes.

    def blob_copies(self, keys: Sequence[str]) -> dict[str, list[BlobCopy]]:
        """The recorded verified copies of each of ``keys`` (keys without any are absent)."""
        ...

    def add_blob_copy(self, key: str, store: str, *, verified_at: datetime, present: Callable[[], bool]) -> bool:
        """Record that ``store`` holds a copy of ``key`` whose SHA-256 was verified at ``verified_at`` (an
        existing record gets the new time). In one write transaction that locks the key's copy rows, ``present()``
        is asked (is the blob on the store now?) and the record written only if it answers True, so that a
        concurrent ``drop_blob_copy`` of the same copy is ordered entirely before or after. False, recording
        nothing, when ``present()`` is False or no index row references ``key`` any more (its blob is being
        removed; the caller's copy is garbage for the removal sweep)."""
        ...

    def drop_blob_copy(self, key: str, store: str, *, delete: Callable[[], None]) -> bool:
        """Forget the copy of ``key`` on ``store`` and remove its bytes, if at least one other recorded copy
        remains: in one write transaction that locks the key's copy rows (PostgreSQL ``SELECT … FOR UPDATE``),
        the record is deleted, ``delete()`` removes the bytes, then the transaction commits (an exception from
        ``delete`` rolls it back). False, changing nothing, when it is the last copy or not recorded."""
        ...

    def study_blobs(self, study_uid: str) -> list[StudyBlob]:
        """Every blob the study references (current instances and prior versions) with the stores holding
        recorded copies; empty when the study is unknown."""
        ...

    def studies_needing(
        self, condition: StudyCondition, target: CopyTarget, *, now: datetime, after: str = "", limit: int = 1000
    ) -> list[StudyCandidate]:
        """Studies matching ``condition`` at ``now`` with at least one blob not yet as ``target`` wants, ordered by
        Study Instance UID and starting after ``after`` (keyset paging), at most ``limit``."""
        ...

    def studies_matching(
        self, condition: StudyCondition, *, now: datetime, after: str = "", limit: int = 1000
    ) -> list[StudyCandidate]:
        """Every study matching ``condition`` at ``now`` (``studies_needing`` without the blob test: the selection of
        a delete rule), in the same order and paging."""
        ...

    def study_facts(self, study_uid: str) -> StudyFacts | None:
        """What lifecycle conditions look at for one study (None: unknown study)."""
        ...

    def note_study_reads(self, study_uids: Sequence[str], at: datetime) -> None:
        """Set the last-read time of these studies to ``at`` (one statement; unknown UIDs are ignored)."""
        ...

    def store_usage(self) -> list[StoreUsage]:
        """Per store with at least one recorded copy: studies, copies, bytes, and copies and bytes per modality."""
        ...

    def iter_blob_copies(self, store: str) -> Iterator[tuple[str, BlobInfo, tuple[str, ...]]]:
        """(SOP Instance UID, blob, stores holding a recorded copy) for every referenced blob with a copy recorded
        on ``store`` (fixity of one store), streamed in key order."""
        ...

    def iter_uncopied_blobs(self) -> Iterator[tuple[str, BlobInfo]]:
        """Referenced blobs with no recorded copy at all (an index row without verified bytes: data loss, or an
        index written before copies were recorded)."""
        ...

    # -- lossless compression at rest (``services.compression``) ------------------------------------------

    def switch_to_compressed(self, sop_uid: str, old: BlobInfo, new: BlobInfo, *, syntax: str,
                             frame_index: str | None, recipe: OriginalRecipe,
                             stores: Sequence[str]) -> CompressedSwitch:
        """In one transaction: point the instance at its compressed blob ``new`` (in ``syntax``, with the frame
        index text of the compressed object) if it still points at ``old``, keep ``recipe`` for ``new``, record
        ``new``'s verified copies on ``stores``, and record ``old`` as a pending removal unless still referenced.
        Raises ``BlobRemovalRace`` when ``new`` is being removed (retry later)."""
        ...

    def original_recipe(self, key: str) -> OriginalRecipe | None:
        """What rebuilds the original of the compressed blob ``key`` (None: ``key`` is not a compressed form)."""
        ...

    def record_compression_skip(self, key: str, reason: str) -> None:
        """Remember that blob ``key`` is left uncompressed, and why."""
        ...

    def compression_skips(self, keys: Sequence[str]) -> dict[str, str]:
        """The recorded reasons of those ``keys`` that were left uncompressed."""
        ...

    def compression_skip_reasons(self, limit: int = 20) -> list[tuple[str, int]]:
        """The most frequent reasons objects were left uncompressed, with how many stored blobs each."""
        ...

    def studies_to_compress(self, condition: StudyCondition, *, now: datetime, after: str = "",
                            limit: int = 1000) -> list[StudyCandidate]:
        """Studies matching ``condition`` that hold an instance still in a native syntax, not known to be left as
        it is (Study Instance UID order from ``after``)."""
        ...

    def compressed_instances(self, *, after_id: int = 0, limit: int = 500) -> list[tuple[int, str]]:
        """(row id, SOP Instance UID) of current instances compressed at rest, in row id order after ``after_id``."""
        ...

    def compression_savings(self) -> list[CompressionSavings]:
        """Per modality: instances stored compressed, their original and their stored bytes."""
        ...

    def ping(self) -> None:
        """Raise ``Unavailable`` if the database does not answer (readiness probe)."""
        ...
