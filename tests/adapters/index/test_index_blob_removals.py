"""Engine-specific parts of the blob removal claims: inside SQLite's group commit, a store refused because its
blob is being removed is undone alone (its SAVEPOINT), the stores sharing its transaction commit, and it succeeds
on its retry once the removal has finished (services.lifecycle, case a); on PostgreSQL, a claim that created its
row waits for every writer in flight, the newest included (case d)."""

from __future__ import annotations

import io
import sqlite3
import threading
import time
from pathlib import Path

from sqlalchemy import text

from dicomvault.adapters.index.engine import create_index_engine, migrate
from dicomvault.adapters.index.removals import settle_postgres
from dicomvault.adapters.index.repository import SqlIndexRepository
from dicomvault.bootstrap import build_archive
from dicomvault.domain.records import StoreOutcome
from dicomvault.services.ingest import IngestResult
from dicomvault.settings import Settings
from tests.helpers import make_ct


def test_refused_store_in_a_shared_batch_is_undone_alone_and_retried(tmp_path: Path) -> None:
    archive = build_archive(Settings.load(data_dir=tmp_path / "vault"))
    index = archive.index
    assert isinstance(index, SqlIndexRepository) and index._group is not None
    group = index._group
    try:
        racing = make_ct(seed=1)
        first = archive.ingest.ingest(io.BytesIO(racing))
        index.delete(study_uid=first.study_uid)
        claim = index.claim_blob_removals([first.blob.key], stale_after=300)  # a deleter at work
        assert claim.keys == (first.blob.key,)
        others = [make_ct(seed=n) for n in (2, 3, 4)]
        results: dict[int, object] = {}

        def ingest(n: int, data: bytes) -> None:
            results[n] = archive.ingest.ingest(io.BytesIO(data))

        batches, units = group.batches, group.units
        blocker = sqlite3.connect(str(tmp_path / "vault" / "index.sqlite"), isolation_level=None)
        blocker.execute("BEGIN IMMEDIATE")  # holds the database's write lock: the next leader waits on it
        leader = threading.Thread(target=ingest, args=(0, others[0]))
        leader.start()
        time.sleep(0.5)  # the leader is inside its (one-unit) batch, waiting for the lock
        queued = [threading.Thread(target=ingest, args=(n, data)) for n, data in
                  ((1, others[1]), (2, racing), (3, others[2]))]
        for t in queued:
            t.start()
        time.sleep(1.0)  # all three queued behind the leader: the next batch holds them together
        blocker.execute("ROLLBACK")
        blocker.close()
        for t in (leader, queued[0], queued[2]):
            t.join(20)
        assert all(isinstance(results.get(n), IngestResult) for n in (0, 1, 3))
        assert queued[1].is_alive(), "the racing store waits for the removal instead of being acknowledged"
        assert (group.batches - batches, group.units - units) == (2, 4), "one batch of three, refused unit in it"
        archive.blobs.delete(first.blob.key)
        index.finish_blob_removals(claim.claim, list(claim.keys))
        queued[1].join(20)
        again = results[2]
        assert isinstance(again, IngestResult) and again.outcome == StoreOutcome.STORED
        for n, data in enumerate([others[0], others[1], racing, others[2]]):
            result = results[n]
            assert isinstance(result, IngestResult)
            [record] = archive.retrieve.locate(sop_uids=[result.sop_instance_uid])
            assert b"".join(archive.retrieve.iter_bytes(record, verify=True)) == data
    finally:
        archive.close()


def test_settle_waits_for_the_newest_writer(pg_url: str) -> None:
    """The store racing an orphan claim is typically the newest transaction, which a snapshot's in-progress list
    (only ids below the newest *completed* one) leaves out: settling must wait for it all the same."""
    engine = create_index_engine(pg_url, pool_size=2)
    migrate(engine)
    try:
        with engine.connect() as writer:
            writer.execute(text("SELECT pg_current_xact_id()"))  # a writer in flight, holding the newest id
            assert settle_postgres(engine, timeout=0.3) is False, "still in flight: not settled"
            settled: list[bool] = []
            waiter = threading.Thread(target=lambda: settled.append(settle_postgres(engine, timeout=20)))
            waiter.start()
            time.sleep(0.3)
            assert waiter.is_alive()
            writer.rollback()
        waiter.join(20)
        assert settled == [True]
    finally:
        engine.dispose()
