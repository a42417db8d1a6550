"""``find``, ``stats`` and ``verify`` (fixity: corrupt, missing, orphan and leftover temporary blobs)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from tests.cli.cli_helpers import Invoke
from tests.helpers import make_ct


def _seed(tmp_path: Path, invoke: Invoke) -> tuple[Path, list[bytes]]:
    """Import five CT objects (two studies) and return their folder and bytes."""
    src = tmp_path / "seed"
    src.mkdir()
    study_a, study_b = "1.2.826.0.1.3680043.8.498.1", "1.2.826.0.1.3680043.8.498.2"
    objs = [make_ct(study=study_a, series=study_a + ".1", seed=i, PatientID="PA", PatientName="Alpha^Ann",
                    InstanceNumber=i) for i in range(3)]
    objs += [make_ct(study=study_b, series=study_b + ".1", seed=10 + i, PatientID="PB", PatientName="Beta^Bob",
                     Modality="MR") for i in range(2)]
    for i, data in enumerate(objs):
        (src / f"{i}.dcm").write_bytes(data)
    result = invoke("import", str(src))
    assert result.exit_code == 0, result.output
    return src, objs


def _blob_files(data_dir: Path) -> list[Path]:
    return [p for p in (data_dir / "blobs").rglob("*") if p.is_file() and len(p.name) == 64]


def test_cli_find_levels_and_json(invoke: Invoke, tmp_path: Path) -> None:
    _seed(tmp_path, invoke)
    studies = invoke("find", "PatientName=alpha*", "--json")
    assert studies.exit_code == 0, studies.output
    rows = json.loads(studies.stdout)
    assert len(rows) == 1 and rows[0]["00201208"]["Value"] == [3]  # NumberOfStudyRelatedInstances
    series = invoke("find", "--level", "series", "Modality=MR")
    assert series.exit_code == 0 and "1 series result(s)" in series.output and "MR" in series.output
    series_json = json.loads(invoke("find", "--level", "series", "Modality=MR", "--json").stdout)
    assert [r["0020000E"]["Value"][0] for r in series_json] == ["1.2.826.0.1.3680043.8.498.2.1"]
    images = invoke("find", "-l", "instance", "StudyInstanceUID=1.2.826.0.1.3680043.8.498.1", "--limit", "2",
                    "--include", "PatientID")
    assert images.exit_code == 0 and "limit reached" in images.output and "PatientID" in images.output
    patients = invoke("find", "-l", "patient", "--json")
    assert sorted(r["00100020"]["Value"][0] for r in json.loads(patients.stdout)) == ["PA", "PB"]
    bad = invoke("find", "StudyDate=2020-bad")
    assert bad.exit_code == 2 and "query failed" in bad.output
    assert invoke("find", "novalue").exit_code == 2
    assert invoke("find", "-l", "galaxy").exit_code == 2


def test_cli_stats_counts_and_modalities(invoke: Invoke, tmp_path: Path) -> None:
    _, objs = _seed(tmp_path, invoke)
    data = json.loads(invoke("stats", "--json").stdout)
    assert (data["patients"], data["studies"], data["series"], data["instances"]) == (2, 2, 2, 5)
    assert data["bytes"] == sum(map(len, objs))
    assert data["by_modality"]["CT"]["instances"] == 3 and data["by_modality"]["MR"]["instances"] == 2
    table = invoke("stats")
    assert table.exit_code == 0 and "By modality" in table.output


def test_cli_verify_detects_corruption_missing_orphans_and_repairs(invoke: Invoke, tmp_path: Path,
                                                                   data_dir: Path) -> None:
    _seed(tmp_path, invoke)
    clean = invoke("verify")
    assert clean.exit_code == 0, clean.output
    assert "archive is clean" in clean.output

    blobs = _blob_files(data_dir)
    assert len(blobs) == 5
    corrupt, missing = blobs[0], blobs[1]
    raw = bytearray(corrupt.read_bytes())
    raw[-1] ^= 0xFF  # flip one pixel byte: same size, different SHA-256
    corrupt.write_bytes(bytes(raw))
    missing.unlink()
    orphan_data = make_ct(seed=99)
    orphan_key = hashlib.sha256(orphan_data).hexdigest()
    orphan = data_dir / "blobs" / orphan_key[:2] / orphan_key[2:4] / orphan_key  # the layout of earlier versions
    orphan.parent.mkdir(parents=True, exist_ok=True)
    orphan.write_bytes(orphan_data)
    leftover = data_dir / "blobs" / "tmp" / "interrupted-write"
    leftover.write_bytes(b"half")

    report = invoke("verify", "--grace", "0")
    assert report.exit_code == 1
    assert "SHA-256 mismatch" in report.output
    assert orphan_key in report.output and "interrupted-write" in report.output
    assert corrupt.exists() and orphan.exists()  # a plain verify changes nothing

    repaired = invoke("verify", "--repair", "--grace", "0")
    assert repaired.exit_code == 1  # lost objects remain until dropped explicitly
    assert "1 orphan blob(s) removed, 1 temporary file(s) removed" in repaired.output
    assert not orphan.exists() and not leftover.exists()
    assert corrupt.exists()  # damaged indexed data is never deleted by --repair alone

    dropped = invoke("verify", "--drop-missing")
    assert dropped.exit_code == 0, dropped.output
    assert "2 index row(s) of lost objects dropped" in dropped.output
    assert json.loads(invoke("stats", "--json").stdout)["instances"] == 3
    assert len(_blob_files(data_dir)) == 3  # the corrupt blob went with its row
    assert invoke("verify").exit_code == 0


def test_cli_verify_grace_spares_writes_in_progress(invoke: Invoke, tmp_path: Path, data_dir: Path) -> None:
    _seed(tmp_path, invoke)
    staged = data_dir / "blobs" / "tmp" / "in-progress"
    staged.write_bytes(b"x")
    fresh = make_ct(seed=7)
    key = hashlib.sha256(fresh).hexdigest()
    unindexed = data_dir / "blobs" / key[:3] / key
    unindexed.parent.mkdir(parents=True, exist_ok=True)
    unindexed.write_bytes(fresh)
    # Fresh files may be an ingest between its blob put and its index commit on a running server: left alone.
    result = invoke("verify", "--repair", "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["recent_unreferenced"] == 1 and report["orphans"] == [] and report["temporary"] == []
    assert staged.exists() and unindexed.exists()
    # With no grace (nothing being stored), the same files are garbage.
    assert invoke("verify", "--grace", "0").exit_code == 1
    assert invoke("verify", "--grace", "0", "--repair").exit_code == 0
    assert not staged.exists() and not unindexed.exists()


def test_cli_config_errors_exit_2(invoke: Invoke, tmp_path: Path) -> None:
    missing = invoke("stats", "--config", str(tmp_path / "nope.toml"))
    assert missing.exit_code == 2 and "configuration error" in missing.output
    bad = tmp_path / "bad.toml"
    bad.write_text('aet = "THIS-AE-TITLE-IS-FAR-TOO-LONG"\n')
    assert invoke("stats", "--config", str(bad)).exit_code == 2
