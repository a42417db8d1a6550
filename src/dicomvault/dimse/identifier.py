"""C-FIND/C-GET/C-MOVE Identifier ⇄ the shared query engine's key/value pairs and DICOM JSON results.

The engine (``QueryService``, also behind QIDO-RS and the CLI) takes values exactly as DICOM writes them, so an
Identifier is turned into ``{keyword: raw string}``: person names as written, multiple values joined with a
backslash, an empty value meaning universal matching (a return key). Responses are built back from the DICOM
JSON results and hold only what was asked for.
"""

from __future__ import annotations

from typing import Any

from pydicom.dataset import Dataset
from pydicom.multival import MultiValue
from pydicom.sequence import Sequence
from pydicom.valuerep import PersonName

from dicomvault.domain.errors import InvalidQuery
from dicomvault.domain.tags import Level

QUERY_RETRIEVE_LEVEL = 0x00080052
SPECIFIC_CHARACTER_SET = 0x00080005
RETRIEVE_AE_TITLE = 0x00080054
INSTANCE_AVAILABILITY = 0x00080056
#: Elements of an Identifier that steer the query or describe the answer rather than match anything.
_CONTROL = {QUERY_RETRIEVE_LEVEL, SPECIFIC_CHARACTER_SET, RETRIEVE_AE_TITLE, INSTANCE_AVAILABILITY,
            0x00880130, 0x00880140}  # Storage Media File-Set ID / UID

PATIENT_ROOT_LEVELS = (Level.PATIENT, Level.STUDY, Level.SERIES, Level.IMAGE)
STUDY_ROOT_LEVELS = (Level.STUDY, Level.SERIES, Level.IMAGE)


def query_level(identifier: Dataset, *, patient_root: bool) -> Level:
    """The Query/Retrieve Level, checked against the information model; raises ``InvalidQuery``."""
    raw = str(identifier.get("QueryRetrieveLevel", "") or "").strip().upper()
    try:
        level = Level(raw)
    except ValueError:
        raise InvalidQuery(f"QueryRetrieveLevel {raw!r} is not PATIENT, STUDY, SERIES or IMAGE") from None
    if level not in (PATIENT_ROOT_LEVELS if patient_root else STUDY_ROOT_LEVELS):
        raise InvalidQuery(f"Level {level.value} is not in the Study Root information model")
    return level


def _raw(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, (list, MultiValue)):
        return "\\".join(_raw(v) for v in value)
    if isinstance(value, PersonName):
        return str(value)  # as written: components joined by ^, groups by =
    if isinstance(value, bytes):
        return value.decode("ascii", "replace")
    return str(value)


def _is_key(elem: Any) -> bool:
    tag = elem.tag
    return not (tag in _CONTROL or tag.group in (0x0000, 0x0002) or tag.is_private or not elem.keyword)


def matching_keys(identifier: Dataset) -> dict[str, str]:
    """keyword → raw DICOM value for every key of the Identifier (sequences are return keys only: skipped)."""
    return {elem.keyword: _raw(elem.value) for elem in identifier if _is_key(elem) and elem.VR != "SQ"}


def response(result: dict[str, Any], identifier: Dataset, level: Level, aet: str) -> Dataset:
    """A C-FIND response Identifier: exactly the requested keys, valued from the result where it has them, plus
    QueryRetrieveLevel, RetrieveAETitle / InstanceAvailability when asked, and SpecificCharacterSet when a value
    is not ASCII."""
    found = Dataset.from_json(result)
    out = Dataset()
    for elem in identifier:
        if not _is_key(elem):
            continue
        if elem.tag in found:
            out.add(found[elem.tag])
        elif elem.VR == "SQ":
            out.add_new(elem.tag, "SQ", Sequence())
        else:
            out.add_new(elem.tag, elem.VR, None)
    out.QueryRetrieveLevel = level.value
    if RETRIEVE_AE_TITLE in identifier:
        out.RetrieveAETitle = aet
    if INSTANCE_AVAILABILITY in identifier:
        out.InstanceAvailability = "ONLINE"
    if _non_ascii(out):
        out.SpecificCharacterSet = "ISO_IR 192"
    return out


def _non_ascii(ds: Dataset) -> bool:
    for elem in ds:
        values = elem.value if isinstance(elem.value, (list, MultiValue)) else [elem.value]
        for value in values:
            if value is None or isinstance(value, (bytes, Sequence)):
                continue
            if not str(value).isascii():
                return True
    return False
