"""The lifecycle selection of the index (``studies_needing``, ``study_facts``) on SQLite and PostgreSQL: condition
by condition, copy and move targets, kept replicas, agreement with the domain matcher, paging."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from pydicom.uid import MRImageStorage, generate_uid
from sqlalchemy import select

from dicomvault.adapters.index.tables import studies
from dicomvault.bootstrap import Archive
from dicomvault.domain.records import DuplicatePolicy
from dicomvault.domain.tiers import CopyTarget, StudyCondition, matches
from tests.adapters.index.tiers_support import (
    ARCHIVE,
    COPY,
    EVERY_STUDY,
    MOVE,
    _add,
    _archive,
    _drop,
    _index,
    _ingest,
)

# -- studies_needing -------------------------------------------------------------------------------------------

@pytest.fixture
def varied(arc: Archive) -> tuple[Archive, dict[str, str]]:
    """Five studies: dates, modalities, sources, a SOP class and sizes to tell them apart; "n" has no StudyDate."""
    uids = {name: str(generate_uid()) for name in "abcden"}
    _ingest(arc, study=uids["a"], StudyDate="20200101", Modality="CT", source="dimse:CT_SCANNER", seed=1)
    _ingest(arc, study=uids["b"], StudyDate="20240102", Modality="MR", source="stow:gateway", seed=2,
            SOPClassUID=MRImageStorage)
    series_c = generate_uid()
    _ingest(arc, study=uids["c"], StudyDate="20231231", Modality="SR", source="stow", seed=3)
    _ingest(arc, study=uids["c"], series=series_c, StudyDate="20231231", Modality="CT", source="stow", seed=4)
    _ingest(arc, study=uids["c"], series=series_c, StudyDate="20231231", Modality="CT", source="stow", seed=5)
    _ingest(arc, study=uids["d"], StudyDate="20240109", Modality="CTX", source="cli-import", seed=6, rows=32)
    _ingest(arc, study=uids["e"], StudyDate="20231201", Modality="US", source="dimse:OTHER", seed=7, columns=32)
    _ingest(arc, study=uids["n"], StudyDate="", Modality="CT", source="stow", seed=8)
    return arc, uids


def _needing(a: Archive, uids: dict[str, str], condition: StudyCondition, target: CopyTarget = COPY,
             now: datetime = datetime(2024, 1, 10, 12, tzinfo=UTC)) -> str:
    names = {uid: name for name, uid in uids.items()}
    found = a.index.studies_needing(condition, target, now=now)
    assert [c.study_uid for c in found] == sorted(c.study_uid for c in found), "in Study Instance UID order"
    return "".join(sorted(names[c.study_uid] for c in found))


@pytest.mark.parametrize(("condition", "expected"), [
    (EVERY_STUDY, "abcden"),
    (StudyCondition(study_age_days=0), "abcde"),  # before 20240110; never "n" (no StudyDate)
    (StudyCondition(study_age_days=1), "abce"),  # before 20240109
    (StudyCondition(study_age_days=7), "abce"),  # before 20240103
    (StudyCondition(study_age_days=8), "ace"),  # before 20240102
    (StudyCondition(study_age_days=9), "ace"),  # before 20240101
    (StudyCondition(study_age_days=10000), ""),
    (StudyCondition(modalities=("CT",)), "acn"),  # "CTX" is another modality
    (StudyCondition(modalities=("SR", "US")), "ce"),
    (StudyCondition(modalities=("C",)), ""),
    (StudyCondition(sources=("CT_SCANNER",)), "a"),  # a calling AE title: stored as dimse:<AE>
    (StudyCondition(sources=("dimse:OTHER", "cli-import")), "de"),
    (StudyCondition(sources=("stow",)), "bcn"),  # every STOW-RS client ("stow:<client>"), and "stow" as before
    (StudyCondition(sources=("gateway",)), "b"),  # a STOW-RS client by its token name / OIDC subject
    (StudyCondition(sources=("stow:gateway",)), "b"),
    (StudyCondition(sources=("dimse",)), "ae"),  # every DIMSE sender
    (StudyCondition(sources=("dimse_",)), ""),  # a prefix is a protocol name, not a pattern
    (StudyCondition(sop_classes=(MRImageStorage,)), "b"),
    (StudyCondition(modalities=("CT",), sources=("stow",)), "cn"),  # every condition must hold
])
def test_studies_needing_per_condition(
    varied: tuple[Archive, dict[str, str]], condition: StudyCondition, expected: str
) -> None:
    a, uids = varied
    assert _needing(a, uids, condition) == expected


def test_studies_needing_by_size(varied: tuple[Archive, dict[str, str]]) -> None:
    a, uids = varied
    with _index(a).engine.connect() as conn:
        by_uid = dict(conn.execute(select(studies.c.study_uid, studies.c.size_bytes)).all())
    sizes = {name: by_uid[uid] for name, uid in uids.items()}
    small = max(sizes[n] for n in "abn")  # one 16 × 16 instance each (UIDs vary the length a little)
    large = min(sizes[n] for n in "cde")  # three instances, or four times the pixels
    assert large > small
    assert _needing(a, uids, StudyCondition(max_bytes=small)) == "abn"
    assert _needing(a, uids, StudyCondition(min_bytes=large)) == "cde"
    assert _needing(a, uids, StudyCondition(min_bytes=small + 1, max_bytes=large - 1)) == ""
    exact = "".join(sorted(n for n in sizes if sizes[n] == sizes["d"]))
    assert _needing(a, uids, StudyCondition(min_bytes=sizes["d"], max_bytes=sizes["d"])) == exact
    [c] = [s for s in a.index.studies_needing(StudyCondition(min_bytes=large), COPY, now=datetime.now(UTC))
           if s.study_uid == uids["c"]]
    assert (c.instances, c.bytes) == (3, sizes["c"])


def test_studies_needing_by_last_read(varied: tuple[Archive, dict[str, str]]) -> None:
    """Never read: counted from the last store (updated_at, about now); read: from the read."""
    a, uids = varied
    now = datetime.now(UTC)
    assert _needing(a, uids, StudyCondition(not_read_days=5), now=now) == ""
    later = now + timedelta(days=10)
    assert _needing(a, uids, StudyCondition(not_read_days=5), now=later) == "abcden"
    a.index.note_study_reads([uids["a"], uids["c"]], now + timedelta(days=8))
    assert _needing(a, uids, StudyCondition(not_read_days=5), now=later) == "bden"
    assert _needing(a, uids, StudyCondition(not_read_days=1), now=later) == "abcden"
    assert _needing(a, uids, StudyCondition(not_read_days=11), now=later) == ""


def test_studies_needing_copy_and_move_targets(tmp_path: Path, any_index_url: str) -> None:
    """A study needs work while one of its blobs (prior versions included) lacks the target's copy or, for a
    move, still has one elsewhere."""
    a = _archive(tmp_path, any_index_url, DuplicatePolicy.KEEP_BOTH)
    try:
        index = a.index
        study, other = str(generate_uid()), str(generate_uid())
        sop = generate_uid()
        _ingest(a, study=study, sop=sop, seed=1)
        _ingest(a, study=study, sop=sop, seed=2)  # the first bytes become a prior version
        _ingest(a, study=study, seed=3)
        _ingest(a, study=other, seed=4)
        at = datetime.now(UTC)
        names = {study: "s", other: "o"}

        def needing(target: CopyTarget) -> str:
            return "".join(sorted(names[c.study_uid] for c in index.studies_needing(EVERY_STUDY, target, now=at)))

        blobs = index.study_blobs(study)
        assert len(blobs) == 3 and all(b.stores == ("default",) for b in blobs)
        assert needing(CopyTarget(("default",), exclusive=False)) == ""
        assert needing(CopyTarget(("default",), exclusive=True)) == ""
        assert needing(COPY) == needing(MOVE) == "os"
        current = [b for b in blobs if b.blob.key != blobs[-1].blob.key]
        for b in current:
            assert _add(index, b.blob.key, ARCHIVE, verified_at=at)
        assert needing(COPY) == "os", "the prior version has no copy on the archive yet"
        assert _add(index, blobs[-1].blob.key, ARCHIVE, verified_at=at)
        assert needing(COPY) == "o"
        assert needing(MOVE) == "os", "copies on default remain"
        assert needing(CopyTarget(("default", ARCHIVE), exclusive=True)) == "o"
        for b in blobs:
            assert _drop(index, b.blob.key, "default")
        assert needing(MOVE) == "o"
        assert needing(CopyTarget(("default",), exclusive=False)) == "s", "back to default: the study needs it"
        assert needing(CopyTarget((), exclusive=True)) == "os", "no store wanted: every copy is extra"
    finally:
        a.close()


def test_a_move_leaves_kept_replicas_alone(arc: Archive) -> None:
    index = arc.index
    r = _ingest(arc, seed=30)
    assert _add(index, r.blob.key, ARCHIVE) and _add(index, r.blob.key, "replica")
    assert _drop(index, r.blob.key, "default")
    uids = {c.study_uid for c in index.studies_needing(EVERY_STUDY, MOVE, now=datetime.now(UTC))}
    assert uids == {r.study_uid}, "a copy on replica is one too many for a plain move"
    kept = CopyTarget((ARCHIVE,), exclusive=True, keep=("replica",))
    assert index.studies_needing(EVERY_STUDY, kept, now=datetime.now(UTC)) == []


@pytest.mark.parametrize("condition", [
    StudyCondition(study_age_days=0), StudyCondition(study_age_days=8), StudyCondition(not_read_days=0),
    StudyCondition(modalities=("CT",)), StudyCondition(modalities=("SR", "US")),
    StudyCondition(sources=("CT_SCANNER",)), StudyCondition(sources=("dimse:OTHER", "cli-import")),
    StudyCondition(sources=("stow",)), StudyCondition(sop_classes=(MRImageStorage,)),
    StudyCondition(min_bytes=5000), StudyCondition(max_bytes=5000), StudyCondition(min_bytes=0),
])
def test_studies_needing_selects_what_the_domain_matcher_accepts(
    varied: tuple[Archive, dict[str, str]], condition: StudyCondition
) -> None:
    """``domain.tiers.matches`` on ``study_facts`` (what a tier job checks before it acts) agrees with the SQL
    selection, malformed StudyDates included."""
    a, uids = varied
    index = _index(a)
    extra = _ingest(a, StudyDate="20200101", seed=40).study_uid
    with index.engine.begin() as conn:
        conn.execute(studies.update().where(studies.c.study_uid == extra).values(study_date="2020-1-1"))
    now = datetime(2024, 1, 10, 12, tzinfo=UTC) if condition.not_read_days is None else \
        datetime.now(UTC) + timedelta(days=1)
    selected = {c.study_uid for c in index.studies_needing(condition, COPY, now=now)}
    facts = {uid: index.study_facts(uid) for uid in [*uids.values(), extra]}
    assert all(f is not None for f in facts.values())
    assert selected == {uid for uid, f in facts.items() if f is not None and matches(condition, f, now)}
    assert index.study_facts(generate_uid()) is None


def test_study_facts(varied: tuple[Archive, dict[str, str]]) -> None:
    a, uids = varied
    at = datetime(2030, 1, 2, tzinfo=UTC)
    a.index.note_study_reads([uids["c"]], at)
    facts = a.index.study_facts(uids["c"])
    assert facts is not None
    assert (facts.study_uid, facts.study_date, facts.last_activity) == (uids["c"], "20231231", at)
    assert facts.modalities == {"CT", "SR"} and facts.sources == {"stow"}
    assert facts.sop_classes == {"1.2.840.10008.5.1.4.1.1.2"}
    a_facts = a.index.study_facts(uids["a"])
    assert a_facts is not None and a_facts.sources == {"dimse:CT_SCANNER", "CT_SCANNER", "dimse"}
    assert a_facts.last_activity is not None and a_facts.last_activity < at
    n_facts = a.index.study_facts(uids["n"])
    assert n_facts is not None and not n_facts.study_date


def test_studies_needing_pages_by_study_uid(arc: Archive) -> None:
    uids = sorted(_ingest(arc, seed=n).study_uid for n in range(7))
    now = datetime.now(UTC)
    seen: list[str] = []
    after = ""
    while True:
        page = arc.index.studies_needing(EVERY_STUDY, COPY, now=now, after=after, limit=3)
        assert len(page) <= 3
        if not page:
            break
        seen += [c.study_uid for c in page]
        after = page[-1].study_uid
    assert seen == uids
    assert arc.index.studies_needing(EVERY_STUDY, COPY, now=now, after=uids[4]) == \
        arc.index.studies_needing(EVERY_STUDY, COPY, now=now)[5:]
