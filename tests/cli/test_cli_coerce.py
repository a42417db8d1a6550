"""``dicomvault coerce test`` (issue #12 item 2): before / after of a rule set on sample files, nothing stored."""

from __future__ import annotations

import json
from pathlib import Path

import pydicom

from tests.cli.cli_helpers import Invoke
from tests.helpers import make_ct

RULES = """
[[coercion]]
name = "ACME"
when = { source = "ACMEPACS" }
prefix = { AccessionNumber = "ACME-" }
issuer_of_patient_id = "ACME"
"""


def test_cli_coerce_test(tmp_path: Path, invoke: Invoke) -> None:
    rules = tmp_path / "dv.toml"
    rules.write_text(RULES)
    sample = tmp_path / "ct.dcm"
    sample.write_bytes(make_ct(AccessionNumber="A1"))
    out = tmp_path / "out"
    result = invoke("coerce", "test", str(rules), str(sample), "--source", "ACMEPACS", "--json", "--output", str(out),
                    data=False)
    assert result.exit_code == 0, result.output
    [entry] = json.loads(result.stdout)
    assert entry["rules"] == ["ACME"]
    assert entry["changes"] == ["AccessionNumber: 'A1' -> 'ACME-A1' [ACME]",
                                "IssuerOfPatientID: (absent) -> 'ACME' [ACME]"]
    written = pydicom.dcmread(out / "ct.dcm")
    assert written.AccessionNumber == "ACME-A1" and written.OriginalAttributesSequence
    other = invoke("coerce", "test", str(rules), str(sample), "--source", "OTHER", data=False)
    assert other.exit_code == 0 and "no rule matches" in other.output
    table = invoke("coerce", "test", str(rules), str(sample), "--source", "dimse:ACMEPACS", data=False)
    assert "AccessionNumber: 'A1' -> 'ACME-A1' [ACME]" in table.output

    rules.write_text(RULES.replace("AccessionNumber", "AccesionNumber"))
    bad = invoke("coerce", "test", str(rules), str(sample), data=False)
    assert bad.exit_code == 2 and "line 5" in bad.output and "AccesionNumber" in bad.output
