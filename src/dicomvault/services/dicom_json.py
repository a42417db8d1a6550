"""Index values → DICOM JSON elements (PS3.18 F.2), the neutral result form of the query engine.

QIDO-RS serves these objects as they are; C-FIND turns them into an Identifier with ``Dataset.from_json``.
"""

from __future__ import annotations

from typing import Any

from dicomvault.domain.tags import Attribute

_NUMERIC_VRS = {"IS", "US", "UL", "SS", "SL", "UV", "SV"}
_FLOAT_VRS = {"DS", "FL", "FD"}


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
    if vr in _NUMERIC_VRS:
        out: list[Any] = []
        for p in parts:
            try:
                out.append(int(p))
            except (TypeError, ValueError):
                continue
        return {"vr": vr, "Value": out} if out else {"vr": vr}
    if vr in _FLOAT_VRS:
        floats: list[Any] = []
        for p in parts:
            try:
                floats.append(float(p))
            except (TypeError, ValueError):
                continue
        return {"vr": vr, "Value": floats} if floats else {"vr": vr}
    return {"vr": vr, "Value": [str(p) for p in parts]}


def indexed_element(attr: Attribute, value: Any) -> dict[str, Any]:
    if attr.keyword == "ModalitiesInStudy":
        mods = [m for m in str(value or "").split("\\") if m]
        return {"vr": "CS", "Value": mods} if mods else {"vr": "CS"}
    return element(attr.vr, value)
