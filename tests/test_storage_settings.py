"""Storage tier settings (issue #11): named stores, lifecycle rules and the checks that refuse a bad configuration."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from pydantic import ValidationError

from dicomvault.domain.tiers import CopyTarget
from dicomvault.settings import LOCATED_ERROR, Settings
from dicomvault.storage_settings import LifecycleRule, RuleAction, RuleWhen, StoreConfig

ISSUE_EXAMPLE = """\
ingest_store = "hot"
[stores.hot]
url = "file:///fast-disk/blobs"
[stores.cold]
url = "s3://archive/dv?endpoint=http://127.0.0.1:9000&region=eu-west-1&storage_class=GLACIER_IR"
[stores.offsite]
url = "s3://offsite/dv?region=eu-central-1"
[[lifecycle]]
name = "CT to the cloud after 30 days"
when = { study_age_days = 30, modality = "CT" }
action = { move_to = "cold" }
[[lifecycle]]
name = "Second copy off site"
when = { study_age_days = 0 }
action = { copy_to = ["offsite", "cold", "offsite"] }
"""


@pytest.fixture(autouse=True)
def _no_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.upper().startswith("DICOMVAULT_"):
            monkeypatch.delenv(name)


def _errors(exc: pytest.ExceptionInfo[ValidationError]) -> list[str]:
    return [str(e["msg"]) for e in exc.value.errors()]


def load(tmp_path: Path, text: str) -> Settings:
    path = tmp_path / "config.toml"
    path.write_text(text)
    return Settings.load(path, data_dir=tmp_path / "data")


# -- StoreConfig ---------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("url", ["file:///srv/blobs", "s3://bucket/prefix?region=x", "memory://"])
def test_store_urls_accepted(url: str) -> None:
    store = StoreConfig.model_validate({"url": url})
    assert store.url == url and store.read_priority is None and store.promote_on_read is False
    assert store.recall_days == 7 and store.recall_tier == "Standard"


@pytest.mark.parametrize("url", ["ftp://host/x", "/srv/blobs", "gs://bucket"])
def test_store_url_scheme_refused(url: str) -> None:
    with pytest.raises(ValidationError) as exc:
        StoreConfig.model_validate({"url": url})
    assert _errors(exc) == [f"Value error, store URL {url!r} must start with file://, s3:// or memory://"]


@pytest.mark.parametrize("values", [{"recall_days": 0}, {"recall_days": 366}, {"recall_tier": "Fast"},
                                    {"colour": "red"}])
def test_store_options_bounded_and_unknown_keys_refused(values: dict[str, object]) -> None:
    with pytest.raises(ValidationError):
        StoreConfig.model_validate({"url": "file:///x", **values})


# -- RuleWhen ------------------------------------------------------------------------------------------------------

def test_condition_normalised() -> None:
    when = RuleWhen.model_validate({"study_age_days": 30, "modality": ["ct", " MR "], "source": "CT1",
                                    "sop_class": "1.2.840.10008.5.1.4.1.1.2", "min_study_bytes": 1,
                                    "max_study_bytes": 1})
    cond = when.condition()
    assert cond.study_age_days == 30 and cond.not_read_days is None
    assert cond.modalities == ("CT", "MR") and cond.sources == ("CT1",)
    assert cond.sop_classes == ("1.2.840.10008.5.1.4.1.1.2",) and (cond.min_bytes, cond.max_bytes) == (1, 1)


def test_rule_without_condition_refused() -> None:
    with pytest.raises(ValidationError) as exc:
        RuleWhen.model_validate({})
    assert _errors(exc) == [
        "Value error, a rule needs at least one condition (for every study say min_study_bytes = 0)"]


def test_impossible_size_window_refused() -> None:
    with pytest.raises(ValidationError) as exc:
        RuleWhen.model_validate({"min_study_bytes": 10, "max_study_bytes": 9})
    assert _errors(exc) == [
        "Value error, min_study_bytes is larger than max_study_bytes: the rule can never apply"]


@pytest.mark.parametrize("name", ["modality", "source", "sop_class"])
def test_empty_value_refused(name: str) -> None:
    with pytest.raises(ValidationError) as exc:
        RuleWhen.model_validate({name: ["CT", " "]} if name == "modality" else {name: ""})
    assert _errors(exc) == [f"Value error, {name} must not be empty"]


@pytest.mark.parametrize("values", [{"study_age_days": -1}, {"not_read_days": -1}, {"min_study_bytes": -1},
                                    {"modality": 5}, {"age": 3}])
def test_condition_values_checked(values: dict[str, object]) -> None:
    with pytest.raises(ValidationError):
        RuleWhen.model_validate(values)


# -- RuleAction and LifecycleRule -----------------------------------------------------------------------------------

def test_actions() -> None:
    move = RuleAction.model_validate({"move_to": "cold"})
    assert move.target() == CopyTarget(stores=("cold",), exclusive=True) and move.stores == ("cold",)
    copy = RuleAction.model_validate({"copy_to": ["a", "b", "a"]})
    assert copy.target() == CopyTarget(stores=("a", "b"), exclusive=False)
    assert RuleAction.model_validate({"copy_to": "a"}).stores == ("a",)
    delete = RuleAction.model_validate({"delete": True, "grace_days": 30})
    assert delete.delete and delete.grace_days == 30 and delete.stores == ()


@pytest.mark.parametrize(("values", "message"), [
    ({}, "an action needs exactly one of move_to, copy_to, delete or compress"),
    ({"move_to": "a", "copy_to": "b"}, "an action needs exactly one of move_to, copy_to, delete or compress"),
    ({"copy_to": []}, "copy_to names no store"),
    ({"delete": True, "move_to": "a"}, "an action needs exactly one of move_to, copy_to, delete or compress"),
    ({"delete": False}, "delete = false does nothing: leave it out, or disable the rule (enabled = false)"),
    ({"copy_to": "a", "grace_days": 3}, "grace_days belongs to a delete action"),
])
def test_bad_actions_refused(values: dict[str, object], message: str) -> None:
    with pytest.raises(ValidationError) as exc:
        RuleAction.model_validate(values)
    assert _errors(exc) == [f"Value error, {message}"]


def test_rule_needs_a_name_and_refuses_unknown_keys() -> None:
    good = {"name": "r", "when": {"study_age_days": 1}, "action": {"move_to": "x"}}
    rule = LifecycleRule.model_validate(good)
    assert rule.enabled is True and rule.when.condition().study_age_days == 1
    for bad in ({**good, "name": ""}, {**good, "schedule": "daily"}, {"name": "r", "when": {"study_age_days": 1}}):
        with pytest.raises(ValidationError):
            LifecycleRule.model_validate(bad)


# -- Settings: the whole configuration ---------------------------------------------------------------------------

def test_issue_example_loads(tmp_path: Path) -> None:
    settings = load(tmp_path, ISSUE_EXAMPLE)
    assert settings.ingest_store == "hot"
    assert [r.name for r in settings.lifecycle] == ["CT to the cloud after 30 days", "Second copy off site"]
    first, second = settings.lifecycle
    assert first.when.condition().modalities == ("CT",) and first.action.target().exclusive
    assert second.action.target() == CopyTarget(stores=("offsite", "cold"), exclusive=False)
    stores = settings.resolved_stores()
    assert list(stores) == ["default", "hot", "cold", "offsite"]
    assert stores["default"].url == f"file://{(tmp_path / 'data' / 'blobs').resolve()}"
    assert settings.lifecycle_interval == 3600.0 and settings.tier_max_concurrent_jobs == 1


def test_single_store_archive_keeps_default(tmp_path: Path) -> None:
    settings = Settings.load(None, data_dir=tmp_path, storage_url="s3://bucket/p?region=x")
    assert settings.stores == {} and settings.ingest_store == "default" and settings.lifecycle == []
    assert {name: s.url for name, s in settings.resolved_stores().items()} == {"default": "s3://bucket/p?region=x"}


def test_declared_default_wins_and_rules_may_name_it(tmp_path: Path) -> None:
    settings = load(tmp_path, '[stores.default]\nurl = "memory://"\n[stores.cold]\nurl = "memory://"\n'
                              '[[lifecycle]]\nname = "back"\nwhen = { not_read_days = 0 }\n'
                              'action = { copy_to = "default" }\n')
    assert {n: s.url for n, s in settings.resolved_stores().items()} == {"default": "memory://", "cold": "memory://"}
    assert load(tmp_path, '[[lifecycle]]\nname = "x"\nwhen = { study_age_days = 1 }\n'
                          'action = { move_to = "default" }\n').lifecycle[0].action.stores == ("default",)


def _settings_error(**values: object) -> dict[str, object]:
    with pytest.raises(ValidationError) as exc:
        Settings(**values)  # type: ignore[arg-type]
    (error,) = exc.value.errors()
    return dict(error)


RULE = {"name": "r", "when": {"study_age_days": 1}, "action": {"move_to": "cold"}}
COLD = {"cold": {"url": "memory://"}}


def test_unknown_ingest_store(tmp_path: Path) -> None:
    error = _settings_error(data_dir=tmp_path, stores=COLD, ingest_store="hot")
    assert error["loc"] == ("ingest_store",)
    assert error["msg"] == "Value error, ingest_store 'hot' is not a declared store (declared: default, cold)"


def test_unknown_store_in_move_to(tmp_path: Path) -> None:
    error = _settings_error(data_dir=tmp_path, lifecycle=[RULE])
    assert error["type"] == LOCATED_ERROR and error["loc"] == ("lifecycle",)
    assert error["msg"] == "lifecycle rule 1 ('r'), action.move_to: unknown store 'cold' (declared: default)"
    ctx = error["ctx"]
    assert isinstance(ctx, dict) and ctx["dv_at"] == (0, "action", "move_to")
    assert ctx["dv_detail"] == "unknown store 'cold' (declared: default)"


def test_unknown_store_in_copy_to_list(tmp_path: Path) -> None:
    rule = {**RULE, "name": "r2", "action": {"copy_to": ["cold", "tape"]}}
    error = _settings_error(data_dir=tmp_path, stores=COLD, lifecycle=[RULE, rule])
    assert error["msg"] == "lifecycle rule 2 ('r2'), action.copy_to: unknown store 'tape' (declared: default, cold)"
    assert error["ctx"]["dv_at"] == (1, "action", "copy_to", 1)  # type: ignore[index]


def test_duplicate_rule_name(tmp_path: Path) -> None:
    error = _settings_error(data_dir=tmp_path, stores=COLD, lifecycle=[RULE, {**RULE, "when": {"modality": "CT"}}])
    assert error["msg"] == "lifecycle rule 2 ('r'): another rule (rule 1) has the same name"
    assert error["ctx"]["dv_at"] == (1, "name")  # type: ignore[index]


def test_bad_store_name(tmp_path: Path) -> None:
    error = _settings_error(data_dir=tmp_path, stores={"hot disk": {"url": "memory://"}})
    assert error["msg"] == "store name 'hot disk': use 1-32 letters, digits, '-' or '_'"
    assert error["ctx"]["dv_at"] == ("hot disk",)  # type: ignore[index]


def test_tier_throttles_bounded(tmp_path: Path) -> None:
    for values in ({"lifecycle_interval": -1}, {"tier_max_bytes_per_second": -1}, {"tier_max_concurrent_jobs": 0},
                   {"tier_max_concurrent_jobs": 65}):
        with pytest.raises(ValidationError):
            Settings(data_dir=tmp_path, **values)  # type: ignore[arg-type]


def test_settings_survive_the_json_round_trip_of_dimse_workers(tmp_path: Path) -> None:
    """DIMSE worker processes rebuild Settings from JSON: the field validators must pass again."""
    settings = load(tmp_path, ISSUE_EXAMPLE)
    again = Settings.model_validate_json(settings.model_dump_json())
    assert again.resolved_stores() == settings.resolved_stores() and again.lifecycle == settings.lifecycle
