"""PS3.4 C.2.2.2 matching-key parsing shared by C-FIND and QIDO-RS."""

from __future__ import annotations

import pytest

from dicomvault.domain.errors import InvalidQuery, QueryTooComplex
from dicomvault.domain.query import (
    MatchKind,
    QueryLimits,
    check_key,
    fold_pn,
    normalise_time,
    parse_condition,
    wildcard_to_like,
)
from dicomvault.domain.tags import BY_KEYWORD, resolve_keyword


def cond(keyword: str, value: str, fuzzy: bool = False):  # type: ignore[no-untyped-def]
    return parse_condition(BY_KEYWORD[keyword], value, fuzzy=fuzzy)


def test_universal_matching_is_no_condition() -> None:
    assert cond("PatientID", "") is None
    assert cond("PatientID", "*") is None


def test_single_value_and_wildcards() -> None:
    c = cond("PatientID", "ABC")
    assert c is not None and c.kind == MatchKind.SINGLE and c.value == "ABC"
    c = cond("AccessionNumber", "A?C*")
    assert c is not None and c.kind == MatchKind.WILDCARD


def test_person_names_fold_case_and_accents() -> None:
    c = cond("PatientName", "müller^jo*")
    assert c is not None and c.kind == MatchKind.WILDCARD and c.value == "MULLER^JO*"
    assert fold_pn("Ångström^Érik") == "ANGSTROM^ERIK"


def test_uid_list_and_invalid_uid() -> None:
    c = cond("StudyInstanceUID", "1.2.3\\1.2.4")
    assert c is not None and c.kind == MatchKind.UID_LIST and c.values == ("1.2.3", "1.2.4")
    with pytest.raises(InvalidQuery):
        cond("StudyInstanceUID", "1.2.abc")


@pytest.mark.parametrize(
    ("value", "low", "high"),
    [("20200101-20201231", "20200101", "20201231"), ("-20201231", None, "20201231"), ("20200101-", "20200101", None)],
)
def test_date_ranges(value: str, low: str | None, high: str | None) -> None:
    c = cond("StudyDate", value)
    assert c is not None and c.kind == MatchKind.RANGE and (c.low, c.high) == (low, high)


def test_bad_dates_are_rejected_with_reason() -> None:
    with pytest.raises(InvalidQuery, match="invalid date"):
        cond("StudyDate", "2020-13")
    with pytest.raises(InvalidQuery):
        cond("StudyDate", "yesterday")


def test_time_ranges_are_padded() -> None:
    c = cond("StudyTime", "10-11")
    assert c is not None and c.low == "100000.000000" and c.high == "115959.999999"
    assert normalise_time("101530.5") == "101530.500000"


def test_like_escaping() -> None:
    assert wildcard_to_like("A%_*?") == "A\\%\\_%_"


def test_resolve_keyword_accepts_tags_and_keywords() -> None:
    assert resolve_keyword("00100010") == (0x00100010, "PatientName")
    assert resolve_keyword("0010,0020") == (0x00100020, "PatientID")
    assert resolve_keyword("StudyDate")[1] == "StudyDate"
    with pytest.raises(KeyError):
        resolve_keyword("NotAKeyword")


def test_key_limits_name_the_key() -> None:
    limits = QueryLimits(max_pattern_length=8, max_wildcards=3)
    assert check_key("PatientName", "DOE*", limits) == 1
    assert check_key("StudyInstanceUID", "1.2.3\\1.2.4", limits) == 2
    assert check_key("PatientID", "A-VERY-LONG-PATIENT-ID", limits) == 1  # no wildcard: not a pattern
    with pytest.raises(QueryTooComplex, match="PatientName: pattern longer than 8"):
        check_key("PatientName", "DOE^JOHNNY*", limits)
    with pytest.raises(QueryTooComplex, match="InstitutionName: more than 3 wildcards"):
        check_key("InstitutionName", "*A*B\\*C*", limits)  # counted over every value of the key
    assert isinstance(QueryTooComplex("x"), InvalidQuery)  # a 400 on QIDO-RS like any bad query
