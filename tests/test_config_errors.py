"""A bad configuration is refused at start-up with the line at fault (issue #11): config_errors and the CLI."""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import pytest
from typer.testing import CliRunner

from dicomvault.cli import common
from dicomvault.cli.main import app
from dicomvault.config_errors import ConfigurationError, key_lines, load_settings
from tests.cli.cli_helpers import run_dv

ROOT = Path(__file__).resolve().parent.parent

STORES = """\
# two stores and a rule
ingest_store = "hot"

[stores.hot]
url = "file:///fast-disk/blobs"

[stores.cold]
url = "s3://archive/dv?region=eu-west-1"
"""  # 8 lines

RULE_1 = """
[[lifecycle]]
name = "CT to the cloud"
when = { study_age_days = 30, modality = "CT" }
action = { move_to = "cold" }
"""  # lines 9-13 after STORES


@pytest.fixture(autouse=True)
def _no_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.upper().startswith("DICOMVAULT_"):
            monkeypatch.delenv(name)


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "config.toml"
    path.write_text(text)
    return path


def problems(tmp_path: Path, text: str, **overrides: object) -> list[str]:
    path = write(tmp_path, text)
    with pytest.raises(ConfigurationError) as exc:
        load_settings(path, data_dir=tmp_path / "data", **overrides)
    return exc.value.problems


def only(tmp_path: Path, text: str, **overrides: object) -> str:
    found = problems(tmp_path, text, **overrides)
    assert len(found) == 1, found
    return found[0]


def test_good_configuration_loads(tmp_path: Path) -> None:
    settings = load_settings(write(tmp_path, STORES + RULE_1), data_dir=tmp_path)
    assert settings.lifecycle[0].name == "CT to the cloud"


def test_unknown_key_inside_when(tmp_path: Path) -> None:
    text = STORES + RULE_1.replace('modality = "CT"', 'modality = "CT", modalty = "MR"')
    message = only(tmp_path, text)
    assert message.startswith(
        f"{tmp_path / 'config.toml'} line 12: [[lifecycle]] rule 1 ('CT to the cloud'), when.modalty: "
        "unknown key 'modalty' (allowed: study_age_days, not_read_days, modality")


def test_unknown_key_in_a_when_sub_table(tmp_path: Path) -> None:
    text = STORES + '[[lifecycle]]\nname = "a"\naction.move_to = "cold"\n[lifecycle.when]\nstudy_age_days = 3\n' \
        'colour = "red"\n'
    assert "config.toml line 14: [[lifecycle]] rule 1 ('a'), when.colour: unknown key 'colour'" in only(tmp_path, text)


def test_wrong_type(tmp_path: Path) -> None:
    text = STORES + RULE_1 + RULE_1.replace("CT to the cloud", "MR too").replace('"CT"', "5")
    assert "config.toml line 17: [[lifecycle]] rule 2 ('MR too'), when.modality: expected str or list[str], got 5" \
        in only(tmp_path, text)
    text = STORES.replace('ingest_store = "hot"', "tier_max_concurrent_jobs = \"many\"")
    assert "config.toml line 2: tier_max_concurrent_jobs: input should be a valid integer" in only(tmp_path, text)


def test_unknown_store_in_move_to(tmp_path: Path) -> None:
    text = STORES + RULE_1 + RULE_1.replace("CT to the cloud", "MR to tape").replace('"cold"', '"tape"')
    assert only(tmp_path, text) == (
        f"{tmp_path / 'config.toml'} line 18: [[lifecycle]] rule 2 ('MR to tape'), action.move_to: "
        "unknown store 'tape' (declared: default, hot, cold)")


def test_copy_to_list_with_one_unknown_store(tmp_path: Path) -> None:
    text = STORES + RULE_1.replace('move_to = "cold"', 'copy_to = [\n  "cold",\n  "tape",\n]')
    assert "config.toml line 13: [[lifecycle]] rule 1 ('CT to the cloud'), action.copy_to item 2: " \
        "unknown store 'tape'" in only(tmp_path, text)


def test_unknown_ingest_store(tmp_path: Path) -> None:
    text = STORES.replace('"hot"', '"warm"', 1)
    assert "config.toml line 2: ingest_store: ingest_store 'warm' is not a declared store (declared: default, hot, " \
        "cold)" in only(tmp_path, text)


def test_min_above_max_bytes(tmp_path: Path) -> None:
    text = STORES + RULE_1.replace("modality = \"CT\"", "min_study_bytes = 100, max_study_bytes = 10")
    assert "config.toml line 12: [[lifecycle]] rule 1 ('CT to the cloud'), when: min_study_bytes is larger than " \
        "max_study_bytes: the rule can never apply" in only(tmp_path, text)


def test_rule_with_no_condition(tmp_path: Path) -> None:
    text = STORES + RULE_1.replace('{ study_age_days = 30, modality = "CT" }', "{}")
    assert "config.toml line 12: [[lifecycle]] rule 1 ('CT to the cloud'), when: a rule needs at least one " \
        "condition" in only(tmp_path, text)
    missing = STORES + '[[lifecycle]]\nname = "no when"\naction = { move_to = "cold" }\n'
    assert "config.toml line 9: [[lifecycle]] rule 1 ('no when'), when: required key missing" \
        in only(tmp_path, missing)


def test_unknown_or_unavailable_codec(tmp_path: Path) -> None:
    text = STORES + RULE_1.replace('move_to = "cold"', 'compress = "webp"')
    assert "config.toml line 13: [[lifecycle]] rule 1 ('CT to the cloud'), action: unknown codec 'webp': one of " \
        "jpeg-ls, jpeg2000" in only(tmp_path, text)
    text = STORES + RULE_1.replace('move_to = "cold"', 'compress = "htj2k"')
    assert "no HTJ2K encoder on this installation" in only(tmp_path, text)
    text = 'compress_on_ingest = "jpeg-xl"\n' + STORES
    assert "config.toml line 1: compress_on_ingest: unknown codec 'jpeg-xl'" in only(tmp_path, text)


def test_bad_store_url(tmp_path: Path) -> None:
    text = STORES.replace("s3://archive", "ftp://archive")
    assert only(tmp_path, text) == (
        f"{tmp_path / 'config.toml'} line 8: [stores.cold] url: store URL 'ftp://archive/dv?region=eu-west-1' "
        "must start with file://, s3:// or memory://")
    missing = STORES + "[stores.tape]\nread_priority = 30\n"
    assert "config.toml line 9: [stores.tape] url: required key missing" in only(tmp_path, missing)


def test_bad_store_name(tmp_path: Path) -> None:
    text = STORES + '[stores."cold archive"]\nurl = "memory://"\n'
    assert "config.toml line 9: [stores.\"cold archive\"]: store name 'cold archive': use 1-32 letters" \
        in only(tmp_path, text)


def test_duplicate_rule_name(tmp_path: Path) -> None:
    text = STORES + RULE_1 + RULE_1.replace('"CT"', '"MR"')
    assert "config.toml line 16: [[lifecycle]] rule 2 ('CT to the cloud'), name: another rule (rule 1) has the " \
        "same name" in only(tmp_path, text)


def test_several_faults_each_with_its_line(tmp_path: Path) -> None:
    text = STORES.replace("s3://", "gs://") + RULE_1.replace("30", "-1") + "[[lifecycle]]\nname = \"x\"\n"
    found = problems(tmp_path, text)
    assert [m.split(": ", 1)[0].rsplit(" ", 2)[-2:] for m in found] == [
        ["line", "8"], ["line", "12"], ["line", "14"], ["line", "14"]]


def test_invalid_toml_names_the_line(tmp_path: Path) -> None:
    assert "config.toml line 4: not valid TOML: " in only(tmp_path, STORES.replace("[stores.hot]", "[stores.hot"))


def test_environment_and_flags_claim_no_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DICOMVAULT_INGEST_STORE", "warm")
    message = only(tmp_path, STORES)
    assert message.startswith("(environment variable DICOMVAULT_INGEST_STORE) ingest_store: ingest_store 'warm'")
    assert "line" not in message and "config.toml" not in message
    monkeypatch.delenv("DICOMVAULT_INGEST_STORE")
    monkeypatch.setenv("DICOMVAULT_STORES__COLD__URL", "ftp://x")
    message = only(tmp_path, STORES)
    assert message.startswith("(environment variable DICOMVAULT_STORES__COLD__URL) [stores.cold] url: store URL")
    monkeypatch.delenv("DICOMVAULT_STORES__COLD__URL")
    message = only(tmp_path, STORES, aet="AN-AE-TITLE-FAR-TOO-LONG")
    assert message == "(command line) aet: AE title must be 1-16 characters without backslash"


def test_key_lines() -> None:
    text = """\
title = "x"  # [not.a.table]
a.b = 1
"quoted key".c = { d = 1, e = { f = [1, {g = 2}], h = "}" } }
multi = [
  "[x]",
  { y = 1 },
]
text = \"\"\"
[not_a_table]
k = 1
\"\"\"
[[rules]]
name = "one"
[rules.when]
age = 1
[[rules]]
[ rules . when ]
age = 2
[t.'lit.eral']
k = 'v'
"""
    lines = key_lines(text)
    assert lines[("title",)] == 1 and lines[("a", "b")] == 2 and lines[("quoted key", "c", "e", "h")] == 3
    assert lines[("quoted key", "c", "e", "f")] == 3 and ("quoted key", "c", "e", "f", "g") not in lines
    assert lines[("multi",)] == 4 and ("y",) not in lines and ("not_a_table",) not in lines and ("k",) not in lines
    assert lines[("rules",)] == lines[("rules", 0)] == 12 and lines[("rules", 0, "when", "age")] == 15
    assert lines[("rules", 1)] == 16 and lines[("rules", 1, "when")] == 17 and lines[("rules", 1, "when", "age")] == 18
    assert lines[("t", "lit.eral", "k")] == 20


# -- through the command line ---------------------------------------------------------------------------------------

def test_cli_refuses_with_the_line(tmp_path: Path) -> None:
    config = write(tmp_path, STORES + RULE_1.replace('"cold"', '"tape"'))
    common.err.width = 200
    result = CliRunner().invoke(app, ["stats", "--config", str(config), "--data-dir", str(tmp_path / "d")],
                                env={"COLUMNS": "200"})
    assert result.exit_code == 2
    assert result.stderr.strip() == (
        f"configuration error: {config} line 13: [[lifecycle]] rule 1 ('CT to the cloud'), action.move_to: "
        "unknown store 'tape' (declared: default, hot, cold)")
    assert not (tmp_path / "d").exists()


@pytest.mark.parametrize("command", [["storage", "info"], ["jobs", "list"], ["token", "list"]])
def test_every_cli_settings_load_refuses_the_same_way(tmp_path: Path, command: list[str]) -> None:
    config = write(tmp_path, STORES.replace('"hot"', '"warm"', 1))
    result = CliRunner().invoke(app, [*command, "--config", str(config), "--data-dir", str(tmp_path / "d")])
    assert result.exit_code == 2, result.output
    assert "config.toml line 2: ingest_store: ingest_store 'warm'" in result.stderr


def test_cli_process_exits_2_in_red_without_traceback(tmp_path: Path) -> None:
    config = write(tmp_path, STORES.replace("s3://", "ftp://"))
    proc = run_dv("stats", "--config", str(config), "--data-dir", str(tmp_path / "d"))
    assert proc.returncode == 2
    assert "config.toml line 8: [stores.cold] url: store URL 'ftp://archive" in proc.stderr
    assert "Traceback" not in proc.stderr and proc.stdout == ""


def test_readme_settings_table_is_the_generated_one() -> None:
    spec = importlib.util.spec_from_file_location("settings_table", ROOT / "scripts" / "settings_table.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert module.table() in (ROOT / "README.md").read_text(), "run scripts/settings_table.py --write"


def test_misspelt_top_level_key(tmp_path: Path) -> None:
    message = only(tmp_path, 'log_level = "INFO"\n\ningest_stor = "hot"\n' + STORES)
    assert message == (f"{tmp_path / 'config.toml'} line 3: 'ingest_stor' is not a setting (misspelt? see the "
                       "settings table in README.md)")
