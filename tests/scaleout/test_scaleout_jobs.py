"""The durable job queue on SQLite and PostgreSQL: claims, retries with backoff, leases, workers, handlers."""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import update
from typer.testing import CliRunner

from dicomvault.adapters.index.engine import create_index_engine, migrate
from dicomvault.adapters.index.job_queue import SqlJobQueue, jobs
from dicomvault.bootstrap import build_archive
from dicomvault.cli.jobs import app as jobs_app
from dicomvault.domain.errors import Conflict, NotFound
from dicomvault.jobs.handlers import PermanentJobError
from dicomvault.jobs.worker import Worker, backoff_delay, start_worker
from dicomvault.ports.jobs import Job, JobState
from dicomvault.settings import Settings
from tests.helpers import make_ct
from tests.pg_fixture import wait_until


@pytest.fixture
def queue(any_index_url: str) -> Iterator[SqlJobQueue]:
    engine = create_index_engine(any_index_url, pool_size=4)
    migrate(engine)
    yield SqlJobQueue(engine)
    engine.dispose()


def test_enqueue_claim_complete(queue: SqlJobQueue) -> None:
    jid = queue.enqueue("fixity", {"sop_uid": "1.2.3"})
    assert queue.get(jid).state == JobState.QUEUED
    job = queue.claim("w1", ["fixity"], lease_seconds=60)
    assert job is not None and job.id == jid and job.payload == {"sop_uid": "1.2.3"}
    assert job.state == JobState.RUNNING and job.attempts == 1 and job.worker_id == "w1"
    assert job.lease_until is not None and job.lease_until > datetime.now(UTC) + timedelta(seconds=50)
    assert queue.claim("w2") is None, "a leased job is not handed out twice"
    queue.complete(jid, {"checked": 1})
    done = queue.get(jid)
    assert done.state == JobState.DONE and done.result == {"checked": 1}
    assert [j.id for j in queue.list(JobState.DONE)] == [jid]
    with pytest.raises(NotFound):
        queue.get(jid + 1000)


def test_run_at_kinds_and_dedupe(queue: SqlJobQueue) -> None:
    later = queue.enqueue("fixity", {}, run_at=datetime.now(UTC) + timedelta(hours=1))
    other = queue.enqueue("delete-blob", {"key": "k"})
    assert queue.claim("w", ["fixity"]) is None, "not due yet, and the due job is of another kind"
    assert queue.claim("w", ["delete-blob"]).id == other  # type: ignore[union-attr]
    a = queue.enqueue("fixity", {"study_uid": "9"}, dedupe_key="fixity:9")
    assert queue.enqueue("fixity", {"study_uid": "9"}, dedupe_key="fixity:9") == a
    queue.claim("w", ["fixity"])
    queue.complete(a)
    assert queue.enqueue("fixity", {"study_uid": "9"}, dedupe_key="fixity:9") != a, "a finished job is not reused"
    assert later != a


def test_fail_backoff_dead_and_operator_retry(queue: SqlJobQueue) -> None:
    jid = queue.enqueue("fixity", {}, max_attempts=2)
    queue.claim("w")
    soon = datetime.now(UTC) + timedelta(seconds=30)
    assert queue.fail(jid, "boom", soon) == JobState.QUEUED
    job = queue.get(jid)
    assert job.last_error == "boom" and abs((job.run_at - soon).total_seconds()) < 1
    assert queue.claim("w") is None, "not before retry_at"
    with pytest.raises(Conflict):
        queue.retry(jid)
    due_now = queue._db(datetime.now(UTC) - timedelta(seconds=1))
    queue._run(lambda c: c.execute(update(jobs).where(jobs.c.id == jid).values(run_at=due_now)))
    assert queue.claim("w").attempts == 2  # type: ignore[union-attr]
    assert queue.fail(jid, "boom again", datetime.now(UTC)) == JobState.FAILED, "attempts exhausted"
    assert queue.list(JobState.FAILED)[0].id == jid
    queue.retry(jid)
    job = queue.get(jid)
    assert job.state == JobState.QUEUED and job.attempts == 0
    queue.claim("w")
    assert queue.fail(jid, "bad payload", None) == JobState.FAILED, "no retry_at: permanent"


def test_backoff_grows_with_jitter() -> None:
    for attempt in (1, 2, 5):
        samples = [backoff_delay(attempt, base=1.0, cap=100.0) for _ in range(50)]
        full = min(100.0, 2 ** (attempt - 1))
        assert all(full / 2 <= s <= full for s in samples) and len(set(samples)) > 1
    assert backoff_delay(30, base=1.0, cap=100.0) <= 100.0


def test_two_workers_run_each_job_exactly_once(queue: SqlJobQueue) -> None:
    ran: Counter[int] = Counter()
    lock = threading.Lock()

    def handler(job: Job) -> dict[str, Any]:
        with lock:
            ran[job.id] += 1
        time.sleep(0.002)
        return {"ok": True}

    ids = [queue.enqueue("work", {"n": n}) for n in range(60)]
    workers = [Worker(queue, {"work": handler}, poll_interval=0.02, worker_id=f"w{i}") for i in range(3)]
    for w in workers:
        w.start()
    assert wait_until(lambda: sum(ran.values()) >= len(ids), timeout=60)
    for w in workers:
        w.stop()
    assert set(ran) == set(ids) and set(ran.values()) == {1}
    assert all(queue.get(i).state == JobState.DONE for i in ids)
    assert sum(w.processed for w in workers) == len(ids)
    assert sum(1 for w in workers if w.processed) >= 2, "the work was shared"


def test_worker_retries_with_backoff_then_succeeds(queue: SqlJobQueue) -> None:
    calls: list[float] = []

    def flaky(job: Job) -> None:
        calls.append(time.monotonic())
        if len(calls) < 3:
            raise ConnectionError("destination down")

    def bad(job: Job) -> None:
        raise PermanentJobError("cannot ever work")

    ok_id = queue.enqueue("flaky", {})
    bad_id = queue.enqueue("bad", {})
    orphan = queue.enqueue("nobody-handles-this", {})
    w = Worker(queue, {"flaky": flaky, "bad": bad}, kinds=["flaky", "bad", "nobody-handles-this"],
               poll_interval=0.02, backoff_base=0.2)
    w.start()
    assert wait_until(lambda: queue.get(ok_id).state == JobState.DONE, timeout=20)
    w.stop()
    assert len(calls) == 3 and calls[2] - calls[1] >= 0.15, "second retry waited about base·2 with jitter"
    job = queue.get(ok_id)
    assert job.attempts == 3 and "ConnectionError" in (job.last_error or "")
    failed = queue.get(bad_id)
    assert failed.state == JobState.FAILED and failed.attempts == 1 and "cannot ever work" in (failed.last_error or "")
    assert queue.get(orphan).state == JobState.FAILED


def test_heartbeat_keeps_a_long_job_leased(queue: SqlJobQueue) -> None:
    started = threading.Event()

    def slow(job: Job) -> None:
        started.set()
        time.sleep(1.5)

    jid = queue.enqueue("slow", {})
    w = Worker(queue, {"slow": slow}, poll_interval=0.02, lease_seconds=0.6)
    w.start()
    assert started.wait(10)
    deadline = time.monotonic() + 1.2
    while time.monotonic() < deadline:
        assert queue.claim("thief", ["slow"], lease_seconds=5) is None, "lease renewed while the handler runs"
        time.sleep(0.1)
    assert wait_until(lambda: queue.get(jid).state == JobState.DONE, timeout=10)
    w.stop()
    assert queue.get(jid).attempts == 1


_CLAIM_AND_HANG = """
import sys, time
from dicomvault.adapters.index.engine import create_index_engine
from dicomvault.adapters.index.job_queue import SqlJobQueue, jobs
q = SqlJobQueue(create_index_engine(sys.argv[1], pool_size=1))
job = q.claim("doomed-node", ["effect"], lease_seconds=1.0)
print(job.id if job else "none", flush=True)
time.sleep(600)
"""


def test_job_of_a_killed_process_runs_once_elsewhere_after_lease(
    queue: SqlJobQueue, any_index_url: str, tmp_path: Path
) -> None:
    effects = tmp_path / "effects.log"

    def effect(job: Job) -> None:
        with effects.open("a") as f:
            f.write(f"{job.id}\n")

    jid = queue.enqueue("effect", {})
    child = subprocess.Popen([sys.executable, "-c", _CLAIM_AND_HANG, any_index_url], stdout=subprocess.PIPE,
                             text=True)
    try:
        assert child.stdout is not None and child.stdout.readline().strip() == str(jid)
        assert queue.get(jid).worker_id == "doomed-node"
    finally:
        os.kill(child.pid, signal.SIGKILL)
        child.wait()
    assert queue.claim("other", ["effect"]) is None, "the lease still holds right after the crash"
    w = Worker(queue, {"effect": effect}, poll_interval=0.05, worker_id="survivor")
    w.start()
    assert wait_until(lambda: queue.get(jid).state == JobState.DONE, timeout=15)
    w.stop()
    job = queue.get(jid)
    assert job.attempts == 2 and effects.read_text().split() == [str(jid)]


def test_lease_expiry_of_the_last_attempt_fails_the_job(queue: SqlJobQueue) -> None:
    jid = queue.enqueue("effect", {}, max_attempts=1)
    assert queue.claim("dies", lease_seconds=0.05) is not None
    time.sleep(0.2)
    assert queue.requeue_expired() == 1
    job = queue.get(jid)
    assert job.state == JobState.FAILED and "lease expired" in (job.last_error or "")


# -- real handlers through the archive, and the CLI ----------------------------------------------------------


@pytest.fixture
def archive_settings(tmp_path: Path, any_index_url: str) -> Settings:
    return Settings.load(data_dir=tmp_path / "vault", index_url=any_index_url)


def test_fixity_and_delete_blob_handlers(archive_settings: Settings) -> None:
    a = build_archive(archive_settings)
    assert a.jobs is not None
    try:
        good = a.ingest.ingest(io.BytesIO(make_ct(seed=1)))
        bad = a.ingest.ingest(io.BytesIO(make_ct(seed=2)))
        orphan = a.blobs.put(io.BytesIO(b"not referenced by the index")).info
        path = a.blobs.local_path(bad.blob.key)
        assert path is not None
        raw = bytearray(path.read_bytes())
        raw[-1] ^= 0xFF
        os.chmod(path, 0o644)
        path.write_bytes(bytes(raw))
        j_good = a.jobs.enqueue("fixity", {"study_uid": good.study_uid})
        j_bad = a.jobs.enqueue("fixity", {"sop_uids": [good.sop_instance_uid, bad.sop_instance_uid]})
        j_payload = a.jobs.enqueue("fixity", {"sop_uid": 42})
        j_orphan = a.jobs.enqueue("delete-blob", {"key": orphan.key})
        j_kept = a.jobs.enqueue("delete-blob", {"key": good.blob.key})
        worker = start_worker(a, poll_interval=0.02)
        assert wait_until(lambda: all(a.jobs.get(j).state in (JobState.DONE, JobState.FAILED)  # type: ignore[union-attr]
                                      for j in (j_good, j_bad, j_payload, j_orphan, j_kept)), timeout=20)
        worker.stop()
        assert a.jobs.get(j_good).result == {"checked": 1, "corrupt": [], "missing_blob": [], "not_indexed": []}
        failed = a.jobs.get(j_bad)
        assert failed.state == JobState.FAILED and failed.attempts == 1
        assert bad.sop_instance_uid in (failed.last_error or "") and "1 corrupt" in (failed.last_error or "")
        assert a.jobs.get(j_payload).state == JobState.FAILED
        assert a.jobs.get(j_orphan).result == {"deleted": True} and not a.blobs.exists(orphan.key)
        assert a.jobs.get(j_kept).result == {"deleted": False, "reason": "referenced"}
        assert a.blobs.exists(good.blob.key)
    finally:
        a.close()


def test_worker_sweep_finishes_removals_a_crash_left(tmp_path: Path, any_index_url: str) -> None:
    """A process that committed a DELETE and died before removing the blobs (pending removal), and one that died
    holding a claim: every node's job worker sweeps both once they are stale, and forgets nothing it needs."""
    a = build_archive(Settings.load(data_dir=tmp_path / "vault", index_url=any_index_url,
                                    blob_removal_stale_after=0.3, blob_removal_sweep_interval=0.1))
    try:
        committed, claimed = (a.ingest.ingest(io.BytesIO(make_ct(seed=n))) for n in (11, 12))
        a.index.delete(study_uid=committed.study_uid)  # the crash: blobs released, never removed
        a.index.delete(study_uid=claimed.study_uid)
        a.index.claim_blob_removals([claimed.blob.key], stale_after=300)  # the crash: claimed, never finished
        assert a.blobs.exists(committed.blob.key) and a.blobs.exists(claimed.blob.key)
        worker = start_worker(a, poll_interval=0.05)
        try:
            assert wait_until(lambda: not a.blobs.exists(committed.blob.key)
                              and not a.blobs.exists(claimed.blob.key), timeout=20)
        finally:
            worker.stop()
        for result in (committed, claimed):
            removal = a.index.blob_removal_round(result.blob.key)
            assert removal is not None and removal.finished
    finally:
        a.close()


def test_jobs_cli(archive_settings: Settings) -> None:
    a = build_archive(archive_settings)
    sop = a.ingest.ingest(io.BytesIO(make_ct())).sop_instance_uid
    a.close()
    common = ["--data-dir", str(archive_settings.data_dir), "--index-url", archive_settings.resolved_index_url]
    runner = CliRunner()
    res = runner.invoke(jobs_app, ["enqueue", "fixity", "--payload", json.dumps({"sop_uid": sop}), *common])
    assert res.exit_code == 0, res.output
    jid = int(res.stdout.strip())
    res = runner.invoke(jobs_app, ["enqueue", "fixity", "--payload", "[1]", *common])
    assert res.exit_code == 2 and "JSON object" in res.output
    res = runner.invoke(jobs_app, ["enqueue", "no-such-kind", *common])
    assert res.exit_code == 2 and "unknown job kind" in res.output
    res = runner.invoke(jobs_app, ["list", "--state", "queued", "--json", *common])
    assert [json.loads(line)["id"] for line in res.stdout.splitlines()] == [jid]
    res = runner.invoke(jobs_app, ["work", "--once", *common])
    assert res.exit_code == 0 and "ran 1 job" in res.output
    shown = json.loads(runner.invoke(jobs_app, ["show", str(jid), *common]).stdout)
    assert shown["state"] == "done" and shown["result"]["checked"] == 1
    res = runner.invoke(jobs_app, ["retry", str(jid), *common])
    assert res.exit_code == 0
    assert json.loads(runner.invoke(jobs_app, ["show", str(jid), *common]).stdout)["state"] == "queued"
    res = runner.invoke(jobs_app, ["retry", str(jid), *common])
    assert res.exit_code == 1 and "only failed or done" in res.output
    res = runner.invoke(jobs_app, ["show", "999999", *common])
    assert res.exit_code == 1 and "does not exist" in res.output


_WORK_PROCESS = """
import os, sys, time
from pathlib import Path
from dicomvault.adapters.index.engine import create_index_engine
from dicomvault.adapters.index.job_queue import SqlJobQueue
from dicomvault.jobs.worker import Worker
url, effects, go = sys.argv[1], Path(sys.argv[2]), Path(sys.argv[3])
queue = SqlJobQueue(create_index_engine(url, pool_size=2))
def effect(job):
    with effects.open("a") as f:
        f.write(f"{job.id} {os.getpid()}\\n")
    time.sleep(0.01)
worker = Worker(queue, {"effect": effect}, worker_id=f"proc-{os.getpid()}")
while not go.exists():
    time.sleep(0.01)
while worker.run_once():
    pass
"""


def test_two_processes_claim_each_job_once(queue: SqlJobQueue, any_index_url: str, tmp_path: Path) -> None:
    ids = [queue.enqueue("effect", {"n": n}) for n in range(60)]
    effects, go = tmp_path / "effects.log", tmp_path / "go"
    procs = [subprocess.Popen([sys.executable, "-c", _WORK_PROCESS, any_index_url, str(effects), str(go)])
             for _ in range(2)]
    time.sleep(0.5)
    go.touch()
    for p in procs:
        assert p.wait(60) == 0
    lines = [line.split() for line in effects.read_text().splitlines()]
    assert sorted(int(job) for job, _ in lines) == sorted(ids), "every job ran exactly once"
    assert all(queue.get(i).state == JobState.DONE and queue.get(i).attempts == 1 for i in ids)
