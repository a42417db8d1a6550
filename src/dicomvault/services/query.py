"""The single query engine behind C-FIND, QIDO-RS, C-GET/C-MOVE selection and the CLI ``find``.

Front ends hand over keyword → raw value pairs exactly as DICOM writes them (``DOE*``, ``20200101-``, UID lists
with backslashes); this service applies PS3.4 C.2.2.2 through ``domain.query`` and the index port, then builds
DICOM JSON results. Indexed attributes come from index columns; any other requested attribute comes from the
DICOM JSON cached at ingest (one representative instance for study and series level), never from blobs.

Everything is bounded (``domain.query.QueryLimits``, from the settings):

* keys: pattern length, wildcards, number of values and of matching keys are checked in ``build_spec``
  (``QueryTooComplex``);
* results: a page (``search_page``) holds at most ``max_results``; a stream (``stream``, for C-FIND and retrieve
  selection) reads the index page by page (keyset on the row id) and stops with ``ResultLimitExceeded`` past the
  caller's maximum, so a broad query neither loads every row nor waits for the last one before answering;
* keys the index does not hold (``QuerySpec.extra_filters``): rows that pass the indexed conditions are examined
  in pages of ``SCAN_PAGE`` rows, with the cached metadata of a whole page read in one statement, until the page
  of results is full; at most ``max_scanned`` rows per request, after which the answer says it is incomplete
  (``PageEnd.complete``) or the stream ends with ``ResultLimitExceeded``.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, replace
from typing import Any

import orjson
from pydicom.datadict import dictionary_VR, tag_for_keyword

from dicomvault.domain.errors import InvalidQuery, QueryTooComplex, ResultLimitExceeded
from dicomvault.domain.query import MatchKind, QueryLimits, QuerySpec, check_key, parse_condition
from dicomvault.domain.tags import BY_KEYWORD, DEFAULT_RETURN, Attribute, Level, resolve_keyword
from dicomvault.ports.index import IndexRepository
from dicomvault.services.dicom_json import indexed_element
from dicomvault.services.query_filters import CachedFilters

#: Rows per index read when examining non-indexed keys or streaming: one statement (plus one for the cached
#: metadata at study/series level) per 500 rows; at image level a page holds the rows' metadata texts (a few KB
#: each), so memory stays around a few MB whatever the number of matches.
SCAN_PAGE = 500


@dataclass(frozen=True)
class EncodedResult:
    """One result already serialized: a compact DICOM JSON object (UTF-8) and the Study Instance UID it
    describes (front ends add what depends on the request, such as QIDO-RS's RetrieveURL)."""

    json: bytes
    study_uid: str


@dataclass(frozen=True)
class PageEnd:
    """Where a page of results ended.

    ``last_id`` is the keyset cursor for the page at ``offset + len(results)`` (``QuerySpec.after_id``): the
    internal id of the last result or, when the scan budget ran out before the page was full, of the last row
    examined (no match lies between the two, so either continues the walk); None when nothing was found.
    ``more``: further matches exist beyond this page, or may (the budget ran out before that was known).
    ``complete``: False when the budget ran out before the page was full, so matches may be missing from it.
    """

    last_id: int | None
    more: bool = False
    complete: bool = True


@dataclass
class _ScanState:
    """What one pass over the index examined (filled in while the pass is consumed)."""

    examined: int = 0
    last_id: int | None = None
    out_of_budget: bool = False


_STUDY_DEFAULT = frozenset(DEFAULT_RETURN[Level.STUDY])


class QueryService:
    def __init__(self, index: IndexRepository, limits: QueryLimits | None = None) -> None:
        self.index = index
        self.limits = limits or QueryLimits()

    def build_spec(
        self,
        level: Level,
        keys: Mapping[str, str],
        *,
        return_keys: Iterable[str] = (),
        include_all: bool = False,
        fuzzy: bool = False,
        limit: int | None = None,
        offset: int = 0,
        ignore_case: Iterable[str] = (),
    ) -> QuerySpec:
        """Turn matching keys (keyword or tag → raw DICOM value) into a ``QuerySpec``; raises ``InvalidQuery``, or
        ``QueryTooComplex`` for a query beyond ``limits`` (naming the key). Wildcards of the keywords in
        ``ignore_case`` match without regard to case (the pages; the DICOM front ends pass none)."""
        spec = QuerySpec(level=level, include_all=include_all, limit=limit, offset=max(0, offset))
        matching = values = 0
        for name, raw in keys.items():
            try:
                _, keyword = resolve_keyword(name)
            except KeyError:
                raise InvalidQuery(f"unknown attribute {name!r}") from None
            if raw.strip() not in ("", "*"):
                matching += 1
                values += check_key(keyword, raw, self.limits)
            attr = BY_KEYWORD.get(keyword)
            if attr is None:
                if raw.strip() not in ("", "*"):
                    spec.extra_filters.append((keyword, raw))
                spec.return_keys.append(keyword)
                continue
            if attr.level.depth > level.depth and attr.computed:
                raise InvalidQuery(f"{keyword} cannot be matched at {level.value} level")
            if attr.level.depth <= level.depth:
                spec.return_keys.append(keyword)
            cond = parse_condition(attr, raw, fuzzy=fuzzy and attr.vr == "PN")
            if cond is not None and keyword in ignore_case and cond.kind == MatchKind.WILDCARD:
                cond = replace(cond, ignore_case=True)
            if cond is not None:
                spec.conditions.append(cond)
        for name in return_keys:
            try:
                _, keyword = resolve_keyword(name)
            except KeyError:
                raise InvalidQuery(f"unknown attribute {name!r}") from None
            if keyword not in spec.return_keys:
                spec.return_keys.append(keyword)
        if matching > self.limits.max_keys:
            raise QueryTooComplex(f"more than {self.limits.max_keys} matching keys")
        if values > self.limits.max_values:
            raise QueryTooComplex(f"more than {self.limits.max_values} values in the query")
        return spec

    def search(self, spec: QuerySpec) -> list[dict[str, Any]]:
        """Run ``spec``; results are DICOM JSON objects (tag hex → element), in a stable order, at most
        ``limits.max_results`` (``search_page`` tells whether more exist)."""
        return self.search_page(spec)[0]

    def search_page(self, spec: QuerySpec) -> tuple[list[dict[str, Any]], PageEnd]:
        """One page of ``spec`` (``limit`` results, at most ``limits.max_results``; none given: that maximum)
        after ``offset`` matches or after the keyset cursor ``after_id``, plus where it ended (``PageEnd``): the
        cursor for the next page, whether more matches exist, whether the scan budget cut it short.

        Without non-indexed keys this is one SELECT of ``limit + 1`` rows (the extra row only tells whether more
        exist). With them, candidate rows are examined in pages until ``limit + 1`` matches are found, the rows
        run out or ``limits.max_scanned`` rows were examined."""
        limit = self._page_limit(spec)
        wanted = self._wanted(spec)
        plan = self._plan(spec, wanted)
        state = _ScanState()
        first_page = SCAN_PAGE if spec.extra_filters else limit + 1
        results: list[dict[str, Any]] = []
        last_result: int | None = None
        more = False
        for row, cached in self._matches(spec, state, wanted, first_page=first_page):
            if len(results) == limit:
                more = True
                break
            results.append(self._to_json(spec, row, wanted, cached) if spec.include_all
                           else self._fast_json(plan, row, cached))
            last_result = int(row["_id"])
        if state.out_of_budget and not more:
            more = True  # unknown: the budget ran out first
            if len(results) < limit:
                return results, PageEnd(state.last_id, more=True, complete=False)
        return results, PageEnd(last_result, more=more)

    def search_page_encoded(self, spec: QuerySpec) -> tuple[list[EncodedResult], PageEnd] | None:
        """Like ``search_page`` but with each result serialized, taken from the index's cached default answer
        of each study; ``None`` when ``spec`` asks for something the cache does not hold (not STUDY level,
        ``includefield`` beyond the default return keys, matching on non-indexed attributes), and the caller
        then uses ``search_page``. The bytes equal ``orjson.dumps`` of what ``search_page`` returns."""
        if not self.answers_from_cache(spec):
            return None
        limit = self._page_limit(spec)
        found = self.index.find_study_json(replace(spec, limit=limit + 1))
        more = len(found) > limit
        found = found[:limit]
        plan: list[tuple[str, str, Attribute | None, str]] | None = None
        out: list[EncodedResult] = []
        for _, study_uid, answer in found:
            if isinstance(answer, str):
                out.append(EncodedResult(answer.encode("utf-8"), study_uid))
                continue
            if plan is None:  # a study without a current cached answer: built from its columns
                plan = self._plan(spec, self._wanted(spec))
            out.append(EncodedResult(orjson.dumps(self._fast_json(plan, answer, {})), study_uid))
        return out, PageEnd(found[-1][0] if found else None, more=more)

    def stream(self, spec: QuerySpec, *, max_results: int) -> Iterator[dict[str, Any]]:
        """Every match of ``spec`` (its ``limit`` is ignored), read from the index ``SCAN_PAGE`` rows at a time,
        so the caller can answer the first before the last is read (C-FIND) and nothing holds them all.

        Raises ``ResultLimitExceeded`` once ``max_results`` matches were yielded and another exists, or when
        ``limits.max_scanned`` rows were examined for non-indexed keys before the end: the caller has then seen
        an incomplete answer and must say so."""
        if spec.order_by is not None:
            raise InvalidQuery("a stream of results is read in id order: not sorted")
        wanted = self._wanted(spec)
        plan = self._plan(spec, wanted)
        state = _ScanState()
        for count, (row, cached) in enumerate(self._matches(spec, state, wanted, first_page=SCAN_PAGE)):
            if count == max_results:
                raise ResultLimitExceeded(f"More than {max_results} matches: narrow the query")
            yield self._to_json(spec, row, wanted, cached) if spec.include_all else self._fast_json(plan, row, cached)
        if state.out_of_budget:
            raise ResultLimitExceeded(f"Examined {self.limits.max_scanned} records without finishing: narrow the "
                                      "query")

    @staticmethod
    def answers_from_cache(spec: QuerySpec) -> bool:
        """Whether the cached default study answers are exactly what ``spec`` returns."""
        return (spec.level == Level.STUDY and not spec.include_all and not spec.extra_filters
                and all(kw in _STUDY_DEFAULT for kw in spec.return_keys))

    def row_ids(self, rows: list[dict[str, Any]]) -> list[int]:
        return [int(r["_id"]) for r in rows]

    # -- helpers -----------------------------------------------------------------------------------------

    @staticmethod
    def _wanted(spec: QuerySpec) -> list[str]:
        wanted = list(DEFAULT_RETURN[spec.level])
        for kw in spec.return_keys:
            if kw not in wanted:
                wanted.append(kw)
        return wanted

    @staticmethod
    def _plan(spec: QuerySpec, wanted: list[str]) -> list[tuple[str, str, Attribute | None, str]]:
        """(tag hex, keyword, indexed attribute or None, VR) for every returned attribute, in tag order: worked
        out once per query rather than once per result row."""
        plan: dict[str, tuple[str, str, Attribute | None, str]] = {}
        for kw in wanted:
            attr = BY_KEYWORD.get(kw)
            if attr is not None and attr.level.depth <= spec.level.depth:
                plan[attr.tag_hex] = (attr.tag_hex, kw, attr, attr.vr)
                continue
            tag = tag_for_keyword(kw)
            if tag is None:
                continue
            try:
                vr = str(dictionary_VR(tag))
            except KeyError:
                continue
            plan.setdefault(f"{tag:08X}", (f"{tag:08X}", kw, None, vr))
        return [plan[k] for k in sorted(plan)]

    @staticmethod
    def _fast_json(
        plan: list[tuple[str, str, Attribute | None, str]], row: Mapping[str, Any], cached: Mapping[str, Any]
    ) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for tag_hex, kw, attr, vr in plan:
            if attr is not None:
                out[tag_hex] = indexed_element(attr, row.get(kw))
            else:
                out[tag_hex] = cached.get(tag_hex) or {"vr": vr}
        return out

    @staticmethod
    def _needs_cache(wanted: list[str]) -> bool:
        return any(kw not in BY_KEYWORD for kw in wanted)

    def _page_limit(self, spec: QuerySpec) -> int:
        maximum = self.limits.max_results
        return maximum if spec.limit is None else max(0, min(spec.limit, maximum))

    def _matches(
        self, spec: QuerySpec, state: _ScanState, wanted: list[str], *, first_page: int
    ) -> Iterator[tuple[Mapping[str, Any], dict[str, Any]]]:
        """(row, its cached metadata or {}) for each match of ``spec`` after ``offset`` matches (or after the cursor
        ``after_id``), in id order, read lazily: the index is asked for ``first_page`` rows, then ``SCAN_PAGE`` at
        a time after the last id seen, only while the consumer wants more.

        Without non-indexed keys SQL applies ``offset`` and every row read is a match. With them, the offset counts
        matches, so it is skipped here, and rows are examined against ``limits.max_scanned`` (``state``)."""
        filters = CachedFilters(spec.extra_filters)
        if spec.order_by is not None and filters:
            # the walk continues after the last id seen, which only means something in id order
            raise InvalidQuery(f"sorting on {spec.order_by} is possible with indexed keys only")
        need_cache = bool(filters) or spec.include_all or self._needs_cache(wanted)
        keyset = spec.after_id is not None
        skip = spec.offset if filters and not keyset else 0
        sql_offset = 0 if filters or keyset else spec.offset
        cursor, page = spec.after_id, first_page
        while True:
            n = page if not filters else min(page, self.limits.max_scanned - state.examined)
            if n <= 0:
                state.out_of_budget = True
                return
            rows = self.index.find(replace(spec, limit=n, offset=sql_offset, after_id=cursor))
            texts = self._cached_texts(spec.level, rows) if need_cache else {}
            for row in rows:
                row_id = int(row["_id"])
                state.last_id = row_id
                state.examined += 1
                text = texts.get(row_id)
                if filters and not (text and filters.may_match(text)):
                    continue
                # json, not orjson: a cached text may hold NaN (an FL/FD value), which only the stdlib parser reads
                meta: dict[str, Any] = json.loads(text) if text else {}
                if filters and not filters.match(meta):
                    continue
                if skip:
                    skip -= 1
                    continue
                yield row, meta
            if len(rows) < n or spec.order_by is not None:  # a sorted page is one statement (search_page)
                return
            cursor, page, sql_offset = int(rows[-1]["_id"]), SCAN_PAGE, 0

    def _cached_texts(self, level: Level, rows: list[dict[str, Any]]) -> dict[int, str]:
        """Row id → the row's cached DICOM JSON text: at image level from the row itself, at study and series level
        from a representative instance, for the whole page in one statement; none at patient level."""
        if level == Level.PATIENT or not rows:
            return {}
        if level == Level.IMAGE:
            return {int(r["_id"]): r["_metadata"] for r in rows if r.get("_metadata")}
        return self.index.representative_metadata_many(level, [int(r["_id"]) for r in rows])

    def _to_json(
        self, spec: QuerySpec, row: Mapping[str, Any], wanted: list[str], cached: Mapping[str, Any]
    ) -> dict[str, Any]:
        out: dict[str, Any] = {}
        if spec.include_all and cached:
            for tag_hex, elem in cached.items():
                if spec.level != Level.IMAGE and not self._belongs(spec.level, tag_hex):
                    continue
                if "BulkDataURI" in elem or "InlineBinary" in elem:
                    continue
                out[tag_hex] = elem
        for kw in wanted:
            attr = BY_KEYWORD.get(kw)
            if attr is not None and attr.level.depth <= spec.level.depth:
                out[attr.tag_hex] = indexed_element(attr, row.get(kw))
                continue
            tag = tag_for_keyword(kw)
            if tag is None:
                continue
            key = f"{tag:08X}"
            if key in cached:
                out[key] = cached[key]
            elif key not in out:
                try:
                    out[key] = {"vr": str(dictionary_VR(tag))}
                except KeyError:
                    continue
        return dict(sorted(out.items()))

    @staticmethod
    def _belongs(level: Level, tag_hex: str) -> bool:
        """Whether a cached attribute describes the study/series (not one instance) for ``includefield=all``."""
        tag = int(tag_hex, 16)
        attr = None
        for a in BY_KEYWORD.values():
            if a.tag == tag:
                attr = a
                break
        if attr is not None:
            return attr.level.depth <= level.depth
        group = tag >> 16
        if level == Level.STUDY:
            return group in (0x0010,) or tag in (0x00081030, 0x00080090, 0x00080050, 0x00200010, 0x00080020,
                                                 0x00080030, 0x00081032, 0x00080080, 0x00080005)
        return group in (0x0010,) or tag in (0x00080060, 0x0008103E, 0x00200011, 0x00180015, 0x00080021,
                                             0x00080031, 0x00200052, 0x00080070, 0x00081090, 0x00080005)


def parse_level(value: str) -> Level:
    try:
        return Level(value.strip().upper())
    except ValueError:
        raise InvalidQuery(f"unknown query level {value!r}") from None
