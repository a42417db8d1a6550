"""Index values → DICOM JSON elements (PS3.18 F.2), the neutral result form of the query engine.

QIDO-RS serves these objects as they are; C-FIND turns them into an Identifier with ``Dataset.from_json``.
This lives in the domain (not in a service) because two layers must produce byte-identical objects from the
same index values: the query service when it answers a row, and the index adapter when it caches the default
study-level answer of each study (``default_object``) for QIDO-RS to concatenate without building it again.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from dicomvault.domain.tags import BY_KEYWORD, DEFAULT_RETURN, Attribute, Level

_NUMERIC_VRS = {"IS", "US", "UL", "SS", "SL", "UV", "SV"}
_FLOAT_VRS = {"DS", "FL", "FD"}


def _converted(parts: list[Any], convert: Callable[[Any], Any]) -> list[Any]:
    """The values ``convert`` accepts, in order (an unparsable IS/DS/US value is left out, as before)."""
    out: list[Any] = []
    for p in parts:
        try:
            out.append(convert(p))
        except (TypeError, ValueError):
            continue
    return out


def element(vr: str, value: Any) -> dict[str, Any]:
    """One JSON element; ``None`` or '' gives an element with no Value (a present, empty attribute)."""
    if value is None or value == "":
        return {"vr": vr}
    # Fast paths for the common single values (QIDO builds tens of thousands of these per second).
    if type(value) is int and vr in _NUMERIC_VRS:
        return {"vr": vr, "Value": [value]}
    if type(value) is str and "\\" not in value and vr not in _NUMERIC_VRS and vr not in _FLOAT_VRS:
        return {"vr": vr, "Value": [{"Alphabetic": value}]} if vr == "PN" else {"vr": vr, "Value": [value]}
    if isinstance(value, str) and "\\" in value and vr not in ("LT", "ST", "UT"):
        parts = [p for p in value.split("\\")]
    else:
        parts = [value]
    if vr == "PN":
        return {"vr": vr, "Value": [{"Alphabetic": str(p)} for p in parts]}
    if vr in _NUMERIC_VRS or vr in _FLOAT_VRS:
        numbers = _converted(parts, int if vr in _NUMERIC_VRS else float)
        return {"vr": vr, "Value": numbers} if numbers else {"vr": vr}
    return {"vr": vr, "Value": [str(p) for p in parts]}


def indexed_element(attr: Attribute, value: Any) -> dict[str, Any]:
    if attr.keyword == "ModalitiesInStudy":
        mods = [m for m in str(value or "").split("\\") if m]
        return {"vr": "CS", "Value": mods} if mods else {"vr": "CS"}
    return element(attr.vr, value)


def _default_plan(level: Level) -> tuple[tuple[str, Attribute], ...]:
    """(keyword, attribute) of the default return keys of ``level``, in tag order (the order results have)."""
    attrs = [BY_KEYWORD[kw] for kw in DEFAULT_RETURN[level]]
    return tuple((a.keyword, a) for a in sorted(attrs, key=lambda a: a.tag))


#: Every default return key of the study level is an indexed attribute of the study or patient level, so a study's
#: default answer is a function of its study and patient rows alone.
STUDY_DEFAULT_PLAN = _default_plan(Level.STUDY)


def default_object(level: Level, row: Mapping[str, Any]) -> dict[str, Any]:
    """The DICOM JSON object of the default return keys of ``level`` for an index row (keyword → column value),
    element for element and in the same order as the query service builds it for a query without
    ``includefield``."""
    if level != Level.STUDY:
        raise ValueError(f"no cached default object at {level.value} level")
    return {attr.tag_hex: indexed_element(attr, row.get(kw)) for kw, attr in STUDY_DEFAULT_PLAN}
