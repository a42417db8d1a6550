"""The index side of storage tiers: verified copies of blobs on named stores (table ``blob_copies``), the last
read of a study, and the queries lifecycle rules, fixity and usage reports run over them.

The invariant (``domain.tiers``, ``ports.index``): every referenced blob has at least one copy row. Ingest
records one in its own transaction (``record_ingest_copy`` here for the Core path, one statement in
``adapters.index.hot_store`` for the fast path); a tier move adds the target's row (``add_blob_copy``) before it
drops the source's (``drop_blob_copy``, which refuses the last); ``RemovalStatements.finish`` forgets the rows
of the keys whose removal finished.

``TierIndex`` runs these on the repository's connections and retry policy (the ``IndexRepository`` methods of the
same names delegate here, one line each). Long walks (``iter_blob_copies``, ``iter_uncopied_blobs``) read in
keyset pages, each its own short read: a walk of a whole store runs for hours under fixity, and one open cursor
would hold a PostgreSQL snapshot (and vacuum) that long.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager
from datetime import UTC, datetime, timedelta
from functools import partial
from typing import Any

from sqlalchemy import (
    ColumnElement,
    Connection,
    and_,
    exists,
    false,
    func,
    literal,
    or_,
    select,
    union_all,
    update,
)
from sqlalchemy import delete as sa_delete
from sqlalchemy.dialects import postgresql, sqlite

from dicomvault.adapters.index.tables import (
    blob_copies,
    blob_removals,
    instance_versions,
    instances,
    series,
    studies,
    trash,
)
from dicomvault.adapters.index.times import aware
from dicomvault.adapters.index.transactions import Transactions
from dicomvault.domain.records import BlobInfo, InstanceEntry
from dicomvault.domain.tiers import (
    PREFIXES,
    BlobCopy,
    CopyTarget,
    StoreUsage,
    StudyBlob,
    StudyCandidate,
    StudyCondition,
    StudyFacts,
    source_names,
    study_date_cutoff,
)

Tx = Callable[[], AbstractContextManager[Connection]]

#: Keys or UIDs per IN list (far below SQLite's and psycopg's parameter limits).
BATCH = 500
#: Rows per page of the long walks.
PAGE = 1000
#: Modality of instances whose series has none (as ``stats`` reports them).
NO_MODALITY = "??"


def _utc(value: datetime) -> datetime:
    """SQLite stores a datetime's wall time and drops its zone: every time written or compared is UTC."""
    return value.astimezone(UTC) if value.tzinfo is not None else value.replace(tzinfo=UTC)


def _all(conn: Connection, stmt: Any) -> list[Any]:
    return list(conn.execute(stmt).all())


def _batches(items: Sequence[str]) -> list[Sequence[str]]:
    return [items[i : i + BATCH] for i in range(0, len(items), BATCH)]


def _like_literal(value: str) -> str:
    """``value`` as a LIKE pattern matching itself, ``\\`` the escape character (as ``domain.query`` does)."""
    return "".join("\\" + ch if ch in "%_\\" else ch for ch in value)


# -- ingest (inside the store transaction) -------------------------------------------------------------------

def _insert(dialect: str) -> Any:
    return (postgresql.insert if dialect == "postgresql" else sqlite.insert)(blob_copies)


def record_ingest_copy(conn: Connection, entry: InstanceEntry, now: datetime) -> None:
    """The Core path's copy record of a store: (key, ``entry.store``) when the put wrote the blob (verified now:
    ingest hashed the bytes it wrote), or, unverified, when the key has no copy row at all (bytes found in
    place, e.g. an index restored without its copies). A put that found bytes while other copies are recorded
    adds nothing: a tier move may be about to delete those bytes, and the copy it recorded elsewhere holds them.
    Two statements where ``hot_store`` has one: this path (replace, keep-both, group-commit retries) is rare."""
    insert = _insert(conn.dialect.name)
    if entry.blob_created:
        conn.execute(insert.values(key=entry.blob.key, store=entry.store, verified_at=_utc(now))
                     .on_conflict_do_nothing())
        return
    if conn.execute(select(blob_copies.c.key).where(blob_copies.c.key == entry.blob.key).limit(1)).first() is None:
        conn.execute(insert.values(key=entry.blob.key, store=entry.store, verified_at=None).on_conflict_do_nothing())


def forget_copies_of_finished(conn: Connection, claim_id: str, keys: Sequence[str]) -> None:
    """Delete the copy rows of those ``keys`` whose removal under ``claim_id`` is finished (called by
    ``RemovalStatements.finish`` after it marked them, same transaction). Only finished keys: a key of the list
    the claim does not hold (taken over by another deleter, given up) keeps its rows."""
    for part in _batches(list(keys)):
        finished = select(blob_removals.c.key).where(
            blob_removals.c.key.in_(part), blob_removals.c.claim_id == claim_id, blob_removals.c.removed_at.isnot(None))
        conn.execute(sa_delete(blob_copies).where(blob_copies.c.key.in_(finished)))


# -- query building -----------------------------------------------------------------------------------------

def _study_refs() -> Any:
    """Every blob reference with the study and modality it belongs to: current instances, and prior versions
    (``instance_versions``, attributed to the study of the current instance of their SOP Instance UID)."""
    current = (
        select(instances.c.blob_key.label("key"), instances.c.blob_size.label("size"),
               series.c.study_fk.label("study_fk"), series.c.modality.label("modality"))
        .select_from(instances.join(series, instances.c.series_fk == series.c.id))
    )
    prior = (
        select(instance_versions.c.blob_key, instance_versions.c.blob_size, series.c.study_fk, series.c.modality)
        .select_from(instance_versions.join(instances, instance_versions.c.sop_uid == instances.c.sop_uid)
                     .join(series, instances.c.series_fk == series.c.id))
    )
    return union_all(current, prior).subquery("refs")


def _not_as_wanted(key: ColumnElement[Any], target: CopyTarget) -> ColumnElement[bool]:
    """The blob ``key`` lacks a copy on one of ``target.stores`` or, for an exclusive target, has one elsewhere
    (``target.keep``, replicas other rules keep, is not "elsewhere")."""
    c = blob_copies.alias("c")
    lacking = [~exists().where(c.c.key == key, c.c.store == name) for name in target.stores]
    clauses: list[ColumnElement[bool]] = list(lacking)
    if target.exclusive:
        e = blob_copies.alias("e")
        wanted = list(dict.fromkeys((*target.stores, *target.keep)))
        elsewhere = exists().where(e.c.key == key)
        clauses.append(elsewhere.where(e.c.store.notin_(wanted)) if wanted else elsewhere)
    return or_(*clauses) if clauses else false()


def _needs_work(target: CopyTarget) -> ColumnElement[bool]:
    """EXISTS a blob of the study (current instance or prior version) not yet as ``target`` wants: correlated
    to the enclosing ``studies`` row."""
    i, se = instances.alias("ni"), series.alias("ns")
    current = (select(literal(1)).select_from(i.join(se, i.c.series_fk == se.c.id))
               .where(se.c.study_fk == studies.c.id, _not_as_wanted(i.c.blob_key, target)))
    vi, vs, v = instances.alias("vi"), series.alias("vs"), instance_versions.alias("v")
    prior = (select(literal(1))
             .select_from(v.join(vi, v.c.sop_uid == vi.c.sop_uid).join(vs, vi.c.series_fk == vs.c.id))
             .where(vs.c.study_fk == studies.c.id, _not_as_wanted(v.c.blob_key, target)))
    return or_(current.exists(), prior.exists())


def _instance_exists(column: str, values: Sequence[str], prefixes: Sequence[str] = ()) -> ColumnElement[bool]:
    """EXISTS an instance of the study whose ``column`` is one of ``values`` or starts with one of ``prefixes``."""
    i, se = instances.alias(f"{column}_i"), series.alias(f"{column}_s")
    match = or_(i.c[column].in_(list(values)), *(i.c[column].startswith(p, autoescape=True) for p in prefixes))
    return (select(literal(1)).select_from(i.join(se, i.c.series_fk == se.c.id))
            .where(se.c.study_fk == studies.c.id, match).exists())


def _sources_of(stored: str) -> tuple[str, ...]:
    """``domain.tiers.source_names``; ``source_values`` is the same relation seen from the rule."""
    return source_names(stored)


def source_values(sources: Sequence[str]) -> list[str]:
    """Stored sources matching a rule's ``sources`` exactly: each as given, and as a DIMSE calling AE title or a
    STOW-RS client (``source_prefixes``: the protocol names, matched by prefix)."""
    return sorted({*sources, *(p + s for s in sources for p in PREFIXES)})


def source_prefixes(sources: Sequence[str]) -> list[str]:
    """The protocol prefixes a rule's ``sources`` name ("dimse" → every "dimse:…" source)."""
    return [p for p in PREFIXES if p[:-1] in sources]


def _eight_digits(column: ColumnElement[Any], dialect: str) -> ColumnElement[bool]:
    """``column`` is eight digits (a whole DA value): what ``domain.tiers.matches`` accepts as a StudyDate."""
    if dialect == "postgresql":
        return column.op("~")("^[0-9]{8}$")
    return column.op("GLOB")("[0-9]" * 8)


def condition_clauses(condition: StudyCondition, now: datetime, dialect: str) -> list[ColumnElement[bool]]:
    """The WHERE clauses of ``condition`` on ``studies`` at ``now`` (all must hold), selecting exactly what
    ``domain.tiers.matches`` accepts for the study's ``study_facts``."""
    out: list[ColumnElement[bool]] = []
    now = _utc(now)
    if condition.study_age_days is not None:
        # StudyDate is stored as received ("YYYYMMDD"): compared as text with the cutoff date. A study without
        # a whole date has no age and never matches.
        date = func.trim(studies.c.study_date)
        out.append(and_(_eight_digits(date, dialect), date < study_date_cutoff(now, condition.study_age_days)))
    if condition.not_read_days is not None:
        out.append(func.coalesce(studies.c.last_read_at, studies.c.updated_at)
                   < now - timedelta(days=condition.not_read_days))
    if condition.modalities:
        # Stored as "\CT\MR\": each value delimited by backslashes, escaped in the pattern (``querying`` does so).
        out.append(or_(*[studies.c.modalities_in_study.like("%" + _like_literal("\\" + m + "\\") + "%",
                                                             escape="\\") for m in condition.modalities]))
    if condition.sources:
        out.append(_instance_exists("source", source_values(condition.sources),
                                    prefixes=source_prefixes(condition.sources)))
    if condition.sop_classes:
        out.append(_instance_exists("sop_class_uid", condition.sop_classes))
    if condition.min_bytes is not None:
        out.append(studies.c.size_bytes >= condition.min_bytes)
    if condition.max_bytes is not None:
        out.append(studies.c.size_bytes <= condition.max_bytes)
    return out


class TierIndex(Transactions):
    """The tier methods of ``ports.index.IndexRepository`` on the repository's transactions and retry policy."""

    def __init__(self, dialect: str, write: Tx, read: Tx, retrying: Callable[[Callable[[], Any]], Any]) -> None:
        self.dialect = dialect
        self._write = write
        self._read = read
        self._retrying = retrying
        self._upsert = _insert(dialect)
        self._upsert = self._upsert.on_conflict_do_update(
            index_elements=["key", "store"], set_={"verified_at": self._upsert.excluded.verified_at})

    # -- copies --------------------------------------------------------------------------------------------------

    @staticmethod
    def _copies(conn: Connection, keys: Sequence[str]) -> dict[str, list[BlobCopy]]:
        out: dict[str, list[BlobCopy]] = {}
        for part in _batches(sorted(set(keys))):
            stmt = (select(blob_copies.c.key, blob_copies.c.store, blob_copies.c.verified_at)
                    .where(blob_copies.c.key.in_(part)).order_by(blob_copies.c.key, blob_copies.c.store))
            for key, store, verified_at in conn.execute(stmt):
                out.setdefault(key, []).append(BlobCopy(store, aware(verified_at)))
        return out

    def blob_copies(self, keys: Sequence[str]) -> dict[str, list[BlobCopy]]:
        return self._in_read(lambda conn: self._copies(conn, keys))

    def _lock_copies(self, conn: Connection, key: str) -> list[str]:
        """The stores holding a recorded copy of ``key``, its rows locked FOR UPDATE (PostgreSQL; SQLite has one
        writer): adds and drops of the key's copies run one after the other.

        PostgreSQL locks twice: a statement that waited for a lock re-reads only the rows of its own snapshot
        (skipping those the holder deleted) and misses a row the holder inserted; the second statement, on a
        fresh snapshot, sees and locks it too, so the caller decides on everything the holder left."""
        stmt = (select(blob_copies.c.store).where(blob_copies.c.key == key).order_by(blob_copies.c.store)
                .with_for_update())
        if self.dialect == "postgresql":
            conn.execute(stmt).all()
        return list(conn.execute(stmt).scalars())

    def add_blob_copy(self, key: str, store: str, *, verified_at: datetime, present: Callable[[], bool]) -> bool:
        """Copy rows locked first, then a reference looked for FOR SHARE (PostgreSQL): the row found cannot be
        deleted or re-pointed until this transaction commits, so a delete racing the copy either committed first
        (no reference: False) or releases the key after it, and its removal then forgets the row written here.
        ``present()`` last (it reads a store: asked only when the record can be written). A retried transaction
        asks it again. A trashed key counts as referenced (fixity repairs its copies), locked the same way: a purge
        deleting its trash row waits, and its removal then forgets the row written here."""

        def run(conn: Connection) -> bool:
            self._lock_copies(conn, key)
            referenced = any(
                conn.execute(select(table.c.id).where(table.c.blob_key == key).limit(1)
                             .with_for_update(read=True)).first() is not None
                for table in (instances, instance_versions)) or conn.execute(
                select(trash.c.key).where(trash.c.key == key).with_for_update(read=True)).first() is not None
            if not referenced or not present():
                return False
            conn.execute(self._upsert, {"key": key, "store": store, "verified_at": _utc(verified_at)})
            return True

        return self._in_write(run)

    def drop_blob_copy(self, key: str, store: str, *, delete: Callable[[], None]) -> bool:
        """Under the key's copy-row locks: the record goes, ``delete()`` removes the bytes, then the commit. A
        second drop of the last two copies waits and then sees one copy left, which it refuses. Should the
        commit itself fail after ``delete()`` (the connection lost), the record outlives the bytes: a retried
        transaction deletes it again, otherwise fixity reports the copy missing and repairs it from the others."""

        def run(conn: Connection) -> bool:
            held = self._lock_copies(conn, key)
            if store not in held or not [s for s in held if s != store]:
                return False
            conn.execute(sa_delete(blob_copies).where(blob_copies.c.key == key, blob_copies.c.store == store))
            delete()
            return True

        return self._in_write(run)

    # -- studies -------------------------------------------------------------------------------------------------

    def study_blobs(self, study_uid: str) -> list[StudyBlob]:
        def run(conn: Connection) -> list[StudyBlob]:
            sops = (select(instances.c.sop_uid)
                    .select_from(instances.join(series, instances.c.series_fk == series.c.id)
                                 .join(studies, series.c.study_fk == studies.c.id))
                    .where(studies.c.study_uid == study_uid))
            current = (select(instances.c.sop_uid, instances.c.blob_key, instances.c.blob_size,
                              instances.c.blob_sha256)
                       .where(instances.c.sop_uid.in_(sops)).order_by(instances.c.sop_uid))
            prior = (select(instance_versions.c.sop_uid, instance_versions.c.blob_key, instance_versions.c.blob_size,
                            instance_versions.c.blob_sha256)
                     .where(instance_versions.c.sop_uid.in_(sops))
                     .order_by(instance_versions.c.sop_uid, instance_versions.c.id))
            refs = [*conn.execute(current).all(), *conn.execute(prior).all()]
            copies = self._copies(conn, [r.blob_key for r in refs])
            return [StudyBlob(r.sop_uid, BlobInfo(r.blob_key, r.blob_size, r.blob_sha256),
                              tuple(c.store for c in copies.get(r.blob_key, ()))) for r in refs]

        return self._in_read(run)

    def studies_needing(
        self, condition: StudyCondition, target: CopyTarget, *, now: datetime, after: str = "", limit: int = 1000
    ) -> list[StudyCandidate]:
        """One query: the condition's clauses and the EXISTS of a blob not as wanted, on ``studies`` in Study
        Instance UID order from ``after`` (its unique index serves the keyset)."""
        stmt = (select(studies.c.study_uid, studies.c.num_instances, studies.c.size_bytes)
                .where(studies.c.study_uid > after, *condition_clauses(condition, now, self.dialect),
                       _needs_work(target))
                .order_by(studies.c.study_uid).limit(limit))
        return self._in_read(lambda conn: [StudyCandidate(uid, int(n), int(b)) for uid, n, b in conn.execute(stmt)])

    def studies_matching(
        self, condition: StudyCondition, *, now: datetime, after: str = "", limit: int = 1000
    ) -> list[StudyCandidate]:
        """``studies_needing`` without the blob test: every study matching ``condition`` (a delete rule has work
        for each one that still exists)."""
        stmt = (select(studies.c.study_uid, studies.c.num_instances, studies.c.size_bytes)
                .where(studies.c.study_uid > after, *condition_clauses(condition, now, self.dialect))
                .order_by(studies.c.study_uid).limit(limit))
        return self._in_read(lambda conn: [StudyCandidate(uid, int(n), int(b)) for uid, n, b in conn.execute(stmt)])

    def study_facts(self, study_uid: str) -> StudyFacts | None:
        """The study row and the distinct sources and SOP classes of its instances (two reads). Sources list a
        DIMSE sender both as stored and as its bare AE title (``_sources_of``), as ``studies_needing`` matches."""

        def run(conn: Connection) -> StudyFacts | None:
            row = conn.execute(select(studies.c.id, studies.c.study_date, studies.c.last_read_at,
                                      studies.c.updated_at, studies.c.modalities_in_study, studies.c.size_bytes)
                               .where(studies.c.study_uid == study_uid)).first()
            if row is None:
                return None
            kinds = conn.execute(
                select(instances.c.source, instances.c.sop_class_uid).distinct()
                .select_from(instances.join(series, instances.c.series_fk == series.c.id))
                .where(series.c.study_fk == row.id)).all()
            return StudyFacts(
                study_uid=study_uid, study_date=row.study_date,
                last_activity=aware(row.last_read_at if row.last_read_at is not None else row.updated_at),
                modalities=frozenset(m for m in (row.modalities_in_study or "").split("\\") if m),
                sources=frozenset(name for source, _ in kinds if source for name in _sources_of(source)),
                sop_classes=frozenset(sop_class for _, sop_class in kinds if sop_class),
                bytes=int(row.size_bytes))

        return self._in_read(run)

    def note_study_reads(self, study_uids: Sequence[str], at: datetime) -> None:
        """One UPDATE per 500 UIDs, all in one transaction, in UID order (PostgreSQL: two batches of overlapping
        studies lock rows in the same order as far as the plan allows; a deadlock is retried anyway)."""
        uids = sorted(set(study_uids))
        if not uids:
            return
        stamp = _utc(at)

        def run(conn: Connection) -> None:
            for part in _batches(uids):
                conn.execute(update(studies).where(studies.c.study_uid.in_(part)).values(last_read_at=stamp))

        self._in_write(run)

    # -- usage and walks -----------------------------------------------------------------------------------------

    def store_usage(self) -> list[StoreUsage]:
        """Two aggregates over copy rows joined to the references (current and prior versions) of their keys:
        copies and bytes per store and modality, distinct studies per store. A copy row of a key no index row
        references (a removal in progress) is not counted: usage is what the index references."""
        refs = _study_refs()
        joined = blob_copies.join(refs, refs.c.key == blob_copies.c.key)
        per_modality = (select(blob_copies.c.store, refs.c.modality, func.count(),
                               func.coalesce(func.sum(refs.c.size), 0))
                        .select_from(joined).group_by(blob_copies.c.store, refs.c.modality))
        per_store = (select(blob_copies.c.store, func.count(func.distinct(refs.c.study_fk)))
                     .select_from(joined).group_by(blob_copies.c.store))

        def run(conn: Connection) -> list[StoreUsage]:
            studies_at = {store: int(n) for store, n in conn.execute(per_store)}
            by_store: dict[str, dict[str, tuple[int, int]]] = {}
            for store, modality, n, size in conn.execute(per_modality):
                mods = by_store.setdefault(store, {})
                name = modality or NO_MODALITY
                was = mods.get(name, (0, 0))
                mods[name] = (was[0] + int(n), was[1] + int(size))
            return [StoreUsage(store, studies_at.get(store, 0), sum(c for c, _ in mods.values()),
                               sum(b for _, b in mods.values()), mods) for store, mods in sorted(by_store.items())]

        return self._in_read(run)

    def iter_blob_copies(self, store: str) -> Iterator[tuple[str, BlobInfo, tuple[str, ...]]]:
        """Pages of ``PAGE`` keys of ``store`` in key order (the (store, key) index), then their references and
        all their copies: three short reads per page. Keys no index row references are skipped; trashed keys are
        walked (their copies must stay intact until the purge). A key both trashed and referenced again by an
        instance (sent again since) comes once per reference, as a shared key of two rows does."""
        after = ""
        while True:
            def page(conn: Connection, after: str = after) -> tuple[list[str], list[Any], dict[str, list[BlobCopy]]]:
                keys = list(conn.execute(
                    select(blob_copies.c.key).where(blob_copies.c.store == store, blob_copies.c.key > after)
                    .order_by(blob_copies.c.key).limit(PAGE)).scalars())
                if not keys:
                    return keys, [], {}
                refs: list[Any] = []
                for table in (instances, instance_versions):
                    refs.extend(conn.execute(
                        select(table.c.sop_uid, table.c.blob_key, table.c.blob_size, table.c.blob_sha256)
                        .where(table.c.blob_key.in_(keys))).all())
                refs.extend(conn.execute(  # soft-deleted: checked until purged (``adapters.index.trash``)
                    select(trash.c.sop_uid, trash.c.key.label("blob_key"), trash.c.blob_size, trash.c.blob_sha256)
                    .where(trash.c.key.in_(keys))).all())
                return keys, refs, self._copies(conn, keys)

            keys, refs, copies = self._in_read(page)
            if not keys:
                return
            refs.sort(key=lambda r: (r.blob_key, r.sop_uid))
            for r in refs:
                yield (r.sop_uid, BlobInfo(r.blob_key, r.blob_size, r.blob_sha256),
                       tuple(c.store for c in copies.get(r.blob_key, ())))
            after = keys[-1]

    def iter_uncopied_blobs(self) -> Iterator[tuple[str, BlobInfo]]:
        """Current instances, then prior versions, each in id order by keyset pages: an anti-join per page that
        resumes where the last one stopped, so the whole walk reads each row once; then the trash in key order."""
        for table in (instances, instance_versions):
            after = 0
            while True:
                c = blob_copies.alias("u")
                stmt = (select(table.c.id, table.c.sop_uid, table.c.blob_key, table.c.blob_size, table.c.blob_sha256)
                        .where(table.c.id > after, ~exists().where(c.c.key == table.c.blob_key))
                        .order_by(table.c.id).limit(PAGE))
                rows: list[Any] = self._in_read(partial(_all, stmt=stmt))
                for r in rows:
                    yield r.sop_uid, BlobInfo(r.blob_key, r.blob_size, r.blob_sha256)
                if len(rows) < PAGE:
                    break
                after = int(rows[-1].id)
        last = ""
        while True:  # the trash, by key
            c = blob_copies.alias("u")
            stmt = (select(trash.c.key, trash.c.sop_uid, trash.c.blob_size, trash.c.blob_sha256)
                    .where(trash.c.key > last, ~exists().where(c.c.key == trash.c.key))
                    .order_by(trash.c.key).limit(PAGE))
            rows = self._in_read(partial(_all, stmt=stmt))
            for r in rows:
                yield r.sop_uid, BlobInfo(r.key, r.blob_size, r.blob_sha256)
            if len(rows) < PAGE:
                return
            last = rows[-1].key
