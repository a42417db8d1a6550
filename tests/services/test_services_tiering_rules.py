"""How several lifecycle rules resolve into one placement per study (``TierService.placement``), and the domain
matcher the index's selection must agree with (``domain.tiers.matches``)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any, cast

from dicomvault.domain.tiers import StudyCondition, StudyFacts, matches
from dicomvault.ports.index import IndexRepository
from dicomvault.services.blob_copier import BlobCopier
from dicomvault.services.tiering import TierService
from dicomvault.storage_settings import LifecycleRule

NOW = datetime(2026, 12, 6, 12, tzinfo=UTC)


def _facts(**kw: Any) -> StudyFacts:
    base: dict[str, Any] = dict(study_uid="1.2.3", study_date="20260101", last_activity=NOW - timedelta(days=100),
                                modalities=frozenset({"CT"}), sources=frozenset({"CTSCANNER"}),
                                sop_classes=frozenset({"1.2.840.10008.5.1.4.1.1.2"}), bytes=10_000)
    base.update(kw)
    return StudyFacts(**base)


def _rules(*specs: tuple[str, dict[str, Any], dict[str, Any]]) -> list[LifecycleRule]:
    return [LifecycleRule(name=n, when=w, action=a) for n, w, a in specs]  # type: ignore[arg-type]


def _service(rules: list[LifecycleRule]) -> TierService:
    # placement() reads neither the index nor the stores
    return TierService(cast(IndexRepository, None), cast(BlobCopier, None), rules, ingest_store="hot")


def test_every_condition_of_the_matcher() -> None:
    f = _facts()
    assert matches(StudyCondition(study_age_days=30), f, NOW)
    assert not matches(StudyCondition(study_age_days=400), f, NOW)
    assert not matches(StudyCondition(study_age_days=0), _facts(study_date=""), NOW), "no StudyDate: never old"
    assert not matches(StudyCondition(study_age_days=0), _facts(study_date="2026-01"), NOW)
    assert matches(StudyCondition(not_read_days=30), f, NOW)
    assert not matches(StudyCondition(not_read_days=30), _facts(last_activity=NOW - timedelta(days=2)), NOW)
    assert matches(StudyCondition(modalities=("MR", "CT")), f, NOW)
    assert not matches(StudyCondition(modalities=("MR",)), f, NOW)
    assert matches(StudyCondition(sources=("CTSCANNER",)), f, NOW)
    assert not matches(StudyCondition(sources=("OTHER",)), f, NOW)
    assert matches(StudyCondition(sop_classes=("1.2.840.10008.5.1.4.1.1.2",)), f, NOW)
    assert not matches(StudyCondition(sop_classes=("1.2",)), f, NOW)
    assert matches(StudyCondition(min_bytes=10_000, max_bytes=10_000), f, NOW)
    assert not matches(StudyCondition(min_bytes=10_001), f, NOW)
    assert not matches(StudyCondition(max_bytes=9_999), f, NOW)
    assert not matches(StudyCondition(study_age_days=30, modalities=("MR",)), f, NOW), "all conditions must hold"


def test_the_last_matching_move_wins_and_moves_keep_replicas() -> None:
    tiers = _service(_rules(
        ("cold after 30 days", {"study_age_days": 30}, {"move_to": "cold"}),
        ("deep after 300 days", {"study_age_days": 300}, {"move_to": "deep"}),
        ("CT offsite", {"modality": "CT"}, {"copy_to": "offsite"}),
    ))
    young = tiers.placement(_facts(study_date="20261201"), NOW)
    assert young is not None and young.required == ("offsite",) and not young.exclusive
    middle = tiers.placement(_facts(study_date="20260601"), NOW)
    assert middle is not None and middle.required == ("cold", "offsite") and middle.exclusive
    old = tiers.placement(_facts(study_date="20200101"), NOW)
    assert old is not None and old.required == ("deep", "offsite")
    assert old.rules == ("cold after 30 days", "deep after 300 days", "CT offsite")
    assert tiers.target_of(tiers.rules[0]).keep == ("offsite",), "a move never drops a replica"
    assert tiers.placement(_facts(study_date="20261201", modalities=frozenset({"MR"})), NOW) is None


def test_placement_wants() -> None:
    tiers = _service(_rules(("cold", {"study_age_days": 0}, {"move_to": "cold"})))
    p = tiers.placement(_facts(), NOW)
    assert p is not None
    assert p.wants(("hot",)) and p.wants(("hot", "cold")) and not p.wants(("cold",))


def test_promotion_adds_the_ingest_store() -> None:
    tiers = _service(_rules(("cold", {"modality": "MR"}, {"move_to": "cold"})))
    p = tiers.placement(_facts(), NOW, promote=True)
    assert p is not None and p.required == ("hot",) and not p.exclusive
    assert tiers.placement(_facts(), NOW) is None


def test_disabled_rules_do_nothing() -> None:
    rules = _rules(("cold", {"study_age_days": 0}, {"move_to": "cold"}))
    rules[0].enabled = False
    assert _service(rules).placement(_facts(), NOW) is None
