"""The table ``dicomvault find`` prints: the columns that fit the terminal, chosen by priority, never wrapped.

Why: a QIDO-style result has a dozen or more attributes; printed all at once at 80 columns every cell wrapped letter
by letter. A person reading a study list looks for the patient, the date, the modality and the description, and
copies a UID only sometimes. So each level has its columns in a priority order; the command keeps, in that order,
as many as fit the width (estimated from the values themselves, a free-text column counting with a small minimum),
then shows the kept ones in reading order. Cells never wrap: a value too long is cut with an ellipsis. UIDs come
last (shown when the terminal is wide enough, always with ``--uids``), and attributes the user asked for (matching
keys, ``--include``) come right after the first few columns. Scripts use ``--json`` (DICOM JSON), not this table.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from pydicom.datadict import keyword_for_tag
from pydicom.uid import UID
from rich.table import Table

from dicomvault.domain.tags import Level, resolve_keyword

#: Columns kept before the attributes the user asked for (they would not be seen otherwise).
CORE = 3
#: Width a free-text column counts with when choosing columns (rich cuts it to what is left, with an ellipsis).
FLEX_MIN = 12
#: Widest a column is estimated at (long values are cut): the longest LO value, and a UID.
CAP = 64
#: Rich's box: one separator and a space either side per column, one more at the end.
PER_COLUMN = 3


@dataclass(frozen=True)
class Column:
    keyword: str
    header: str
    #: free text: may shrink to ``FLEX_MIN`` (descriptions, names)
    flexible: bool = False
    uid: bool = False
    justify: str = "left"


def _col(keyword: str, header: str | None = None, **kw: Any) -> Column:
    return Column(keyword, header or keyword, **kw)


#: Per level, in priority order (most wanted first); shown in the order of ``_ORDER``.
PRIORITY: dict[Level, tuple[Column, ...]] = {
    Level.STUDY: (
        _col("PatientName", "Patient", flexible=True), _col("PatientID", "ID"), _col("StudyDate", "Date"),
        _col("ModalitiesInStudy", "Mod"), _col("StudyDescription", "Description", flexible=True),
        _col("NumberOfStudyRelatedInstances", "Inst", justify="right"), _col("AccessionNumber", "Accession"),
        _col("NumberOfStudyRelatedSeries", "Ser", justify="right"), _col("PatientBirthDate", "Birth"),
        _col("PatientSex", "Sex"), _col("StudyTime", "Time"), _col("StudyID"),
        _col("ReferringPhysicianName", "Referring", flexible=True), _col("StudyInstanceUID", uid=True),
    ),
    Level.SERIES: (
        _col("Modality", "Mod"), _col("SeriesNumber", "No", justify="right"),
        _col("SeriesDescription", "Description", flexible=True),
        _col("NumberOfSeriesRelatedInstances", "Inst", justify="right"), _col("SeriesDate", "Date"),
        _col("BodyPartExamined", "Body part"), _col("SeriesTime", "Time"),
        _col("PerformedProcedureStepStartDate", "PPS date"), _col("SeriesInstanceUID", uid=True),
        _col("StudyInstanceUID", uid=True),
    ),
    Level.IMAGE: (
        _col("InstanceNumber", "No", justify="right"), _col("SOPClassUID", "SOP class", flexible=True),
        _col("Rows", justify="right"), _col("Columns", justify="right"),
        _col("NumberOfFrames", "Frames", justify="right"),
        _col("AvailableTransferSyntaxUID", "Transfer syntax", flexible=True),
        _col("BitsAllocated", "Bits", justify="right"),
        _col("SOPInstanceUID", uid=True), _col("SeriesInstanceUID", uid=True), _col("StudyInstanceUID", uid=True),
    ),
    Level.PATIENT: (
        _col("PatientName", "Patient", flexible=True), _col("PatientID", "ID"), _col("PatientBirthDate", "Birth"),
        _col("PatientSex", "Sex"), _col("NumberOfPatientRelatedStudies", "Studies", justify="right"),
        _col("NumberOfPatientRelatedInstances", "Inst", justify="right"),
        _col("NumberOfPatientRelatedSeries", "Ser", justify="right"), _col("IssuerOfPatientID", "Issuer"),
    ),
}

#: Attributes whose value is a UID with a name (SOP class, transfer syntax): shown by name.
_NAMED_UIDS = frozenset({"SOPClassUID", "AvailableTransferSyntaxUID", "TransferSyntaxUID"})
_DATES = frozenset({"StudyDate", "SeriesDate", "PatientBirthDate", "PerformedProcedureStepStartDate", "ContentDate"})


def tag_hex(keyword: str) -> str:
    return f"{resolve_keyword(keyword)[0]:08X}"


def text(element: dict[str, Any] | None) -> str:
    """A DICOM JSON element as one display string (PN alphabetic group, multi-values joined with backslash)."""
    if not element:
        return ""
    values = element.get("Value")
    if not values:
        return ""
    out = []
    for v in values:
        if isinstance(v, dict):
            out.append(str(v.get("Alphabetic", "")) if "Alphabetic" in v else json.dumps(v))
        else:
            out.append(str(v))
    return "\\".join(out)


def cell(column: Column, row: dict[str, Any]) -> str:
    value = text(row.get(tag_hex(column.keyword)))
    if column.keyword in _NAMED_UIDS and value:
        name = UID(value).name
        return name if name and name != value else value
    if column.keyword in _DATES and len(value) == 8 and value.isdigit():
        return f"{value[:4]}-{value[4:6]}-{value[6:]}"
    return value


def _asked(names: Sequence[str]) -> list[Column]:
    """Columns for matching keys and ``--include`` (keywords or tags; unknown names are ignored)."""
    out: list[Column] = []
    for name in names:
        try:
            tag, keyword = resolve_keyword(name)
        except KeyError:
            continue
        keyword = keyword or keyword_for_tag(tag) or f"{tag:08X}"
        out.append(Column(keyword, keyword, uid=keyword.endswith("UID") and keyword not in _NAMED_UIDS))
    return out


def choose_columns(level: Level, rows: Sequence[dict[str, Any]], width: int, *, asked: Sequence[str] = (),
                   uids: bool = False) -> list[tuple[Column, int]]:
    """The columns to show at ``width`` and the width of each: by priority (asked-for attributes after the first
    ``CORE``), as many as fit, UIDs last unless ``uids``; at least the first column. Free-text columns count with
    ``FLEX_MIN`` and share what is left. Returned in display order (the level's order, asked-for ones after)."""
    base = list(PRIORITY[level])
    wanted = _asked(asked)
    unique: list[Column] = []
    for c in [*base[:CORE], *wanted, *base[CORE:]]:
        if c.keyword not in {u.keyword for u in unique}:
            unique.append(c)
    first = [c for c in unique if c.uid] if uids else [c for c in unique if not c.uid]
    unique = first + [c for c in unique if c not in first]
    kept: dict[str, int] = {}  # keyword -> natural width
    used = 1
    for c in unique:
        values = [len(cell(c, r)) for r in rows]
        if rows and not any(values) and c not in wanted:
            continue  # an attribute no result has: no column
        natural = min(max([len(c.header), *values]), CAP)
        need = (min(natural, FLEX_MIN) if c.flexible else natural) + PER_COLUMN
        if kept and used + need > width:
            continue
        kept[c.keyword] = natural
        used += need
    chosen = [c for c in unique if c.keyword in kept]
    widths = {c.keyword: min(kept[c.keyword], FLEX_MIN) if c.flexible else kept[c.keyword] for c in chosen}
    spare = max(width - 1 - sum(w + PER_COLUMN for w in widths.values()), 0)
    for c in chosen:  # what is left goes to free text, most wanted first
        if c.flexible and spare:
            extra = min(kept[c.keyword] - widths[c.keyword], spare)
            widths[c.keyword] += extra
            spare -= extra
    display: dict[str, int] = {}
    for n, c in enumerate([*base, *wanted]):
        display.setdefault(c.keyword, n)  # a key asked for that is also a default column keeps its place
    return [(c, widths[c.keyword]) for c in sorted(chosen, key=lambda c: display.get(c.keyword, len(display)))]


def build_table(level: Level, rows: Sequence[dict[str, Any]], width: int, *, asked: Sequence[str] = (),
                uids: bool = False) -> Table:
    """The result table: chosen columns at chosen widths, no wrapping (an ellipsis cuts what does not fit)."""
    columns = choose_columns(level, rows, width, asked=asked, uids=uids)
    table = Table()
    for c, w in columns:
        table.add_column(c.header, no_wrap=True, overflow="ellipsis", justify=c.justify,  # type: ignore[arg-type]
                         width=max(w, 1))
    for row in rows:
        table.add_row(*(cell(c, row) for c, _ in columns))
    return table
