"""The study browser (``/ui/studies``): search the archive's studies and page through them.

Why through ``QueryService`` and not a query of its own: the page must match exactly what QIDO-RS and C-FIND
match (one engine, the same limits), and stay fast on a large index. So every filter is an indexed key and one
page is one SELECT of ``limit + 1`` rows (the extra row tells whether a next page exists; no COUNT over the whole
match, which is what gets slow). The sort orders are indexed columns only: time of receipt (the study's row id,
the default, newest first), StudyDate (``ix_studies_study_date``), PatientName (its normalised, indexed shadow);
the database reads them in index order and stops after the page. Walking forward in receipt order uses the id of
the previous page's last study as a keyset cursor (kept per query in a small cache, as QIDO-RS does), so deep
pages do not scan what came before; the other orders page with OFFSET.

Matching, as a user types (documented on the page and in docs/web-pages.md): a patient name without ``*`` or
``?`` matches the start of any of its parts, whatever the case or accents (``doe`` finds ``Doe^John``, ``jo``
too); with wildcards it follows DICOM's rules (``DOE*``). Patient ID and accession number match exactly, or by
DICOM wildcards. A description matches anywhere in it, in any case. The source of the objects (calling AE title, STOW-RS
client) is not offered: the index keeps it per instance without an index, so a filter on it would read every
instance.

The form is a GET form: every search, page and order is a URL that can be bookmarked and shared.
"""

from __future__ import annotations

import re
from collections import OrderedDict
from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import APIRouter, Depends
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response

from dicomvault.domain.errors import InvalidQuery
from dicomvault.domain.tags import Level
from dicomvault.webui.page_auth import PageUser, require_page
from dicomvault.webui.render import render
from dicomvault.webui.values import element_value, person_name, shown_date

router = APIRouter(prefix="/ui", include_in_schema=False)

PAGE_SIZES = (25, 50, 100)
#: the sort orders the page offers: name in the URL → (label, indexed attribute or None for time of receipt)
SORTS: dict[str, tuple[str, str | None]] = {
    "received": ("Received", None),
    "date": ("Study date", "StudyDate"),
    "name": ("Patient name", "PatientName"),
}
#: the modalities offered by the filter (ModalitiesInStudy matches any other typed in the URL too)
MODALITIES = ("CT", "MR", "US", "CR", "DX", "MG", "NM", "PT", "XA", "RF", "OT", "SC", "SR", "SEG", "RTSTRUCT",
              "RTPLAN", "RTDOSE", "ECG", "IO", "PX", "ES", "XC", "OP", "OPT", "DOC", "KO", "PR")
MAX_TEXT = 64
_DATE = re.compile(r"^(\d{4})-?(\d{2})-?(\d{2})$")
_RETURN = ("PatientBirthDate",)


class KeysetCache:
    """(query signature, offset) → id of the study before that offset, least recently used evicted: the next
    page in receipt order starts after it instead of skipping ``offset`` rows."""

    def __init__(self, size: int = 1024) -> None:
        self.size = size
        self._map: OrderedDict[tuple[Any, int], int] = OrderedDict()

    def get(self, signature: Any, offset: int) -> int | None:
        found = self._map.get((signature, offset))
        if found is not None:
            self._map.move_to_end((signature, offset))
        return found

    def put(self, signature: Any, offset: int, last_id: int) -> None:
        self._map[(signature, offset)] = last_id
        self._map.move_to_end((signature, offset))
        while len(self._map) > self.size:
            self._map.popitem(last=False)


@dataclass(frozen=True)
class Search:
    """The form's values, as typed (for the form and the links) and checked."""

    name: str = ""
    pid: str = ""
    accession: str = ""
    date_from: str = ""
    date_to: str = ""
    modality: str = ""
    description: str = ""
    sort: str = "received"
    order: str = "desc"
    limit: int = PAGE_SIZES[0]
    offset: int = 0

    def params(self, **change: Any) -> dict[str, str]:
        """The query string of this search (with ``change``), without empty or default values."""
        values = {"name": self.name, "pid": self.pid, "accession": self.accession, "from": self.date_from,
                  "to": self.date_to, "modality": self.modality, "description": self.description,
                  "sort": self.sort, "order": self.order, "limit": str(self.limit), "offset": str(self.offset)}
        values.update({k: str(v) for k, v in change.items()})
        defaults = {"sort": "received", "order": "desc", "limit": str(PAGE_SIZES[0]), "offset": "0"}
        return {k: v for k, v in values.items() if v and defaults.get(k) != v}

    def keys(self) -> dict[str, str]:
        """The matching keys for ``QueryService.build_spec`` (DICOM values)."""
        keys: dict[str, str] = {}
        if self.name:
            keys["PatientName"] = self.name
        if self.pid:
            keys["PatientID"] = self.pid
        if self.accession:
            keys["AccessionNumber"] = self.accession
        if self.date_from or self.date_to:
            keys["StudyDate"] = f"{_dicom_date(self.date_from)}-{_dicom_date(self.date_to)}"
        if self.modality:
            keys["ModalitiesInStudy"] = self.modality
        if self.description:
            text = self.description
            keys["StudyDescription"] = text if "*" in text or "?" in text else f"*{text}*"
        return keys

    @property
    def fuzzy_name(self) -> bool:
        """A name without wildcards matches the start of any of its parts (QIDO-RS ``fuzzymatching``)."""
        return bool(self.name) and "*" not in self.name and "?" not in self.name


def _dicom_date(value: str) -> str:
    if not value:
        return ""
    match = _DATE.match(value.strip())
    if match is None:
        raise InvalidQuery(f"invalid date {value!r}: expected YYYY-MM-DD")
    return "".join(match.groups())


def _text(value: str | None, what: str) -> str:
    text = (value or "").strip()
    if len(text) > MAX_TEXT:
        raise InvalidQuery(f"{what}: at most {MAX_TEXT} characters")
    if "\\" in text:
        raise InvalidQuery(f"{what}: a backslash is not allowed")
    return text


def parse_search(query: dict[str, str]) -> Search:
    """The page's query string as a ``Search``; raises ``InvalidQuery`` (a 400 page) for a bad value."""
    sort = query.get("sort") or "received"
    if sort not in SORTS:
        raise InvalidQuery(f"unknown sort order {sort!r}")
    order = query.get("order") or "desc"
    if order not in ("asc", "desc"):
        raise InvalidQuery("order is asc or desc")
    try:
        limit = int(query.get("limit") or PAGE_SIZES[0])
        offset = int(query.get("offset") or 0)
    except ValueError:
        raise InvalidQuery("limit and offset are numbers") from None
    if limit not in PAGE_SIZES:
        raise InvalidQuery(f"limit is one of {', '.join(map(str, PAGE_SIZES))}")
    if offset < 0:
        raise InvalidQuery("offset must be >= 0")
    modality = _text(query.get("modality"), "modality").upper()
    if modality and not re.fullmatch(r"[A-Z0-9_]{1,16}", modality):
        raise InvalidQuery("modality: letters and digits, at most 16")
    search = Search(name=_text(query.get("name"), "patient name"), pid=_text(query.get("pid"), "patient ID"),
                    accession=_text(query.get("accession"), "accession number"),
                    date_from=_text(query.get("from"), "from"), date_to=_text(query.get("to"), "to"),
                    modality=modality, description=_text(query.get("description"), "description"),
                    sort=sort, order=order, limit=limit, offset=offset)
    search.keys()  # checks the dates
    return search


@dataclass(frozen=True)
class StudyRow:
    uid: str
    patient_name: str
    patient_id: str
    birth_date: str
    study_date: str
    modalities: str
    description: str
    accession: str
    series: int | None
    instances: int | None


def study_row(item: dict[str, Any]) -> StudyRow:
    """One QIDO-RS study result (DICOM JSON) as the table shows it."""
    def text(tag: str) -> str:
        value = element_value(item, tag)
        return "" if value is None else str(value)

    def number(tag: str) -> int | None:
        value = element_value(item, tag)
        return int(value) if isinstance(value, int | float | str) and str(value).lstrip("-").isdigit() else None

    modalities = item.get("00080061", {}).get("Value") or []
    return StudyRow(uid=text("0020000D"), patient_name=person_name(item.get("00100010")),
                    patient_id=text("00100020"), birth_date=shown_date(text("00100030")),
                    study_date=shown_date(text("00080020")), modalities=", ".join(str(m) for m in modalities),
                    description=text("00081030"), accession=text("00080050"),
                    series=number("00201206"), instances=number("00201208"))


def _keyset(request: Request) -> KeysetCache:
    cache = getattr(request.app.state, "ui_study_keyset", None)
    if not isinstance(cache, KeysetCache):
        cache = KeysetCache()
        request.app.state.ui_study_keyset = cache
    return cache


def find_studies(request: Request, search: Search) -> tuple[list[StudyRow], bool]:
    """One page of studies for ``search`` and whether more exist (blocking: call from a worker thread)."""
    archive = request.app.state.archive
    keyword = SORTS[search.sort][1]
    spec = archive.query.build_spec(Level.STUDY, search.keys(), return_keys=_RETURN, fuzzy=search.fuzzy_name,
                                    limit=search.limit, offset=search.offset, ignore_case=("StudyDescription",))
    spec.order_by, spec.descending = keyword, search.order == "desc"
    cache = _keyset(request)
    signature = (tuple(sorted(search.keys().items())), search.fuzzy_name, search.order)
    if keyword is None and search.offset:
        after = cache.get(signature, search.offset)
        if after is not None:
            spec.after_id, spec.offset = after, 0
    results, end = archive.query.search_page(spec)
    if keyword is None and end.last_id is not None:
        cache.put(signature, search.offset + len(results), end.last_id)
    return [study_row(item) for item in results], end.more


@router.get("/studies")
async def studies_page(request: Request, user: Annotated[PageUser, Depends(require_page("read"))]) -> Response:
    if user.principal.study is not None:
        raise HTTPException(403, "this link opens one study only")
    try:
        search = parse_search(dict(request.query_params))
        rows, more = await run_in_threadpool(find_studies, request, search)
        error = None
    except InvalidQuery as exc:
        search, rows, more, error = Search(), [], False, exc.message
    return render(request, "studies.html", status_code=400 if error else 200, search=search, rows=rows, more=more,
                  error=error, sorts=SORTS, page_sizes=PAGE_SIZES, modalities=MODALITIES,
                  values=dict(request.query_params))
