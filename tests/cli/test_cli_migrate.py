"""``dicomvault migrate`` (issue #12 item 5) against a real Orthanc: the command's report and exit status, its
usage errors, and a migration killed with SIGKILL midway then run again: no study Orthanc sent before the kill is
asked for again, nothing is missing."""

from __future__ import annotations

import json
import signal
import sqlite3
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.cli.cli_helpers import Invoke, cli_free_port, dv_command, dv_env, run_dv
from tests.orthanc_peer import CorpusStudy, LegacyPacs, legacy_pacs, small_corpus

MOVE_AET = "DVMIGRATE"
MOVE_PORT = cli_free_port()


@pytest.fixture(scope="module")
def pacs() -> Iterator[tuple[LegacyPacs, list[CorpusStudy]]]:
    studies, objects = small_corpus(studies=6, per_study=40)
    with legacy_pacs({MOVE_AET: MOVE_PORT}) as orthanc:
        orthanc.load(objects)
        yield orthanc, studies


def _add_peer(invoke: Invoke, orthanc: LegacyPacs) -> None:
    result = invoke("peers", "add", "ORTHANC", "--host", "127.0.0.1", "--port", str(orthanc.dimse_port),
                    "--dicomweb-url", orthanc.dicomweb)
    assert result.exit_code == 0, result.output


def _states(data_dir: Path) -> dict[str, str]:
    with sqlite3.connect(f"file:{data_dir / 'index.sqlite'}?mode=ro", uri=True, timeout=5) as db:
        return dict(db.execute("SELECT study_uid, state FROM migration_studies").fetchall())


def _instances(data_dir: Path) -> dict[str, int]:
    with sqlite3.connect(f"file:{data_dir / 'index.sqlite'}?mode=ro", uri=True, timeout=5) as db:
        return dict(db.execute("SELECT s.study_uid, count(*) FROM instances i JOIN series se ON i.series_fk = se.id "
                               "JOIN studies s ON se.study_fk = s.id GROUP BY s.study_uid").fetchall())


def test_report_and_exit_status(invoke: Invoke, data_dir: Path, tmp_path: Path,
                                pacs: tuple[LegacyPacs, list[CorpusStudy]]) -> None:
    orthanc, studies = pacs
    _add_peer(invoke, orthanc)
    uids = tmp_path / "uids.txt"
    uids.write_text(f"# two studies\n{studies[0].uid}\n{studies[1].uid}  # MR\n")
    report = tmp_path / "report.json"
    result = invoke("migrate", "--from", "ORTHANC", "--via", "dicomweb", "--studies", str(uids),
                    "--report", str(report), "--quiet")
    assert result.exit_code == 0, result.output
    assert "2 migrated (80 instances" in result.output
    body = json.loads(report.read_text())
    assert body["totals"]["migrated"] == 2 and body["totals"]["instances"] == 80 and body["failed"] == []
    assert report.with_suffix(".txt").read_text().startswith("migration from ORTHANC via dicomweb")

    again = invoke("migrate", "--from", "ORTHANC", "--via", "get", "--studies", str(uids), "--quiet")
    assert again.exit_code == 0 and "2 finished by an earlier run" in again.output

    unknown = invoke("migrate", "--from", "NOPE", "--via", "get", "--quiet")
    assert unknown.exit_code == 1 and "no peer 'NOPE'" in unknown.output
    bad = invoke("migrate", "--from", "ORTHANC", "--since", "2020-13-01")
    assert bad.exit_code == 2 and "date" in bad.output
    wrong = invoke("migrate", "--from", "ORTHANC", "--via", "get", "--listen-port", "1")
    assert wrong.exit_code == 2 and "--via move only" in wrong.output


def test_killed_midway_then_resumed_fetches_no_finished_study_again_and_misses_nothing(
        data_dir: Path, tmp_path: Path, pacs: tuple[LegacyPacs, list[CorpusStudy]]) -> None:
    orthanc, studies = pacs
    before = orthanc.moves_per_study()
    added = run_dv("peers", "add", "ORTHANC", "--host", "127.0.0.1", "--port", str(orthanc.dimse_port),
                   "--data-dir", str(data_dir))
    assert added.returncode == 0, added.stderr
    args = ["migrate", "--from", "ORTHANC", "--via", "move", "--listen-port", str(MOVE_PORT), "--listen-host",
            "127.0.0.1", "--move-aet", MOVE_AET, "--data-dir", str(data_dir), "--quiet"]
    # slowed down (about 2 s a study, one at a time) so that the kill lands while studies are left
    log = (tmp_path / "first.log").open("wb")
    first = subprocess.Popen(dv_command(*args, "--max-studies-in-flight", "1", "--max-bytes-per-second", "12000"),
                             stdout=log, stderr=subprocess.STDOUT, env=dv_env())
    deadline = time.monotonic() + 60
    try:
        while time.monotonic() < deadline and first.poll() is None:
            if (data_dir / "index.sqlite").exists():
                try:
                    if sum(s == "done" for s in _states(data_dir).values()) >= 2:
                        break
                except sqlite3.OperationalError:  # the table is being created
                    pass
            time.sleep(0.1)
        assert first.poll() is None, "the first run ended before it could be killed"
        first.send_signal(signal.SIGKILL)
        first.wait(10)
    finally:
        log.close()
        if first.poll() is None:
            first.kill()
            first.wait()
    done_before = {uid for uid, state in _states(data_dir).items() if state == "done"}
    assert 2 <= len(done_before) < len(studies)

    second = run_dv(*args, timeout=120)
    assert second.returncode == 0, second.stdout + second.stderr
    assert f"{len(done_before)} finished by an earlier run" in second.stdout

    moves = {uid: n - before.get(uid, 0) for uid, n in orthanc.moves_per_study().items()}
    assert all(moves[uid] == 1 for uid in done_before), "a study finished before the kill was asked for again"
    assert all(1 <= moves[s.uid] <= 2 for s in studies)
    assert sum(moves[s.uid] == 2 for s in studies) <= 1, "only the study in flight at the kill is asked again"
    assert set(_states(data_dir).values()) == {"done"}
    assert _instances(data_dir) == {s.uid: 40 for s in studies}
