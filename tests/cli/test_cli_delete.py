"""``dicomvault delete`` (issue #13 item 8): the DICOMweb DELETE from the shell — asks first, goes through the trash
when a grace period is set, obeys the retention minimum, logs the operator."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from pydicom.uid import generate_uid
from typer.testing import CliRunner

from dicomvault.cli.main import app
from tests.cli.cli_helpers import Invoke
from tests.helpers import make_ct


def _seed(invoke: Invoke, tmp_path: Path) -> tuple[str, str, str]:
    """A study of two series (one instance each) and another study; returns (study, first series, other study)."""
    study, series, other = generate_uid(), generate_uid(), generate_uid()
    for n, (st, se) in enumerate([(study, series), (study, generate_uid()), (other, generate_uid())]):
        path = tmp_path / f"{n}.dcm"
        path.write_bytes(make_ct(study=st, series=se, rows=2, columns=2, PatientID="DEL-1"))
        assert invoke("import", str(path)).exit_code == 0
    return study, series, other


def _studies(invoke: Invoke) -> set[str]:
    return {row["0020000D"]["Value"][0] for row in json.loads(invoke("find", "--json").stdout)}


def test_delete_asks_first_then_deletes_at_once_without_grace(invoke: Invoke, tmp_path: Path,
                                                             data_dir: Path) -> None:
    study, _, other = _seed(invoke, tmp_path)
    runner = CliRunner()
    argv = ["delete", study, "--data-dir", str(data_dir)]
    refused = runner.invoke(app, argv, input="n\n")
    assert refused.exit_code == 1 and "nothing deleted" in refused.stderr
    assert f"Delete study {study}: 2 instance(s) in 2 series — patient Doe^John (DEL-1), study date 20240102?" \
        in refused.stderr.replace("\n", "")
    assert _studies(invoke) == {study, other}
    done = runner.invoke(app, argv, input="y\n")
    assert done.exit_code == 0, done.output
    assert "2 stored object(s) removed" in done.stdout and "not restorable" in done.stdout
    assert _studies(invoke) == {other}
    log = json.loads(invoke("deletions", "--json").stdout)
    assert log[0]["action"] == "delete" and log[0]["by"].startswith("cli:") and log[0]["study_uid"] == study


def test_delete_into_the_trash_with_a_grace_period(invoke: Invoke, tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    study, series, other = _seed(invoke, tmp_path)
    monkeypatch.setenv("DICOMVAULT_DELETE_GRACE_DAYS", "7")
    result = invoke("delete", study, "--series", series, "--yes", "--reason", "wrong patient")
    assert result.exit_code == 0, result.output
    assert f"deleted series {series}: 1 instance(s) in 1 series" in result.stdout
    assert "1 object(s) in the trash until" in result.stdout and f"dicomvault trash restore {study}" in result.stdout
    [trashed] = json.loads(invoke("trash", "list", "--json").stdout)
    assert trashed["study_uid"] == study and trashed["instances"] == 1
    assert json.loads(invoke("deletions", "--json").stdout)[0]["reason"] == "wrong patient"
    assert _studies(invoke) == {study, other}  # the other series stays


def test_delete_refusals(invoke: Invoke, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    study, _, other = _seed(invoke, tmp_path)
    missing = invoke("delete", "1.2.3.4", "--yes")
    assert missing.exit_code == 1 and "nothing to delete: no instances match study 1.2.3.4" in missing.stderr
    monkeypatch.setenv("DICOMVAULT_RETENTION_MIN_DAYS", "100000")
    held = invoke("delete", study, "--yes")
    assert held.exit_code == 1 and "not deleted: retention" in held.stderr
    assert _studies(invoke) == {study, other}
