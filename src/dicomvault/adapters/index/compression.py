"""The index side of lossless compression at rest (issue #11 item 4; the policy is ``services.compression``).

Three things live here: the *switch* of an instance from its original blob to a verified compressed one (one
transaction, the only moment the index changes), the *recipes* that rebuild originals (``blob_originals``), and
the selection of work (studies with objects still in a native syntax, the reasons objects were left as they are,
the space saved).

Why the switch is safe (the compressed blob was written and read back on every store that held the original
before this runs): the instance row is locked and must still point at the original; it then points at the
compressed blob, whose copies are recorded in the same transaction, and the original key is recorded as a pending
removal if nothing else references it, exactly as a ``replace`` store releases the blob it replaces, so its bytes
go through the blob removal protocol on every store (``services.lifecycle``). As for ingest, the compressed key's
removal record is read last, after the instance row was written: a claim on that key (the orphan sweep finding
the blob before the switch) refuses the switch, which the job retries later. A crash before the commit leaves the
original referenced and intact, and the compressed bytes unreferenced (the orphan sweep's); after it, the
original is a pending removal that the sweep finishes.
"""

from __future__ import annotations

import json
import zlib
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from sqlalchemy import Connection, Engine, delete, func, select, update
from sqlalchemy.dialects import postgresql, sqlite

from dicomvault.adapters.index.tables import (
    blob_copies,
    blob_originals,
    blob_removals,
    compression_skips,
    instances,
    series,
    studies,
)
from dicomvault.adapters.index.tiers import condition_clauses
from dicomvault.adapters.index.transactions import Retrying, Transactions, Tx
from dicomvault.domain.compression import CompressedSwitch, CompressionSavings
from dicomvault.domain.records import BlobInfo, OriginalForm, OriginalRecipe
from dicomvault.domain.tiers import StudyCandidate, StudyCondition

if TYPE_CHECKING:  # removals imports this module (its finish forgets recipes)
    from dicomvault.adapters.index.removals import RemovalStatements

#: The native syntaxes a compression rule looks for (big endian and deflated objects are refused by the codec
#: layer anyway; selecting them would only record the same reason again and again).
NATIVE = ("1.2.840.10008.1.2", "1.2.840.10008.1.2.1")
#: Keys per IN list.
_BATCH = 500


def _now() -> datetime:
    return datetime.now(UTC)


class CompressionIndex(Transactions):
    def __init__(self, engine: Engine, removals: RemovalStatements, write: Tx, read: Tx, retrying: Retrying,
                 referenced: Callable[[Connection, str], bool]) -> None:
        self._bind(write, read, retrying)
        self._engine = engine
        self._removals = removals
        self._dialect = engine.dialect.name
        #: ``SqlIndexRepository._referenced`` (instances, prior versions, the trash)
        self._referenced = referenced

    # -- the switch ------------------------------------------------------------------------------------------

    def switch_to_compressed(self, sop_uid: str, old: BlobInfo, new: BlobInfo, *, syntax: str, frame_index: str | None,
                             recipe: OriginalRecipe, stores: Sequence[str]) -> CompressedSwitch:
        insert = postgresql.insert if self._dialect == "postgresql" else sqlite.insert

        def run(conn: Connection) -> CompressedSwitch:
            row = conn.execute(select(instances.c.id, instances.c.blob_key, instances.c.series_fk)
                               .where(instances.c.sop_uid == sop_uid).with_for_update()).first()
            if row is None or row.blob_key != old.key:
                return CompressedSwitch(done=False)
            conn.execute(update(instances).where(instances.c.id == row.id).values(
                blob_key=new.key, blob_size=new.size, blob_sha256=new.sha256, transfer_syntax_uid=syntax,
                frame_index=frame_index))
            study_fk = select(series.c.study_fk).where(series.c.id == row.series_fk).scalar_subquery()
            conn.execute(update(studies).where(studies.c.id == study_fk)
                         .values(size_bytes=studies.c.size_bytes + (new.size - old.size), updated_at=_now()))
            form = recipe.form
            conn.execute(insert(blob_originals).values(
                key=new.key, original_sha256=form.sha256, original_size=form.size, original_syntax=form.syntax,
                pixel_length=recipe.pixel_length, layout=json.dumps(form.layout, sort_keys=True),
                head=zlib.compress(recipe.head, 6), tail=zlib.compress(recipe.tail, 6), created_at=_now(),
            ).on_conflict_do_nothing())
            at = _now()
            for store in stores:
                conn.execute(insert(blob_copies).values(key=new.key, store=store, verified_at=at)
                             .on_conflict_do_nothing())
            # Last, after the instance row points at the key (services.lifecycle explains the order).
            self._removals.check_store(conn, new.key, None)
            if self._referenced(conn, old.key):
                return CompressedSwitch(done=True)
            self._removals.record_pending(conn, [old.key])
            return CompressedSwitch(done=True, released=(old,))

        return self._in_write(run)

    # -- recipes and skips -----------------------------------------------------------------------------------

    def original_recipe(self, key: str) -> OriginalRecipe | None:
        stmt = select(blob_originals).where(blob_originals.c.key == key)
        row = self._in_read(lambda conn: conn.execute(stmt).first())
        if row is None:
            return None
        form = OriginalForm(row.original_syntax, int(row.original_size), row.original_sha256, json.loads(row.layout),
                            int(row.pixel_length))
        return OriginalRecipe(form, zlib.decompress(row.head), zlib.decompress(row.tail), int(row.pixel_length))

    def record_compression_skip(self, key: str, reason: str) -> None:
        insert = postgresql.insert if self._dialect == "postgresql" else sqlite.insert
        stmt = insert(compression_skips).values(key=key, reason=reason[:256], recorded_at=_now())
        stmt = stmt.on_conflict_do_update(index_elements=["key"], set_={"reason": stmt.excluded.reason,
                                                                         "recorded_at": stmt.excluded.recorded_at})
        self._in_write(lambda conn: conn.execute(stmt))

    def compression_skips(self, keys: Sequence[str]) -> dict[str, str]:
        def run(conn: Connection) -> dict[str, str]:
            out: dict[str, str] = {}
            for i in range(0, len(keys), _BATCH):
                part = list(keys[i:i + _BATCH])
                out.update({k: r for k, r in conn.execute(
                    select(compression_skips.c.key, compression_skips.c.reason)
                    .where(compression_skips.c.key.in_(part)))})
            return out

        return self._in_read(run)

    def skip_reasons(self, limit: int = 20) -> list[tuple[str, int]]:
        """The most frequent reasons objects were left uncompressed, with how many blobs each (still referenced)."""
        stmt = (select(compression_skips.c.reason, func.count())
                .where(compression_skips.c.key.in_(select(instances.c.blob_key)))
                .group_by(compression_skips.c.reason).order_by(func.count().desc()).limit(limit))
        return self._in_read(lambda conn: [(r, int(n)) for r, n in conn.execute(stmt)])

    # -- selecting work --------------------------------------------------------------------------------------

    def studies_to_compress(self, condition: StudyCondition, *, now: datetime, after: str = "",
                            limit: int = 1000) -> list[StudyCandidate]:
        """Studies matching ``condition`` with at least one instance still in a native syntax whose blob was not
        left as it is before, in Study Instance UID order from ``after``."""
        pending = (select(instances.c.id)
                   .select_from(instances.join(series, instances.c.series_fk == series.c.id))
                   .where(series.c.study_fk == studies.c.id, instances.c.transfer_syntax_uid.in_(NATIVE),
                          instances.c.rows.isnot(None),
                          ~select(compression_skips.c.key).where(compression_skips.c.key == instances.c.blob_key)
                          .exists())
                   .exists())
        stmt = (select(studies.c.study_uid, studies.c.num_instances, studies.c.size_bytes)
                .where(studies.c.study_uid > after, *condition_clauses(condition, now, self._dialect), pending)
                .order_by(studies.c.study_uid).limit(limit))
        return self._in_read(lambda conn: [StudyCandidate(uid, int(n), int(b)) for uid, n, b in conn.execute(stmt)])

    def compressed_instances(self, *, after_id: int = 0, limit: int = 500) -> list[tuple[int, str]]:
        """(row id, SOP Instance UID) of current instances whose blob is compressed at rest, in row id order."""
        stmt = (select(instances.c.id, instances.c.sop_uid)
                .select_from(instances.join(blob_originals, blob_originals.c.key == instances.c.blob_key))
                .where(instances.c.id > after_id).order_by(instances.c.id).limit(limit))
        return self._in_read(lambda conn: [(int(i), str(u)) for i, u in conn.execute(stmt)])

    def compression_savings(self) -> list[CompressionSavings]:
        """Per modality, over current instances whose blob is compressed at rest."""
        stmt = (select(series.c.modality, func.count(), func.coalesce(func.sum(blob_originals.c.original_size), 0),
                       func.coalesce(func.sum(instances.c.blob_size), 0))
                .select_from(instances.join(blob_originals, blob_originals.c.key == instances.c.blob_key)
                             .join(series, instances.c.series_fk == series.c.id))
                .group_by(series.c.modality).order_by(series.c.modality))
        return self._in_read(lambda conn: [CompressionSavings(m or "", int(n), int(o), int(s))
                                           for m, n, o, s in conn.execute(stmt)])


def forget_recipes_of_finished(conn: Connection, claim_id: str, keys: Sequence[str]) -> None:
    """Delete the recipes and skip reasons of those ``keys`` whose removal under ``claim_id`` is finished (called
    by ``RemovalStatements.finish`` next to the copies' ``tiers.forget_copies_of_finished``, same transaction)."""
    for i in range(0, len(keys), _BATCH):
        part = list(keys[i:i + _BATCH])
        finished = select(blob_removals.c.key).where(
            blob_removals.c.key.in_(part), blob_removals.c.claim_id == claim_id, blob_removals.c.removed_at.isnot(None))
        conn.execute(delete(blob_originals).where(blob_originals.c.key.in_(finished)))
        conn.execute(delete(compression_skips).where(compression_skips.c.key.in_(finished)))


__all__ = ["NATIVE", "CompressionIndex", "forget_recipes_of_finished"]
