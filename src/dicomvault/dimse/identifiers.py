"""C-FIND/C-GET/C-MOVE Identifier ⇄ the shared query engine's key/value pairs and DICOM JSON results."""

from __future__ import annotations

from typing import Any

from pydicom.dataset import Dataset
from pydicom.multival import MultiValue
from pydicom.sequence import Sequence

from dicomvault.domain.errors import InvalidQuery
from dicomvault.domain.tags import Level

#: Elements of an Identifier that steer the query rather than match anything.
_CONTROL = {0x00080052, 0x00080005, 0x00080054, 0x00080056, 0x00880130, 0x00880140}

PATIENT_ROOT_LEVELS = {Level.PATIENT, Level.STUDY, Level.SERIES, Level.IMAGE}
STUDY_ROOT_LEVELS = {Level.STUDY, Level.SERIES, Level.IMAGE}


def query_level(identifier: Dataset, *, patient_root: bool) -> Level:
    raw = str(identifier.get("QueryRetrieveLevel", "") or "").strip().upper()
    try:
        level = Level(raw)
    except ValueError:
        raise InvalidQuery(f"QueryRetrieveLevel {raw!r} is not PATIENT, STUDY, SERIES or IMAGE") from None
    allowed = PATIENT_ROOT_LEVELS if patient_root else STUDY_ROOT_LEVELS
    if level not in allowed:
        raise InvalidQuery(f"level {level.value} is not in the Study Root information model")
    return level


def _raw(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, (list, MultiValue)):
        return "\\".join(_raw(v) for v in value)
    if isinstance(value, bytes):
        return value.decode("ascii", "replace")
    return str(value)


def matching_keys(identifier: Dataset) -> tuple[dict[str, str], list[str]]:
    """(keyword → raw DICOM value) for matching, and the keywords of sequence return keys (not matched)."""
    keys: dict[str, str] = {}
    sequences: list[str] = []
    for elem in identifier:
        if elem.tag in _CONTROL or elem.tag.group in (0x0000, 0x0002) or elem.tag.is_private:
            continue
        if not elem.keyword:
            continue
        if elem.VR == "SQ":
            sequences.append(elem.keyword)
            continue
        keys[elem.keyword] = _raw(elem.value)
    return keys, sequences


def response(result: dict[str, Any], identifier: Dataset, level: Level, aet: str) -> Dataset:
    """A C-FIND response Identifier: exactly the requested keys, valued from the result where it has them."""
    found = Dataset.from_json(result)
    out = Dataset()
    for elem in identifier:
        if elem.tag in _CONTROL or elem.tag.group in (0x0000, 0x0002) or elem.tag.is_private:
            continue
        if elem.tag in found:
            out.add(found[elem.tag])
        elif elem.VR == "SQ":
            out.add_new(elem.tag, "SQ", Sequence())
        else:
            out.add_new(elem.tag, elem.VR, None)
    out.QueryRetrieveLevel = level.value
    if "RetrieveAETitle" in identifier:
        out.RetrieveAETitle = aet
    if _non_ascii(out):
        out.SpecificCharacterSet = "ISO_IR 192"
    return out


def _non_ascii(ds: Dataset) -> bool:
    for elem in ds:
        value = elem.value
        if isinstance(value, (list, MultiValue)):
            if any(not str(v).isascii() for v in value):
                return True
        elif value is not None and not isinstance(value, (bytes, Sequence)) and not str(value).isascii():
            return True
    return False
