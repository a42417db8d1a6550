"""``dicomvault lifecycle plan|run``, ``tier status`` and ``verify --report`` on an archive with a hot and a cold
store (folders), in-process."""

from __future__ import annotations

import json
from pathlib import Path

from tests.cli.cli_helpers import Invoke
from tests.helpers import make_ct

CONFIG = """
ingest_store = "hot"
tier_max_bytes_per_second = 0
[stores.hot]
url = "file://{root}/hot"
[stores.cold]
url = "file://{root}/cold"
[[lifecycle]]
name = "old CT to cold"
when = {{ study_age_days = 365, modality = "CT" }}
action = {{ move_to = "cold" }}
"""


def _setup(tmp_path: Path, invoke: Invoke) -> tuple[Path, list[bytes]]:
    config = tmp_path / "dv.toml"
    config.write_text(CONFIG.format(root=tmp_path))
    src = tmp_path / "src"
    src.mkdir()
    objs = [make_ct(study="1.2.3.1", series="1.2.3.1.1", seed=i, StudyDate="20200101") for i in range(3)]
    objs += [make_ct(study="1.2.3.2", series="1.2.3.2.1", seed=9, StudyDate="21000101")]
    for i, data in enumerate(objs):
        (src / f"{i}.dcm").write_bytes(data)
    result = invoke("import", str(src), "--config", str(config))
    assert result.exit_code == 0, result.output
    return config, objs


def test_cli_lifecycle_plan_run_and_tier_status(tmp_path: Path, invoke: Invoke) -> None:
    config, objs = _setup(tmp_path, invoke)
    plan = invoke("lifecycle", "plan", "--config", str(config), "--json")
    assert plan.exit_code == 0, plan.output
    [rule] = json.loads(plan.stdout)
    assert (rule["rule"], rule["action"], rule["studies"], rule["instances"]) == ("old CT to cold", "move to cold",
                                                                                 1, 3)
    assert rule["bytes"] == sum(len(d) for d in objs[:3])
    table = invoke("lifecycle", "plan", "--config", str(config))
    assert "old CT to cold" in table.output and "move to cold" in table.output

    run = invoke("lifecycle", "run", "--config", str(config))
    assert run.exit_code == 0, run.output
    assert "1 studies selected" in run.output and "1 tier jobs run" in run.output
    assert json.loads(invoke("lifecycle", "plan", "--config", str(config), "--json").stdout)[0]["studies"] == 0

    status = invoke("tier", "status", "--config", str(config), "--json")
    assert status.exit_code == 0, status.output
    doc = json.loads(status.stdout)
    stores = {s["store"]: s for s in doc["stores"]}
    assert stores["cold"]["copies"] == 3 and stores["cold"]["studies"] == 1
    assert stores["hot"]["copies"] == 1 and stores["cold"]["by_modality"]["CT"]["copies"] == 3
    assert doc["jobs"] == {"queued": 0, "running": 0, "failed": 0}
    readable = invoke("tier", "status", "--config", str(config))
    assert "cold" in readable.output and "tier jobs: 0 queued" in readable.output


def test_cli_verify_report_file_and_repair_from_another_store(tmp_path: Path, invoke: Invoke) -> None:
    config, _ = _setup(tmp_path, invoke)
    config.write_text(config.read_text().replace('move_to = "cold"', 'copy_to = "cold"'))
    assert invoke("lifecycle", "run", "--config", str(config)).exit_code == 0
    replicated = {p.name for p in (tmp_path / "cold").rglob("*") if p.is_file() and len(p.name) == 64}
    victim = next(p for p in (tmp_path / "hot").rglob("*") if p.is_file() and p.name in replicated)
    victim.chmod(0o644)
    victim.write_bytes(b"X" + victim.read_bytes()[1:])
    report_path = tmp_path / "fixity.json"
    first = invoke("verify", "--config", str(config), "--grace", "0", "--report", str(report_path))
    assert first.exit_code == 1
    doc = json.loads(report_path.read_text())
    assert [(c["key"], c["store"]) for c in doc["corrupt"]] == [(victim.name, "hot")]
    assert doc["data_loss"] == [] and doc["checked_by_store"] == {"hot": 4, "cold": 3}
    assert "NOT clean" in Path(str(report_path) + ".txt").read_text()
    repaired = invoke("verify", "--config", str(config), "--grace", "0", "--repair", "--report", str(report_path))
    assert repaired.exit_code == 0, repaired.output
    assert json.loads(report_path.read_text())["repair"]["copies_repaired"] == 1
    assert invoke("verify", "--config", str(config), "--grace", "0").exit_code == 0
