"""Crash trials for tier moves: SIGKILL ``dicomvault lifecycle run`` at random moments while it moves studies from
the hot store to the cold one, repeatedly.

The promise under test (issue #11): at every moment, every indexed blob has at least one recorded copy, and every
recorded copy that is not the object's only one may at worst be missing (a crash inside a drop) — never is an
object without an intact copy; the interrupted work, run again, finishes with every object on the cold store,
byte-identical.
"""

from __future__ import annotations

import random
import signal
import subprocess
import time
from pathlib import Path

import pytest
from pydicom.uid import generate_uid

from dicomvault.bootstrap import build_archive
from dicomvault.settings import Settings
from tests.cli.cli_helpers import dv_command, dv_env, run_dv
from tests.helpers import make_ct

STUDIES = 3
PER_STUDY = 60
TRIALS = 4

CONFIG = """
ingest_store = "hot"
tier_max_bytes_per_second = {rate}
[stores.hot]
url = "file://{root}/hot"
[stores.cold]
url = "file://{root}/cold"
[[lifecycle]]
name = "everything to cold"
when = {{ study_age_days = 0 }}
action = {{ move_to = "cold" }}
"""


def _config(root: Path, rate: int) -> Path:
    path = root / "dv.toml"
    path.write_text(CONFIG.format(root=root, rate=rate))
    return path


def _cold_files(root: Path) -> int:
    return sum(1 for p in (root / "cold").rglob("*") if p.is_file() and len(p.name) == 64) \
        if (root / "cold").exists() else 0


def _check_invariant(config: Path, data_dir: Path) -> set[tuple[str, ...]]:
    """Check the promise; return the sets of stores the blobs are on (to see where the kill landed)."""
    archive = build_archive(Settings.load(config, data_dir=data_dir))
    try:
        report = archive.fixity.check()
        assert report.data_loss == [], "an object lost every intact copy"
        for damage in report.damaged:  # only a crash inside a drop may leave a record without bytes
            assert damage.problem == "missing" and report.intact_copies.get(damage.blob.key), damage
        assert not list(archive.index.iter_uncopied_blobs()), "an indexed blob without any recorded copy"
        return {tuple(sorted(stores)) for store in ("hot", "cold")
                for _, _, stores in archive.index.iter_blob_copies(store)}
    finally:
        archive.close()


@pytest.mark.slow
def test_cli_tiers_sigkill_during_moves_loses_nothing(tmp_path: Path) -> None:
    src, data_dir = tmp_path / "src", tmp_path / "vault"
    src.mkdir()
    objects: dict[str, bytes] = {}
    for s in range(STUDIES):
        study, series = generate_uid(), generate_uid()
        for i in range(PER_STUDY):
            sop = generate_uid()
            data = make_ct(study=study, series=series, sop=sop, rows=64, columns=64, seed=s * 1000 + i)
            objects[sop] = data
            (src / f"{s}-{i:03d}.dcm").write_bytes(data)
    size = sum(len(d) for d in objects.values())
    # slow enough that every trial's kill lands mid-move: the whole move takes ~2 s
    config = _config(tmp_path, rate=size // 2)
    imported = run_dv("import", str(src), "--config", str(config), "--data-dir", str(data_dir))
    assert imported.returncode == 0, imported.stdout + imported.stderr

    rng = random.Random(11)
    seen: list[set[tuple[str, ...]]] = []
    for _ in range(TRIALS):
        proc = subprocess.Popen(dv_command("lifecycle", "run", "--config", str(config), "--data-dir",
                                           str(data_dir)),
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=dv_env())
        # Kill at a random moment after this run has written its first object to the cold store (so the kill
        # lands inside the work whatever the start-up takes), or when the run ends on its own.
        before = _cold_files(tmp_path)
        deadline = time.monotonic() + 60
        while proc.poll() is None and _cold_files(tmp_path) <= before and time.monotonic() < deadline:
            time.sleep(0.01)
        time.sleep(rng.uniform(0.0, 1.0))
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
        seen.append(_check_invariant(config, data_dir))
        # the killed job keeps its lease (300 s); the next trial's run works on the other studies meanwhile

    assert any(("hot",) in s and ("cold",) in s for s in seen), f"no kill landed mid-move: {seen}"
    archive = build_archive(Settings.load(config, data_dir=data_dir))
    try:
        assert archive.tiering is not None
        studies = {r.study_uid for r in archive.retrieve.locate(sop_uids=list(objects))}
        for study in studies:  # what the killed jobs left: the same idempotent work their retries will do
            archive.tiering.apply_study(study)
        assert {b.stores for s in studies for b in archive.index.study_blobs(s)} == {("cold",)}
        for record in archive.retrieve.locate(sop_uids=list(objects)):
            assert b"".join(archive.retrieve.iter_bytes(record, verify=True)) == objects[record.sop_uid]
        report = archive.fixity.check()
        assert not report.damaged and not report.data_loss
        hot = archive.tiers.store("hot") if archive.tiers else None
        assert hot is not None and not any(hot.exists(k) for k in (b.blob.key for s in studies
                                                                   for b in archive.index.study_blobs(s)))
    finally:
        archive.close()
