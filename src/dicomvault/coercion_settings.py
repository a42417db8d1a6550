"""Attribute coercion rules, ``[[coercion]]`` in the configuration file (issue #12 item 2; applied by
``services.coercion`` on ingest). Validated at start-up: an unknown attribute, a sequence where a value is
expected, an identity attribute, or an impossible combination is refused with the line at fault.

    [[coercion]]
    name = "ACME PACS"
    when = { source = "ACMEPACS" }                     # calling AE title / STOW client; "dimse", "stow"
    issuer_of_patient_id = "ACME"                      # supplement (0010,0021) when the sender omits it
    issuer_qualifiers = { UniversalEntityID = "1.2.3.4", UniversalEntityIDType = "ISO" }
    prefix = { AccessionNumber = "ACME-" }
    map = { InstitutionName = { "GH" = "General Hospital" } }
    set = { InstitutionalDepartmentName = "Radiology" }
    replace = { ReferringPhysicianName = "UNKNOWN" }   # only where the attribute is present
    remove = ["OtherPatientIDsSequence"]
    character_set = "ISO_IR 192"                       # re-encode text as UTF-8

    [[coercion]]
    name = "PACS B"
    ingest = false                                     # only on copies a route forwards (route: coerce = ["PACS B"])
    prefix = { AccessionNumber = "B-" }
"""

from __future__ import annotations

import re
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from pydicom.datadict import dictionary_VR, keyword_for_tag, tag_for_keyword

#: Attributes no rule may change: they identify the object (the index, the C-STORE request and the file meta
#: refer to them), or are not part of the data set proper.
PROTECTED = frozenset({0x00080016, 0x00080018, 0x0020000D, 0x0020000E, 0x00080005})
_TAG = re.compile(r"^\(?([0-9A-Fa-f]{4}),?([0-9A-Fa-f]{4})\)?$")
#: Character sets ``character_set`` may name (pydicom encodes them all).
CHARACTER_SETS = frozenset({"ISO_IR 192", "ISO_IR 100", "ISO_IR 6", ""})
_TEXT_VRS = frozenset({"AE", "AS", "CS", "DA", "DS", "DT", "IS", "LO", "LT", "PN", "SH", "ST", "TM", "UC", "UI",
                       "UR", "UT"})


def parse_attribute(name: str) -> int:
    """A keyword (``AccessionNumber``) or tag (``00080050``, ``0008,0050``, ``(0008,0050)``) → tag; ``ValueError``."""
    text = name.strip()
    m = _TAG.match(text)
    tag = int(m.group(1) + m.group(2), 16) if m else tag_for_keyword(text)
    if tag is None:
        raise ValueError(f"{name!r} is not a DICOM keyword or tag")
    if tag >> 16 == 0x0002 or tag >> 16 == 0x7FE0 or tag in PROTECTED:
        raise ValueError(f"{name!r} cannot be coerced (file meta, pixel data or an attribute identifying the object)")
    return tag


def _value_attribute(name: str) -> int:
    """A top-level attribute whose value a rule may write as text."""
    tag = parse_attribute(name)
    try:
        vr = dictionary_VR(tag)
    except KeyError:
        raise ValueError(f"{name!r} is not in the DICOM dictionary (private tags are not coerced)") from None
    if vr not in _TEXT_VRS:
        raise ValueError(f"{name!r} has VR {vr}: only text values are coerced (remove it instead)")
    return tag


def label(tag: int) -> str:
    return keyword_for_tag(tag) or f"({tag >> 16:04X},{tag & 0xFFFF:04X})"


class CoercionWhen(BaseModel):
    """Which objects a rule applies to (every condition given must hold; none: every object)."""

    model_config = ConfigDict(extra="forbid")

    source: str | list[str] | None = Field(
        None, description="Calling AE title or STOW client (as lifecycle rules match it); 'dimse', 'stow'.")
    peer: str | None = Field(None, description="A known peer's AE title (refused at start-up when unknown).")
    modality: str | list[str] | None = Field(None, description="Modality (0008,0060) of the object.")
    sop_class: str | list[str] | None = Field(None, description="SOP Class UID of the object.")


def _names(value: str | list[str] | None) -> tuple[str, ...]:
    if value is None:
        return ()
    return tuple(v.strip() for v in ([value] if isinstance(value, str) else value) if v.strip())


class CoercionRule(BaseModel):
    """One ``[[coercion]]`` rule; its changes apply in this order: remove, set, replace, map, prefix, suffix,
    issuer of patient ID, character set."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, description="Shown in logs and in the Original Attributes Sequence.")
    when: CoercionWhen = Field(default_factory=lambda: CoercionWhen.model_validate({}))
    set: dict[str, str] = Field(default_factory=dict, description="Attribute = value, always.")
    replace: dict[str, str] = Field(default_factory=dict, description="Attribute = value, where present.")
    remove: list[str] = Field(default_factory=list, description="Attributes to remove.")
    prefix: dict[str, str] = Field(default_factory=dict, description="Attribute = text put before its value.")
    suffix: dict[str, str] = Field(default_factory=dict, description="Attribute = text put after its value.")
    map: dict[str, dict[str, str]] = Field(
        default_factory=dict, description="Attribute = { old value = new value } (values not listed are kept).")
    issuer_of_patient_id: str | None = Field(
        None, description="Issuer of Patient ID (0010,0021) for objects that have none.")
    issuer_qualifiers: dict[str, str] = Field(
        default_factory=dict, description="With issuer_of_patient_id: UniversalEntityID, UniversalEntityIDType, "
        "IdentifierTypeCode … of the Issuer of Patient ID Qualifiers Sequence (0010,0024).")
    character_set: str | None = Field(
        None, description="Re-encode the object's text in this Specific Character Set (ISO_IR 192 = UTF-8).")
    ingest: bool = Field(True, description="Apply on ingest; false: only to the copies forwarded by routes that "
                         "name the rule (a route's coerce = [...]).")
    enabled: bool = Field(True, description="false: kept in the file, not applied.")

    @field_validator("set", "replace", "prefix", "suffix", "map")
    @classmethod
    def _check_values(cls, value: dict[str, Any]) -> dict[str, Any]:
        for key in value:
            _value_attribute(key)
        return value

    @field_validator("remove")
    @classmethod
    def _check_remove(cls, value: list[str]) -> list[str]:
        for key in value:
            parse_attribute(key)
        return value

    @field_validator("issuer_qualifiers")
    @classmethod
    def _check_qualifiers(cls, value: dict[str, str]) -> dict[str, str]:
        allowed = {"UniversalEntityID", "UniversalEntityIDType", "IdentifierTypeCode", "AssigningFacilitySequence"}
        for key in value:
            if key not in allowed - {"AssigningFacilitySequence"}:
                raise ValueError(f"issuer_qualifiers: {key!r} is not one of UniversalEntityID, UniversalEntityIDType, "
                                 "IdentifierTypeCode")
        return value

    @field_validator("character_set")
    @classmethod
    def _check_charset(cls, value: str | None) -> str | None:
        if value is not None and value not in CHARACTER_SETS:
            raise ValueError(f"character_set {value!r}: one of {', '.join(sorted(c for c in CHARACTER_SETS if c))}")
        return value

    @model_validator(mode="after")
    def _check(self) -> CoercionRule:
        if not (self.set or self.replace or self.remove or self.prefix or self.suffix or self.map
                or self.issuer_of_patient_id or self.character_set):
            raise ValueError("a coercion rule needs at least one change (set, replace, remove, prefix, suffix, map, "
                             "issuer_of_patient_id, character_set)")
        if self.issuer_qualifiers and not self.issuer_of_patient_id:
            raise ValueError("issuer_qualifiers belong with issuer_of_patient_id")
        removed = {parse_attribute(k) for k in self.remove}
        written = {_value_attribute(k) for d in (self.set, self.replace, self.prefix, self.suffix, self.map)
                   for k in d}
        both = removed & written
        if both:
            raise ValueError(f"{label(min(both))} is both removed and written: the rule can never mean both")
        return self

    def sources(self) -> tuple[str, ...]:
        return _names(self.when.source)

    def modalities(self) -> tuple[str, ...]:
        return tuple(m.upper() for m in _names(self.when.modality))

    def sop_classes(self) -> tuple[str, ...]:
        return _names(self.when.sop_class)
