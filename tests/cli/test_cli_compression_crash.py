"""Crash trials for compression at rest: SIGKILL ``dicomvault lifecycle run`` at a random moment while a compress
rule re-encodes the instances of an archive on a folder store, then run it again to completion.

The promise under test (issue #11 item 4, ``services.compression``): whenever the process dies, every instance
still reads back exactly as received (its original object, or the object rebuilt from the compressed form and
its recipe, SHA-256 for SHA-256), and no index row is left without a verified copy; the work, run again, compresses
every eligible instance, ``dicomvault verify`` finds the archive clean, and after the removal sweep and the orphan
sweep no original's bytes are left on the store.
"""

from __future__ import annotations

import hashlib
import io
import json
import random
import signal
import subprocess
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, cast

import pydicom
import pytest
from pydicom.uid import ImplicitVRLittleEndian, generate_uid
from sqlalchemy import update

from dicomvault.adapters.index.job_queue import jobs
from dicomvault.bootstrap import Archive, build_archive, pixel_limits
from dicomvault.dicom.lossless import LosslessError
from dicomvault.ports.jobs import JobState
from dicomvault.services.compression import build_compressed
from dicomvault.settings import Settings
from tests.cli.cli_helpers import dv_command, dv_env, run_dv
from tests.helpers import make_ct

STUDIES = 4
PER_STUDY = 12
ROUNDS = 3
JLS = "1.2.840.10008.1.2.4.80"

CONFIG = """
ingest_store = "main"
tier_max_bytes_per_second = {rate}
blob_removal_stale_after = 1.0
[stores.main]
url = "file://{root}/main"
[[lifecycle]]
name = "compress everything"
when = {{ study_age_days = 0 }}
action = {{ compress = "jpeg-ls" }}
"""


def _object(study: str, series: str, i: int, seed: int) -> bytes:
    """Mostly 64x64 noisy 12-bit CTs (JPEG-LS: ~1.3x smaller); every 4th one implicit VR, every 5th three frames,
    the last of a study 4x4 (too small to compress: left as it is, with its reason)."""
    if i == PER_STUDY - 1:
        return make_ct(study=study, series=series, rows=4, columns=4, seed=seed)
    raw = make_ct(study=study, series=series, rows=64, columns=64, frames=3 if i % 5 == 0 else 1, seed=seed,
                  InstanceNumber=i + 1)
    if i % 4 != 1:
        return raw
    ds = pydicom.dcmread(io.BytesIO(raw))
    ds.file_meta.TransferSyntaxUID = ImplicitVRLittleEndian
    out = io.BytesIO()
    ds.save_as(out, enforce_file_format=True, implicit_vr=True, little_endian=True)
    return out.getvalue()


def _blob_files(root: Path) -> set[str]:
    store = root / "main"
    return {p.name for p in store.rglob("*") if p.is_file() and len(p.name) == 64} if store.exists() else set()


def _open(config: Path, data_dir: Path) -> Archive:
    return build_archive(Settings.load(config, data_dir=data_dir))


def _check_every_instance(archive: Archive, received: dict[str, bytes]) -> tuple[int, int]:
    """Every instance reads back as received (SHA-256) and no index row lacks a verified copy; returns how many
    are compressed and how many not."""
    report = archive.fixity.check()
    assert report.damaged == [] and report.data_loss == [], report.damaged
    assert not list(archive.index.iter_uncopied_blobs()), "an indexed blob without any recorded copy"
    assert archive.compression is not None
    compressed = native = 0
    records = archive.retrieve.locate(sop_uids=list(received))
    assert len(records) == len(received)
    for record in records:
        expected = hashlib.sha256(received[record.sop_uid]).hexdigest()
        if record.original is None:
            data = b"".join(archive.retrieve.iter_bytes(record, verify=True))
            native += 1
        else:
            assert record.original.sha256 == expected
            data = b"".join(archive.retrieve.iter_transcoded(record, record.original.syntax))
            assert archive.compression.prove(record) is None
            compressed += 1
        assert hashlib.sha256(data).hexdigest() == expected, record.sop_uid
    return compressed, native


def _expire_leases(archive: Archive) -> int:
    """Stands for the killed job's lease running out (300 s): its study's job becomes claimable again."""
    engine = cast(Any, archive.index).engine  # the SQL adapter's
    past = datetime.now(UTC) - timedelta(seconds=1)
    if engine.dialect.name != "postgresql":
        past = past.replace(tzinfo=None)  # SQLite keeps naive UTC (adapters.index.job_queue)
    with engine.begin() as conn:
        return int(conn.execute(update(jobs).where(jobs.c.state == JobState.RUNNING.value)
                                .values(lease_until=past)).rowcount)


def _verify(config: Path, data_dir: Path, *extra: str) -> tuple[int, dict[str, object]]:
    done = run_dv("verify", "--json", "--grace", "0", "--config", str(config), "--data-dir", str(data_dir), *extra,
                  timeout=120)
    assert done.returncode in (0, 1), done.stdout + done.stderr
    return done.returncode, json.loads(done.stdout)


def _one_round(root: Path, rng: random.Random) -> dict[str, int]:
    root.mkdir()
    data_dir = root / "vault"
    received: dict[str, bytes] = {}
    for _ in range(STUDIES):
        study, series = generate_uid(), generate_uid()
        for i in range(PER_STUDY):
            data = _object(study, series, i, seed=rng.randrange(1 << 30))
            received[str(pydicom.dcmread(io.BytesIO(data), stop_before_pixels=True).SOPInstanceUID)] = data
    # slow enough that the kill lands inside the work: reading and writing everything takes ~3 s at this rate
    config = root / "dv.toml"
    config.write_text(CONFIG.format(root=root, rate=sum(len(d) for d in received.values()) // 2))
    archive = _open(config, data_dir)
    try:
        for data in received.values():
            archive.ingest.ingest(io.BytesIO(data), source="test")
        originals = {r.blob.key for r in archive.retrieve.locate(sop_uids=list(received))}
    finally:
        archive.close()
    assert len(originals) == len(received) and _blob_files(root) == originals
    # Where the run will write the compressed objects (JPEG-LS encodes deterministically; the store's files are
    # named by SHA-256): looking at those few paths is quick enough to kill right after one is written.
    limits = pixel_limits(Settings.load(config, data_dir=data_dir))
    to_write = []
    for data in received.values():
        try:
            key = hashlib.sha256(build_compressed(data, JLS, limits).data).hexdigest()
        except LosslessError:
            continue
        to_write.append(root / "main" / key[:3] / key)
    assert len(to_write) == STUDIES * (PER_STUDY - 1)

    proc = subprocess.Popen(dv_command("lifecycle", "run", "--config", str(config), "--data-dir", str(data_dir)),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=dv_env())
    # Kill at a random moment after the run started compressing (whatever its start-up takes), or when it ends on
    # its own: right after it wrote its k-th compressed object (the moments around writing one object, switching
    # the instance to it and removing the original are short: most of the run is the throttle's waits), or a
    # random delay later.
    k, delay = rng.randint(1, STUDIES * PER_STUDY // 2), rng.choice([0.0, 0.0, rng.uniform(0.0, 2.0)])
    deadline = time.monotonic() + 60
    while proc.poll() is None and sum(p.exists() for p in to_write) < k and time.monotonic() < deadline:
        time.sleep(0.001)
    time.sleep(delay)
    finished_alone = proc.poll() is not None
    proc.send_signal(signal.SIGKILL)
    proc.wait(10)

    archive = _open(config, data_dir)
    try:
        compressed, native = _check_every_instance(archive, received)
        left_behind = len(_blob_files(root) - originals) - compressed  # compressed bytes written, not switched to
        pending = len(archive.index.blob_removals_due(stale_after=0.0, limit=1000))
        assert _expire_leases(archive) <= 1
    finally:
        archive.close()

    done = run_dv("lifecycle", "run", "--config", str(config), "--data-dir", str(data_dir), timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    archive = _open(config, data_dir)
    try:
        assert archive.jobs is not None
        assert [j for j in archive.jobs.list(JobState.RUNNING) if j.kind.startswith("tier")] == []
        assert _check_every_instance(archive, received) == (STUDIES * (PER_STUDY - 1), STUDIES)
        records = archive.retrieve.locate(sop_uids=list(received))
        small = [r for r in records if r.original is None]
        assert all("too small" in reason for reason in
                   archive.index.compression_skips([r.blob.key for r in small]).values())
        assert len(archive.index.compression_skips([r.blob.key for r in small])) == STUDIES
    finally:
        archive.close()
    # Nothing indexed is damaged or lost; what the kill left (an original whose removal it did not finish, a
    # compressed object it wrote but did not switch to) is no index row's.
    code, report = _verify(config, data_dir)
    assert report["data_loss"] == [] and report["missing"] == [] and report["corrupt"] == [], report
    assert report["untracked_copies"] == [], report
    assert code == 0 or report["orphans"] or report["temporary"], report
    orphans, temporary = len(report["orphans"]), len(report["temporary"] or [])  # type: ignore[arg-type]

    time.sleep(1.1)  # blob_removal_stale_after: the killed process's pending or claimed removals are now due
    archive = _open(config, data_dir)
    try:
        archive.remover.sweep()
    finally:
        archive.close()
    _verify(config, data_dir, "--repair")
    code, report = _verify(config, data_dir)
    assert code == 0, report
    archive = _open(config, data_dir)
    try:
        current = {r.blob.key for r in archive.retrieve.locate(sop_uids=list(received))}
        assert archive.index.blob_removals_due(stale_after=0.0, limit=1000) == []
    finally:
        archive.close()
    kept = {r for r in originals if r in current}  # the small ones, left as they are
    assert len(kept) == STUDIES
    assert _blob_files(root) == current, "an original's bytes (or an unswitched compressed object) left behind"
    return {"compressed": compressed, "native": native - STUDIES, "pending": pending, "left_behind": left_behind,
            "orphans": orphans, "temporary": temporary, "finished_alone": int(finished_alone), "k": k}


@pytest.mark.slow
def test_cli_compression_sigkill_loses_nothing(tmp_path: Path) -> None:
    rng = random.Random(4)
    seen = [_one_round(tmp_path / f"round{n}", rng) for n in range(ROUNDS)]
    # at least one kill landed mid-work: some instances compressed, others not yet
    assert any(s["compressed"] and s["native"] for s in seen), seen
