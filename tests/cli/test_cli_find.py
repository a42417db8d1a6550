"""``dicomvault find`` goes through the bounded query engine (issue #9, defects 2 and 5): the result maximum, the key
limits and the scan budget apply, and stderr says when results were cut short."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.cli.cli_helpers import Invoke
from tests.helpers import make_ct


def _seed(tmp_path: Path, invoke: Invoke) -> None:
    """Six CT studies, InstitutionName "Match" on the 1st and 6th."""
    src = tmp_path / "seed"
    src.mkdir()
    for i in range(6):  # one import each: the studies get their index ids (the scan order) in this order
        data = make_ct(rows=2, columns=2, PatientID=f"F-{i}", InstitutionName="Match" if i in (0, 5) else "Other")
        (src / f"{i}.dcm").write_bytes(data)
        result = invoke("import", str(src / f"{i}.dcm"))
        assert result.exit_code == 0, result.output


def test_find_is_bounded(invoke: Invoke, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _seed(tmp_path, invoke)
    monkeypatch.setenv("DICOMVAULT_QUERY_MAX_RESULTS", "4")
    r = invoke("find", "--limit", "50", "--json")
    assert r.exit_code == 0, r.output
    assert len(json.loads(r.stdout)) == 4
    assert "--limit reduced to the maximum of 4" in r.stderr and "more than 4 results" in r.stderr
    monkeypatch.delenv("DICOMVAULT_QUERY_MAX_RESULTS")
    r = invoke("find", "PatientName=" + "*A" * 17)
    assert r.exit_code == 2 and "query failed: PatientName: more than 16 wildcards" in r.output
    # keys the index does not hold: found within the scan budget, or a note that the budget stopped the search
    r = invoke("find", "InstitutionName=Ma?ch", "--json")
    assert r.exit_code == 0 and len(json.loads(r.stdout)) == 2 and r.stderr == ""
    monkeypatch.setenv("DICOMVAULT_QUERY_MAX_SCANNED", "3")
    r = invoke("find", "InstitutionName=Ma?ch", "--json")
    assert r.exit_code == 0 and len(json.loads(r.stdout)) == 1
    assert "search stopped after examining 3 records" in r.stderr
