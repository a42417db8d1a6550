"""``dicomvault find`` is readable at 80 columns (issue #13 item 8): columns chosen by width, never wrapped letter by
letter, UIDs only when wide or asked for (``--uids``), DICOM JSON with ``--json``."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import Result
from typer.testing import CliRunner

from dicomvault.cli.main import app
from tests.cli.cli_helpers import Invoke
from tests.helpers import make_ct

LONG = "CT THORAX ABDOMEN PELVIS WITH CONTRAST ARTERIAL AND VENOUS PHASE"


@pytest.fixture
def seeded(invoke: Invoke, tmp_path: Path) -> list[str]:
    """Three studies, one with a long description; returns their Study Instance UIDs."""
    src = tmp_path / "seed"
    src.mkdir()
    studies = []
    for n, (name, desc) in enumerate([("Doe^John", LONG), ("Müller-Lüdenscheidt^Anna-Katharina", "HEAD"),
                                      ("Roe^Richard", "CHEST")]):
        data = make_ct(rows=2, columns=2, PatientID=f"PAT-{n:04d}", PatientName=name, StudyDescription=desc,
                       AccessionNumber=f"ACC{n}")
        (src / f"{n}.dcm").write_bytes(data)
        assert invoke("import", str(src / f"{n}.dcm")).exit_code == 0
    result = invoke("find", "--json")
    studies = [row["0020000D"]["Value"][0] for row in json.loads(result.stdout)]
    return studies


def _find(data_dir: Path, columns: int, *args: str) -> Result:
    return CliRunner().invoke(app, ["find", *args, "--data-dir", str(data_dir)], env={"COLUMNS": str(columns)})


def test_at_80_columns_the_main_columns_fit_without_wrapping(seeded: list[str], data_dir: Path) -> None:
    result = _find(data_dir, 80)
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert max(len(line) for line in lines) <= 80, result.stdout
    header = next(line for line in lines if "Patient" in line)
    for title in ("Patient", "ID", "Date", "Mod", "Description", "Inst"):
        assert title in header
    assert "StudyInstanceUID" not in result.stdout and not any(uid in result.stdout for uid in seeded)
    # whole values on one line each (no letter-by-letter wrapping), the long description cut with an ellipsis
    for value in ("Doe^John", "PAT-0000", "PAT-0001", "2024-01-02", "CHEST"):
        assert value in result.stdout
    assert LONG not in result.stdout and "…" in result.stdout
    assert len([line for line in lines if "PAT-" in line]) == 3  # one line per study


def test_uids_when_asked_or_wide(seeded: list[str], data_dir: Path) -> None:
    narrow = _find(data_dir, 80, "--uids")
    assert narrow.exit_code == 0
    assert all(uid in narrow.stdout for uid in seeded), narrow.stdout  # UIDs whole; other columns gave way
    assert max(len(line) for line in narrow.stdout.splitlines()) <= 80 or "…" not in narrow.stdout
    wide = _find(data_dir, 250)
    assert all(uid in wide.stdout for uid in seeded) and LONG in wide.stdout and "Accession" in wide.stdout


def test_matching_keys_and_includes_get_a_column(seeded: list[str], data_dir: Path) -> None:
    result = _find(data_dir, 80, "AccessionNumber=ACC1", "--include", "StudyID")
    assert result.exit_code == 0
    default_keys = _find(data_dir, 80, "PatientName=*", "StudyDate=20000101-")
    header = next(line for line in default_keys.stdout.splitlines() if "Patient" in line)
    assert header.index("Patient") < header.index("ID") < header.index("Date") < header.index("Description")
    assert "AccessionNumber" in result.stdout and "ACC1" in result.stdout and "PAT-0001" in result.stdout
    assert max(len(line) for line in result.stdout.splitlines()) <= 80


def test_other_levels_fit(seeded: list[str], data_dir: Path) -> None:
    for level, expected in (("series", "CT"), ("instance", "CT Image Storage"), ("patient", "PAT-0002")):
        result = _find(data_dir, 80, "--level", level)
        assert result.exit_code == 0, result.output
        assert expected in result.stdout
        assert max(len(line) for line in result.stdout.splitlines()) <= 80


def test_json_is_dicom_json(seeded: list[str], data_dir: Path) -> None:
    result = _find(data_dir, 80, "--json", "PatientID=PAT-0000")
    [study] = json.loads(result.stdout)
    assert study["00100020"] == {"vr": "LO", "Value": ["PAT-0000"]}
    assert study["00081030"]["Value"] == [LONG]
