"""DICOM JSON (PS3.18 F.2) of a header just read by pydicom, built straight from the raw element bytes.

Why not only ``Dataset.to_json_dict``: it converts every element into a pydicom ``DataElement`` first (value
conversion hooks, validation, VM computation), which costs ~1.5 ms for a typical CT header, a third of the CPU an
instance costs at ingest. Most header elements are plain ASCII strings or little binary numbers whose JSON form is
a split and a strip away from the bytes, so those are converted here, exactly as pydicom would (the test suite
compares both on the whole pydicom test corpus). ASCII values take this path whatever the Specific Character Set
(``_ascii`` says why), and so does a person name with one value and one component group. Everything else —
sequences, names with ideographic or phonetic groups, non-ASCII text, binary VRs, deferred or ambiguous values —
goes through pydicom element by element, so the output is always what pydicom produces.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from typing import Any

from pydicom.datadict import dictionary_VR
from pydicom.dataelem import DataElement, RawDataElement
from pydicom.dataset import Dataset

#: VRs whose value is split on backslashes and right-stripped of spaces and NULs (pydicom's ``multi_string`` /
#: ``convert_text`` with the default character set; DA/DT/TM as strings, pydicom's default).
_STRING_VRS = frozenset({"AS", "CS", "DA", "DT", "TM", "UI", "SH", "LO", "UC"})
#: Text VRs whose values pydicom strips one by one (the others of ``_STRING_VRS`` only at the end of the whole).
_TEXT_VRS = frozenset({"SH", "LO", "UC"})
#: One value, no split: trailing spaces and NULs are not significant.
_SINGLE_VRS = frozenset({"LT", "ST", "UT"})
_STRUCT = {"US": "H", "SS": "h", "UL": "L", "SL": "l", "FL": "f", "FD": "d", "UV": "Q", "SV": "q"}
_SIZES = {code: struct.calcsize(code) for code in _STRUCT.values()}


def _ascii(value: bytes) -> str | None:
    """The value as text if it is plain ASCII without an ESC byte. Every character set DICOM defines decodes
    such bytes alike (the ISO 8859 family, UTF-8, GB18030/GBK, and the ISO 2022 sets, whose G0 is ASCII until an
    escape sequence switches it), so the value needs no character-set handling whatever (0008,0005) says: most
    values of a header written under ``ISO_IR 100`` or ``ISO_IR 192`` are such."""
    if 0x1B in value:
        return None
    try:
        return value.decode("ascii")
    except UnicodeDecodeError:
        return None


def _numbers(vr: str, value: bytes, little: bool) -> list[Any] | None:
    code = _STRUCT[vr]
    size = _SIZES[code]
    if len(value) % size:
        return None
    count = len(value) // size
    values = list(struct.unpack(("<" if little else ">") + code * count, value))
    if vr in ("FL", "FD"):
        return [float(v) for v in values]
    return [int(v) for v in values]


def _strings(vr: str, text: str) -> list[Any] | None:
    if vr in _SINGLE_VRS:
        stripped = text.rstrip("\0 ")
        return [stripped] if stripped else None
    if vr == "AE":
        parts = [p.strip() for p in text.split("\\")]
    elif vr in _TEXT_VRS:  # pydicom's convert_text: every value stripped of trailing spaces and NULs
        parts = [p.rstrip("\0 ") for p in text.split("\\")]
    else:  # pydicom's multi_string: only the end of the whole value is padding ("A \\B" keeps "A ")
        parts = text.rstrip(" \x00").split("\\")
    if len(parts) == 1 and not parts[0]:
        return None
    return parts


def _is_ds(vr: str, parts: list[str]) -> list[Any] | None:
    """IS/DS as JSON numbers; None (let pydicom decide) for anything but clean single values."""
    out: list[Any] = []
    for p in parts:
        p = p.strip()
        if not p:
            return None
        try:
            out.append(int(p) if vr == "IS" else float(p))
        except ValueError:
            return None
        if vr == "DS" and (p.lower() in ("nan", "inf", "-inf", "+inf", "infinity") or "_" in p):
            return None
    return out


def _fast(raw: RawDataElement, vr: str) -> dict[str, Any] | None:
    """The JSON element for the common simple cases, or None to let pydicom convert it."""
    value = raw.value
    if value is None:
        return None  # deferred (large) value: pydicom reads it
    if vr in _STRUCT:
        if not value:
            return {"vr": vr}
        nums = _numbers(vr, value, raw.is_little_endian)
        return None if nums is None else {"vr": vr, "Value": nums}
    if vr == "PN":
        # One value with one component group (no "=", no backslash): pydicom's ``Alphabetic`` is the text
        # stripped of trailing spaces and NULs. Anything else (ideographic or phonetic groups, several names)
        # goes through pydicom.
        text = _ascii(value)
        if text is None or "=" in text or "\\" in text:
            return None
        text = text.rstrip("\0 ")
        return {"vr": vr, "Value": [{"Alphabetic": text}]} if text else {"vr": vr}
    if vr in _STRING_VRS or vr in _SINGLE_VRS or vr in ("AE", "IS", "DS"):
        text = _ascii(value)
        if text is None:
            return None
        parts = _strings(vr, text)
        if parts is None:
            return {"vr": vr}
        if vr in ("IS", "DS"):
            nums = _is_ds(vr, parts)
            return None if nums is None else {"vr": vr, "Value": nums}
        return {"vr": vr, "Value": parts}
    return None


def header_json(
    ds: Dataset, *, bulk_threshold: int, bulk_uri: Callable[[DataElement], str]
) -> dict[str, Any]:
    """``ds.to_json_dict(bulk_threshold, bulk_uri)`` for a freshly read ``ds``, faster. Raises what pydicom
    raises for an element it cannot encode (the caller then drops offenders one by one)."""
    out: dict[str, Any] = {}
    for tag, elem in ds._dict.items():
        key = f"{int(tag):08X}"
        if isinstance(elem, RawDataElement):
            vr = elem.VR
            if vr is None:
                try:
                    vr = dictionary_VR(tag)
                except KeyError:
                    vr = None
            if vr is not None:
                fast = _fast(elem, vr)
                if fast is not None:
                    out[key] = fast
                    continue
        out[key] = ds[tag].to_json_dict(bulk_data_element_handler=bulk_uri, bulk_data_threshold=bulk_threshold)
    return out
