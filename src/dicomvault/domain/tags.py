"""The attributes the index keeps per level ("main tags"), shared by C-FIND, QIDO-RS and the index schema.

A query on one of these is answered by an indexed column; any other attribute is answered from the
per-instance DICOM JSON cached at ingest. Keeping the table here (not in the SQL adapter) lets every front end
and every index adapter agree on one list.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum

from pydicom.datadict import dictionary_VR, keyword_for_tag, tag_for_keyword


class Level(str, Enum):
    """Query/Retrieve levels of PS3.4 C.6 (IMAGE is the DIMSE name of the instance level)."""

    PATIENT = "PATIENT"
    STUDY = "STUDY"
    SERIES = "SERIES"
    IMAGE = "IMAGE"

    @property
    def depth(self) -> int:
        return _DEPTH[self]


_DEPTH = {Level.PATIENT: 0, Level.STUDY: 1, Level.SERIES: 2, Level.IMAGE: 3}


@dataclass(frozen=True)
class Attribute:
    """An attribute the index stores as a column at ``level``.

    ``computed`` attributes (counts, ModalitiesInStudy) are derived by the archive, never read from objects.
    """

    keyword: str
    level: Level
    column: str
    computed: bool = False
    # Derived once from the keyword (hot in ingest and query paths).
    tag: int = field(init=False, compare=False)
    vr: str = field(init=False, compare=False)
    tag_hex: str = field(init=False, compare=False)

    def __post_init__(self) -> None:
        tag = tag_for_keyword(self.keyword)
        if tag is None:
            raise ValueError(f"unknown DICOM keyword {self.keyword}")
        object.__setattr__(self, "tag", int(tag))
        object.__setattr__(self, "vr", str(dictionary_VR(tag)))
        object.__setattr__(self, "tag_hex", f"{int(tag):08X}")


_A = Attribute
INDEXED: tuple[Attribute, ...] = (
    # Patient
    _A("PatientID", Level.PATIENT, "patient_id"),
    _A("IssuerOfPatientID", Level.PATIENT, "issuer_of_patient_id"),
    _A("PatientName", Level.PATIENT, "patient_name"),
    _A("PatientBirthDate", Level.PATIENT, "patient_birth_date"),
    _A("PatientSex", Level.PATIENT, "patient_sex"),
    _A("NumberOfPatientRelatedStudies", Level.PATIENT, "num_studies", computed=True),
    _A("NumberOfPatientRelatedSeries", Level.PATIENT, "num_series", computed=True),
    _A("NumberOfPatientRelatedInstances", Level.PATIENT, "num_instances", computed=True),
    # Study
    _A("StudyInstanceUID", Level.STUDY, "study_uid"),
    _A("StudyDate", Level.STUDY, "study_date"),
    _A("StudyTime", Level.STUDY, "study_time"),
    _A("AccessionNumber", Level.STUDY, "accession_number"),
    _A("StudyID", Level.STUDY, "study_id"),
    _A("ReferringPhysicianName", Level.STUDY, "referring_physician_name"),
    _A("StudyDescription", Level.STUDY, "study_description"),
    _A("ModalitiesInStudy", Level.STUDY, "modalities_in_study", computed=True),
    _A("NumberOfStudyRelatedSeries", Level.STUDY, "num_series", computed=True),
    _A("NumberOfStudyRelatedInstances", Level.STUDY, "num_instances", computed=True),
    # Series
    _A("SeriesInstanceUID", Level.SERIES, "series_uid"),
    _A("Modality", Level.SERIES, "modality"),
    _A("SeriesNumber", Level.SERIES, "series_number"),
    _A("SeriesDescription", Level.SERIES, "series_description"),
    _A("BodyPartExamined", Level.SERIES, "body_part_examined"),
    _A("SeriesDate", Level.SERIES, "series_date"),
    _A("SeriesTime", Level.SERIES, "series_time"),
    _A("PerformedProcedureStepStartDate", Level.SERIES, "pps_start_date"),
    _A("PerformedProcedureStepStartTime", Level.SERIES, "pps_start_time"),
    _A("NumberOfSeriesRelatedInstances", Level.SERIES, "num_instances", computed=True),
    # Instance
    _A("SOPInstanceUID", Level.IMAGE, "sop_uid"),
    _A("SOPClassUID", Level.IMAGE, "sop_class_uid"),
    _A("InstanceNumber", Level.IMAGE, "instance_number"),
    _A("Rows", Level.IMAGE, "rows"),
    _A("Columns", Level.IMAGE, "columns"),
    _A("NumberOfFrames", Level.IMAGE, "number_of_frames"),
    _A("BitsAllocated", Level.IMAGE, "bits_allocated"),
    _A("ContentDate", Level.IMAGE, "content_date"),
    _A("ContentTime", Level.IMAGE, "content_time"),
    _A("AvailableTransferSyntaxUID", Level.IMAGE, "transfer_syntax_uid", computed=True),
)

BY_KEYWORD: dict[str, Attribute] = {a.keyword: a for a in INDEXED}
BY_TAG: dict[int, Attribute] = {a.tag: a for a in INDEXED}

#: The unique key of each level (PS3.4 C.6.1.1 / C.6.2.1).
UNIQUE_KEY: dict[Level, str] = {
    Level.PATIENT: "PatientID",
    Level.STUDY: "StudyInstanceUID",
    Level.SERIES: "SeriesInstanceUID",
    Level.IMAGE: "SOPInstanceUID",
}

#: Attributes returned by default at each level when no return keys are asked for (QIDO-RS PS3.18 Table 10.6.3-3..5).
DEFAULT_RETURN: dict[Level, tuple[str, ...]] = {
    Level.PATIENT: (
        "PatientName", "PatientID", "IssuerOfPatientID", "PatientBirthDate", "PatientSex",
        "NumberOfPatientRelatedStudies", "NumberOfPatientRelatedSeries", "NumberOfPatientRelatedInstances",
    ),
    Level.STUDY: (
        "StudyDate", "StudyTime", "AccessionNumber", "ModalitiesInStudy", "ReferringPhysicianName",
        "PatientName", "PatientID", "PatientBirthDate", "PatientSex", "StudyInstanceUID", "StudyID",
        "StudyDescription", "NumberOfStudyRelatedSeries", "NumberOfStudyRelatedInstances",
    ),
    Level.SERIES: (
        "Modality", "SeriesDescription", "SeriesInstanceUID", "SeriesNumber", "BodyPartExamined",
        "SeriesDate", "SeriesTime", "PerformedProcedureStepStartDate", "PerformedProcedureStepStartTime",
        "NumberOfSeriesRelatedInstances",
    ),
    Level.IMAGE: (
        "SOPClassUID", "SOPInstanceUID", "InstanceNumber", "Rows", "Columns", "BitsAllocated",
        "NumberOfFrames", "AvailableTransferSyntaxUID",
    ),
}


def resolve_keyword(name: str) -> tuple[int, str]:
    """Accept a keyword (``PatientName``) or a tag (``00100010``, ``0010,0010``) and return (tag, keyword).

    Raises ``KeyError`` for anything that is not a public dictionary attribute.
    """
    text = name.strip()
    compact = text.replace(",", "").replace("(", "").replace(")", "")
    if len(compact) == 8 and all(c in "0123456789abcdefABCDEF" for c in compact):
        tag = int(compact, 16)
        kw = keyword_for_tag(tag)
        if not kw:
            raise KeyError(name)
        return tag, kw
    tag_or_none = tag_for_keyword(text)
    if tag_or_none is None:
        raise KeyError(name)
    return int(tag_or_none), text
