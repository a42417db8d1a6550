"""The index side of blob removal: every statement of the claim protocol on table ``blob_removals``.

Why a protocol at all, why these states and why it is safe on both engines is argued once, case by case, in
``services.lifecycle`` (and docs/architecture.md); this module is the SQL. In short, a row per blob key is

* *pending* (``claim_id`` NULL) — recorded by a delete or a replace in the same transaction that removed the last
  index row referencing the key;
* *claimed* (``claim_id`` set, ``removed_at`` NULL) — one deleter may delete the blob now; a store of the same
  bytes is refused meanwhile (``BlobRemovalRace``, unfinished);
* *finished* (``removed_at`` set) — a tombstone: a store whose put may have found the blob before it was deleted
  is refused once (``BlobRemovalRace``, finished), writes the bytes again and is then accepted.

``RemovalStatements`` only runs statements on a connection the repository opened (it owns transactions,
retries and the choice of engine); it holds the prepared hot-path statement and the PostgreSQL-only wait.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import Connection, Engine, bindparam, delete, or_, select, text, update
from sqlalchemy.dialects import postgresql, sqlite

from dicomvault.adapters.index import compression, tiers
from dicomvault.adapters.index.tables import blob_removals, instance_versions, instances, trash
from dicomvault.adapters.index.times import aware
from dicomvault.adapters.index.transactions import Transactions
from dicomvault.domain.errors import BlobRemovalRace
from dicomvault.domain.records import BlobClaim, RemovalRound

Tx = Callable[[], AbstractContextManager[Connection]]

#: Keys per IN list (far below SQLite's and psycopg's parameter limits).
BATCH = 500
#: Poll period while waiting for PostgreSQL transactions in flight to end (rare path: new claims only).
_POLL = 0.005
#: How long a claim that created its rows waits for PostgreSQL transactions in flight (``settle_postgres``);
#: past it the new claims are given up (nothing deleted; the orphans stay for a later repair).
SETTLE_TIMEOUT = 30.0

_pending = blob_removals.c.claim_id.is_(None)
_in_progress = blob_removals.c.claim_id.isnot(None) & blob_removals.c.removed_at.is_(None)


def now() -> datetime:
    return datetime.now(UTC)


def _batches(keys: Sequence[str]) -> list[Sequence[str]]:
    return [keys[i : i + BATCH] for i in range(0, len(keys), BATCH)]


class RemovalStatements:
    """Statements of the claim protocol for one engine dialect."""

    def __init__(self, dialect: str) -> None:
        self.dialect = dialect
        # The store's one hot-path statement: a primary-key lookup that usually finds nothing. FOR UPDATE
        # (PostgreSQL): a pending row is locked until the store commits, so a claimer waits and then finds it
        # gone; a row being claimed makes the store wait and then read the claim.
        self._q_store = (
            select(blob_removals.c.claim_id, blob_removals.c.removed_at)
            .where(blob_removals.c.key == bindparam("b_key"))
            .with_for_update()
        )
        insert = (postgresql.insert if dialect == "postgresql" else sqlite.insert)(blob_removals)
        # Pending again after a new release. A claim in progress is left alone (a claimed key has no index row
        # that could be released: services.lifecycle, cases c and d).
        self._upsert_pending = insert.on_conflict_do_update(
            index_elements=["key"],
            set_={"released_at": insert.excluded.released_at, "claimed_at": None, "claim_id": None,
                  "removed_at": None},
            where=or_(_pending, blob_removals.c.removed_at.isnot(None)),
        )
        self._insert_claimed = insert.on_conflict_do_nothing(index_elements=["key"]).returning(blob_removals.c.key)

    # -- in the store and delete transactions ----------------------------------------------------------------

    def check_store(self, conn: Connection, key: str, accept: str | None) -> None:
        """Called by a store that has just written an instance row referencing ``key``, in its transaction.

        None → nothing to do; pending → the store resurrects the blob (the row goes, the deleter's claim will
        find nothing); claimed → refuse (unfinished); finished → refuse, unless it is the claim ``accept``
        (the caller wrote the bytes again after that claim finished): then the tombstone goes.
        """
        row = conn.execute(self._q_store, {"b_key": key}).first()
        if row is None:
            return
        if row.claim_id is None:
            conn.execute(delete(blob_removals).where(blob_removals.c.key == key, _pending))
            return
        if row.removed_at is not None and row.claim_id == accept:
            conn.execute(delete(blob_removals).where(blob_removals.c.key == key,
                                                     blob_removals.c.claim_id == accept))
            return
        finished = row.removed_at is not None
        raise BlobRemovalRace(
            "the stored copy of this object was removed" if finished else "the stored copy of this object is "
            "being removed", key=key, claim=str(row.claim_id), finished=finished)

    def record_pending(self, conn: Connection, keys: Sequence[str]) -> None:
        """Record released keys as pending removals (the caller's transaction removed their last reference)."""
        if keys:
            stamp = now()
            conn.execute(self._upsert_pending, [{"key": k, "released_at": stamp} for k in keys])

    # -- the claim transaction ---------------------------------------------------------------------------------

    def referenced(self, conn: Connection, keys: Sequence[str]) -> set[str]:
        """The ``keys`` an instance or prior-version row references, or the trash holds (a soft-deleted blob is
        referenced until its purge: ``adapters.index.trash``)."""
        found: set[str] = set()
        for part in _batches(keys):
            for table in (instances, instance_versions):
                found.update(conn.execute(
                    select(table.c.blob_key).where(table.c.blob_key.in_(part)).distinct()).scalars())
            found.update(conn.execute(select(trash.c.key).where(trash.c.key.in_(part))).scalars())
        return found

    def claim(
        self, conn: Connection, keys: Sequence[str], claim_id: str, *, stale_after: float, unreferenced_found: bool
    ) -> tuple[list[str], list[str], list[str]]:
        """Claim what may be deleted among ``keys``; returns (claimed, referenced, inserted).

        Row locks first (in key order, so two claimers cannot deadlock), then the reference check in a later
        statement: on PostgreSQL READ COMMITTED it sees every store that committed while we waited for a lock.
        ``inserted`` are keys that had no row (only with ``unreferenced_found``): on PostgreSQL the caller must
        wait for the transactions in flight and check them again (``settle``) before deleting anything.
        """
        keys = sorted(set(keys))
        stamp = now()
        stale_before = stamp - timedelta(seconds=stale_after)
        rows: dict[str, Any] = {}
        for part in _batches(keys):
            stmt = (select(blob_removals.c.key, blob_removals.c.claim_id, blob_removals.c.claimed_at,
                           blob_removals.c.removed_at)
                    .where(blob_removals.c.key.in_(part)).order_by(blob_removals.c.key).with_for_update())
            rows.update({r.key: r for r in conn.execute(stmt)})
        referenced = self.referenced(conn, keys)
        claim: list[str] = []
        drop: list[str] = []
        insert: list[str] = []
        for key in keys:
            row = rows.get(key)
            if row is None:
                if unreferenced_found and key not in referenced:
                    insert.append(key)
            elif row.claim_id is None:  # pending
                if key in referenced:
                    drop.append(key)  # resurrected by a store of the same bytes
                else:
                    claim.append(key)
            elif row.removed_at is None:  # claimed by someone
                if aware(row.claimed_at) > stale_before:
                    continue  # its deleter is at work
                if key in referenced:  # cannot happen while stores honour claims; the reference wins
                    drop.append(key)
                else:
                    claim.append(key)  # take over from a deleter that crashed or stalled
            elif unreferenced_found and key not in referenced:
                claim.append(key)  # finished, yet the blob is back and unreferenced: a new round
        for part in _batches(drop):
            conn.execute(delete(blob_removals).where(blob_removals.c.key.in_(part)))
        for part in _batches(claim):
            conn.execute(update(blob_removals).where(blob_removals.c.key.in_(part))
                         .values(claimed_at=stamp, claim_id=claim_id, removed_at=None))
        inserted: list[str] = []
        if insert:  # a concurrent claimer may have inserted the same key meanwhile: its claim, not ours
            inserted = list(conn.execute(self._insert_claimed, [
                {"key": k, "released_at": stamp, "claimed_at": stamp, "claim_id": claim_id} for k in insert
            ]).scalars())
        return sorted(claim + inserted), sorted(referenced & set(keys)), sorted(inserted)

    def abandon(self, conn: Connection, claim_id: str, keys: Sequence[str]) -> None:
        """Give up a claim on ``keys`` before anything was deleted: the rows go, stores waiting on them proceed."""
        for part in _batches(keys):
            conn.execute(delete(blob_removals).where(blob_removals.c.key.in_(part),
                                                     blob_removals.c.claim_id == claim_id, _in_progress))

    def finish(self, conn: Connection, claim_id: str, keys: Sequence[str]) -> None:
        """Mark the claimed removals of ``keys`` finished and forget the blobs' copy records (``blob_copies``) in
        the same transaction: the deleter removed the key from every store, and no index row references it."""
        stamp = now()
        for part in _batches(keys):
            conn.execute(update(blob_removals)
                         .where(blob_removals.c.key.in_(part), blob_removals.c.claim_id == claim_id, _in_progress)
                         .values(removed_at=stamp))
        tiers.forget_copies_of_finished(conn, claim_id, keys)
        compression.forget_recipes_of_finished(conn, claim_id, keys)

    # -- reads and housekeeping --------------------------------------------------------------------------------

    def round(self, conn: Connection, key: str) -> RemovalRound | None:
        row = conn.execute(select(blob_removals.c.claim_id, blob_removals.c.removed_at)
                           .where(blob_removals.c.key == key)).first()
        if row is None or row.claim_id is None:
            return None
        return RemovalRound(str(row.claim_id), row.removed_at is not None)

    def due(self, conn: Connection, *, stale_after: float, limit: int) -> list[str]:
        """Pending rows older than ``stale_after`` (their deleter crashed before claiming) and claims older than
        that (it crashed or stalled before finishing). A scan: the table holds only removals of the last
        retention period, and the sweep runs once a minute."""
        before = now() - timedelta(seconds=stale_after)
        stmt = (select(blob_removals.c.key)
                .where(or_(_pending & (blob_removals.c.released_at < before),
                           _in_progress & (blob_removals.c.claimed_at < before)))
                .order_by(blob_removals.c.released_at).limit(limit))
        return list(conn.execute(stmt).scalars())

    def forget(self, conn: Connection, *, older_than: float) -> int:
        before = now() - timedelta(seconds=older_than)
        return int(conn.execute(delete(blob_removals).where(blob_removals.c.removed_at < before)).rowcount)


def settle_postgres(engine: Engine, *, timeout: float) -> bool:
    """Wait until every PostgreSQL transaction that has a transaction id now has ended (True), or ``timeout``
    passes (False).

    Why: a store that checked a key *before* a new claim row for it existed holds no lock the claimer could wait
    for, and PostgreSQL's READ COMMITTED never shows another transaction's uncommitted instance row. Such a
    store has already written (so it has a transaction id) and is in progress once the claim has committed;
    when those transactions have all ended, a fresh reference check sees it. Only claims that create their row
    pay this (orphan removal, a refused duplicate's blob): a few milliseconds of ingest transactions.

    Which transactions: a snapshot's ``xip`` list names only those below its ``xmax``, which is the newest
    *completed* id + 1, so a young writer (the store of the race, typically) is missing from it. Taking an id
    of our own in the same statement bounds the rest: every transaction in progress now has an id in ``xip`` or
    in [``xmax``, ours) (the ``xip`` list alone let a racing store through about once in 300 rounds of
    tests/services/test_services_delete_race.py's orphan race).
    """
    deadline = time.monotonic() + timeout
    with engine.connect() as conn:
        mine, snapshot = conn.execute(text("SELECT pg_current_xact_id()::text, pg_current_snapshot()::text")).one()
        conn.rollback()  # our id was only a bound
        _, xmax, xip = str(snapshot).split(":")
        xids = sorted({*(x for x in xip.split(",") if x), *(str(x) for x in range(int(xmax), int(mine)))})
        probe = text("SELECT count(*) FROM unnest(CAST(:xids AS text[])) AS x "
                     "WHERE pg_xact_status(CAST(x AS xid8)) = 'in progress'")
        while xids:
            if not conn.execute(probe, {"xids": xids}).scalar_one():
                return True
            if time.monotonic() > deadline:
                return False
            time.sleep(_POLL)
            conn.rollback()  # a fresh transaction per probe: nothing held while we wait
    return True


class RemovalClaims(Transactions):
    """The claim protocol's own transactions (claim, finish, reads, housekeeping) on the repository's
    connections and retry policy: the ``IndexRepository`` methods of the same names delegate here."""

    def __init__(self, engine: Engine, statements: RemovalStatements, write: Tx, read: Tx,
                 retrying: Callable[[Callable[[], Any]], Any]) -> None:
        self.engine = engine
        self.sql = statements
        self._write = write
        self._read = read
        self._retrying = retrying

    def claim(self, keys: Sequence[str], *, stale_after: float, unreferenced_found: bool) -> BlobClaim:
        claim_id = uuid.uuid4().hex
        claimed, referenced, inserted = self._in_write(lambda conn: self.sql.claim(
            conn, keys, claim_id, stale_after=stale_after, unreferenced_found=unreferenced_found))
        if inserted and self.sql.dialect == "postgresql":
            settled = settle_postgres(self.engine, timeout=SETTLE_TIMEOUT)

            def recheck(conn: Connection) -> list[str]:
                back = sorted(self.sql.referenced(conn, inserted)) if settled else inserted
                self.sql.abandon(conn, claim_id, back)
                return back

            back = self._in_write(recheck)
            claimed = [k for k in claimed if k not in back]
            if settled:
                referenced = sorted({*referenced, *back})
        return BlobClaim(claim_id, tuple(claimed), tuple(referenced))

    def finish(self, claim: str, keys: Sequence[str]) -> None:
        self._in_write(lambda conn: self.sql.finish(conn, claim, keys))

    def round(self, key: str) -> RemovalRound | None:
        return self._in_read(lambda conn: self.sql.round(conn, key))

    def due(self, *, stale_after: float, limit: int) -> list[str]:
        return self._in_read(lambda conn: self.sql.due(conn, stale_after=stale_after, limit=limit))

    def forget(self, *, older_than: float) -> int:
        return self._in_write(lambda conn: self.sql.forget(conn, older_than=older_than))
