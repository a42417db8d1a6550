"""Query vocabulary and the PS3.4 C.2.2.2 matching rules, shared by C-FIND and QIDO-RS.

Front ends turn their request (an Identifier dataset, a query string) into key/value pairs; ``parse_condition``
turns each pair into a typed ``Condition`` so that both protocols get exactly the same semantics.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass, field
from enum import Enum

from dicomvault.domain.errors import InvalidQuery, QueryTooComplex
from dicomvault.domain.tags import BY_KEYWORD, Attribute, Level

_UID_RE = re.compile(r"^[0-9]+(\.[0-9]+)*$")
_DATE_RE = re.compile(r"^\d{8}$")
_TIME_RE = re.compile(r"^\d{2}(\d{2}(\d{2}(\.\d{1,6})?)?)?$")


class MatchKind(str, Enum):
    SINGLE = "single"
    WILDCARD = "wildcard"
    RANGE = "range"
    UID_LIST = "uid_list"
    MULTI = "multi"  # several single values ("CT\\MR"), any may match


@dataclass(frozen=True)
class Condition:
    """One matching key. ``attribute`` is the indexed attribute; values are already normalised for the index."""

    attribute: Attribute
    kind: MatchKind
    value: str = ""
    values: tuple[str, ...] = ()
    low: str | None = None
    high: str | None = None
    fuzzy: bool = False
    #: a wildcard matched without regard to case (the study browser's "description contains"; DICOM matching,
    #: which C-FIND and QIDO-RS follow, is case-sensitive for these VRs)
    ignore_case: bool = False


@dataclass
class QuerySpec:
    """What to find: a level, matching conditions, which attributes to return, and a page.

    ``return_keys`` holds keywords; ``include_all`` asks for every attribute the archive has for the level.
    ``extra_filters`` are (keyword, value) pairs on attributes that are not indexed; they are matched on the
    cached DICOM JSON after the indexed conditions narrowed the set.
    """

    level: Level
    conditions: list[Condition] = field(default_factory=list)
    return_keys: list[str] = field(default_factory=list)
    include_all: bool = False
    limit: int | None = None
    offset: int = 0
    extra_filters: list[tuple[str, str]] = field(default_factory=list)
    #: keyset paging: only rows whose internal id is greater than this (deep pages without OFFSET scans); with
    #: ``descending`` and no ``order_by``, only rows whose id is smaller
    after_id: int | None = None
    #: sort by this indexed attribute of the level or a parent (then by id) instead of by id alone: a page of
    #: ``search_page`` only (not with ``extra_filters``, ``after_id`` or ``stream``, which walk in id order);
    #: the study browser sorts by StudyDate or PatientName, both indexed columns
    order_by: str | None = None
    #: newest (highest id, latest value) first
    descending: bool = False


@dataclass(frozen=True)
class QueryLimits:
    """Bounds on one query (settings ``query_*``; these defaults are the settings' defaults, reasons there).

    ``max_pattern_length`` and ``max_wildcards`` apply to each key whose value holds ``*`` or ``?`` (every value of
    a multi-valued key together); ``max_values`` to all values of the query together (UID lists, ``CT\\MR``);
    ``max_keys`` to the keys that carry a value (return keys are free); ``max_results`` is the largest page or
    stream of results; ``max_scanned`` the most candidate records one query examines for keys that are not
    indexed (matched on the cached metadata).
    """

    max_pattern_length: int = 64
    max_wildcards: int = 16
    max_values: int = 1000
    max_keys: int = 64
    max_results: int = 10_000
    max_scanned: int = 10_000


def check_key(keyword: str, raw: str, limits: QueryLimits) -> int:
    """Refuse a matching key beyond ``limits`` with ``QueryTooComplex`` naming it; returns its number of values.

    Checked before parsing, for indexed and non-indexed keys alike, so neither SQL LIKE nor the wildcard matcher
    ever sees an oversized pattern."""
    values = raw.split("\\")
    wildcards = sum(v.count("*") + v.count("?") for v in values)
    if wildcards:
        if wildcards > limits.max_wildcards:
            raise QueryTooComplex(f"{keyword}: more than {limits.max_wildcards} wildcards")
        if any(len(v) > limits.max_pattern_length for v in values if "*" in v or "?" in v):
            raise QueryTooComplex(f"{keyword}: pattern longer than {limits.max_pattern_length} characters")
    return len(values)


def fold_pn(value: str) -> str:
    """Case- and accent-insensitive form of a person name, used for PN matching and fuzzy matching."""
    decomposed = unicodedata.normalize("NFKD", value)
    stripped = "".join(c for c in decomposed if not unicodedata.combining(c))
    return stripped.upper().strip()


def normalise_time(value: str, *, high: bool = False) -> str:
    """TM → 'HHMMSS.FFFFFF' so that string comparison orders times; a range's upper bound is padded up.

    '11' as an upper bound means 'any time in hour 11', hence '115959.999999'.
    """
    value = value.strip().replace(":", "")
    if not value:
        return value
    main, _, frac = value.partition(".")
    main = main[:6]
    main += ("595959" if high else "000000")[len(main):]
    frac = (frac + ("9" if high else "0") * 6)[:6]
    return f"{main}.{frac}"


def _check_date(value: str) -> str:
    v = value.strip().replace(".", "")  # ACR-NEMA dates 'YYYY.MM.DD' are still sent by old modalities
    if not _DATE_RE.match(v):
        raise InvalidQuery(f"invalid date {value!r}: expected YYYYMMDD or a YYYYMMDD-YYYYMMDD range")
    return v


def _check_time(value: str) -> str:
    v = value.strip().replace(":", "")
    if not _TIME_RE.match(v):
        raise InvalidQuery(f"invalid time {value!r}: expected HHMMSS[.FFFFFF] or a range")
    return v


def parse_condition(attribute: Attribute, raw: str, *, fuzzy: bool = False) -> Condition | None:
    """Interpret one key's value by PS3.4 C.2.2.2; ``None`` means universal matching (return key only)."""
    value = raw.strip() if attribute.vr not in ("PN",) else raw.strip(" ")
    if value in ("", "*"):
        return None
    vr = attribute.vr
    if vr == "UI":
        uids = tuple(v.strip() for v in value.split("\\") if v.strip())
        for uid in uids:
            if len(uid) > 64 or not _UID_RE.match(uid):
                # the value is not echoed: refusals are logged above DEBUG, and a UID is an identifier
                raise InvalidQuery(f"invalid UID for {attribute.keyword} (digits and dots, at most 64 characters)")
        if len(uids) == 1:
            return Condition(attribute, MatchKind.SINGLE, value=uids[0])
        return Condition(attribute, MatchKind.UID_LIST, values=uids)
    if vr in ("DA", "TM", "DT"):
        check = _check_date if vr == "DA" else _check_time
        if "-" in value and vr != "DT":
            lo, _, hi = value.partition("-")
            lo_v = check(lo) if lo.strip() else None
            hi_v = check(hi) if hi.strip() else None
            if lo_v is None and hi_v is None:
                return None
            if vr == "TM":
                lo_v = normalise_time(lo_v) if lo_v else None
                hi_v = normalise_time(hi_v, high=True) if hi_v else None
            return Condition(attribute, MatchKind.RANGE, low=lo_v, high=hi_v)
        if vr == "DA":
            return Condition(attribute, MatchKind.SINGLE, value=check(value))
        if vr == "TM":
            v = check(value)
            return Condition(attribute, MatchKind.RANGE, low=normalise_time(v), high=normalise_time(v, high=True))
        return Condition(attribute, MatchKind.SINGLE, value=value)
    if vr == "PN":
        folded = fold_pn(value)
        if fuzzy:
            return Condition(attribute, MatchKind.WILDCARD, value=folded.rstrip("*"), fuzzy=True)
        if "*" in folded or "?" in folded:
            return Condition(attribute, MatchKind.WILDCARD, value=folded)
        return Condition(attribute, MatchKind.SINGLE, value=folded)
    if "*" in value or "?" in value:
        return Condition(attribute, MatchKind.WILDCARD, value=value)
    if "\\" in value:
        return Condition(attribute, MatchKind.MULTI, values=tuple(v for v in value.split("\\") if v))
    return Condition(attribute, MatchKind.SINGLE, value=value)


def wildcard_to_like(pattern: str) -> str:
    """DICOM wildcard → SQL LIKE pattern with ``\\`` as the escape character."""
    out = []
    for ch in pattern:
        if ch in "%_\\":
            out.append("\\" + ch)
        elif ch == "*":
            out.append("%")
        elif ch == "?":
            out.append("_")
        else:
            out.append(ch)
    return "".join(out)


def attribute_for(keyword: str) -> Attribute | None:
    return BY_KEYWORD.get(keyword)
