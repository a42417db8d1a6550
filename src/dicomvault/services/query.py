"""The single query engine behind C-FIND, QIDO-RS and the CLI ``find``.

Front ends hand over keyword → raw value pairs exactly as DICOM writes them (``DOE*``, ``20200101-``, UID lists
with backslashes); this service applies PS3.4 C.2.2.2 through ``domain.query`` and the index port, then builds
DICOM JSON results. Indexed attributes come from index columns; any other requested attribute comes from the
DICOM JSON cached at ingest (one representative instance for study and series level), never from blobs.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import orjson
from pydicom.datadict import dictionary_VR, tag_for_keyword

from dicomvault.domain.errors import InvalidQuery
from dicomvault.domain.query import QuerySpec, dicom_wildcard_match, fold_pn, parse_condition
from dicomvault.domain.tags import BY_KEYWORD, DEFAULT_RETURN, Attribute, Level, resolve_keyword
from dicomvault.ports.index import IndexRepository
from dicomvault.services.dicom_json import indexed_element

MAX_LIMIT = 10_000


@dataclass(frozen=True)
class EncodedResult:
    """One result already serialized: a compact DICOM JSON object (UTF-8) and the Study Instance UID it
    describes (front ends add what depends on the request, such as QIDO-RS's RetrieveURL)."""

    json: bytes
    study_uid: str


_STUDY_DEFAULT = frozenset(DEFAULT_RETURN[Level.STUDY])


class QueryService:
    def __init__(self, index: IndexRepository) -> None:
        self.index = index

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
    ) -> QuerySpec:
        """Turn matching keys (keyword or tag → raw DICOM value) into a ``QuerySpec``; raises ``InvalidQuery``."""
        spec = QuerySpec(level=level, include_all=include_all, limit=limit, offset=max(0, offset))
        for name, raw in keys.items():
            try:
                _, keyword = resolve_keyword(name)
            except KeyError:
                raise InvalidQuery(f"unknown attribute {name!r}") from None
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
            if cond is not None:
                spec.conditions.append(cond)
        for name in return_keys:
            try:
                _, keyword = resolve_keyword(name)
            except KeyError:
                raise InvalidQuery(f"unknown attribute {name!r}") from None
            if keyword not in spec.return_keys:
                spec.return_keys.append(keyword)
        return spec

    def search(self, spec: QuerySpec) -> list[dict[str, Any]]:
        """Run ``spec``; results are DICOM JSON objects (tag hex → element), in a stable order."""
        return self.search_page(spec)[0]

    def search_page(self, spec: QuerySpec) -> tuple[list[dict[str, Any]], int | None]:
        """Like ``search``, plus the internal id of the last result: a keyset cursor for the next page
        (``QuerySpec.after_id``), so that deep pages (QIDO-RS ``offset``) need no OFFSET scan."""
        if spec.limit is not None and spec.limit > MAX_LIMIT:
            spec.limit = MAX_LIMIT
        post_filter = bool(spec.extra_filters)
        page_limit, page_offset = spec.limit, spec.offset
        if post_filter:
            spec.limit, spec.offset = None, 0
        rows = self.index.find(spec)
        wanted = self._wanted(spec)
        plan = self._plan(spec, wanted)
        need_cache = post_filter or spec.include_all or self._needs_cache(wanted)
        results: list[dict[str, Any]] = []
        ids: list[int] = []
        for row in rows:
            cached = self._cached(spec.level, row, needed=need_cache)
            if post_filter and not self._extra_match(spec, cached):
                continue
            if spec.include_all:
                results.append(self._to_json(spec, row, wanted, cached))
            else:
                results.append(self._fast_json(plan, row, cached))
            ids.append(int(row["_id"]))
        if post_filter:
            end = None if page_limit is None else page_offset + page_limit
            results, ids = results[page_offset:end], ids[page_offset:end]
        return results, (ids[-1] if ids else None)

    def search_page_encoded(self, spec: QuerySpec) -> tuple[list[EncodedResult], int | None] | None:
        """Like ``search_page`` but with each result serialized, taken from the index's cached default answer
        of each study; ``None`` when ``spec`` asks for something the cache does not hold (not STUDY level,
        ``includefield`` beyond the default return keys, matching on non-indexed attributes), and the caller
        then uses ``search_page``. The bytes equal ``orjson.dumps`` of what ``search_page`` returns."""
        if not self.answers_from_cache(spec):
            return None
        if spec.limit is not None and spec.limit > MAX_LIMIT:
            spec.limit = MAX_LIMIT
        found = self.index.find_study_json(spec)
        plan: list[tuple[str, str, Attribute | None, str]] | None = None
        out: list[EncodedResult] = []
        for _, study_uid, answer in found:
            if isinstance(answer, str):
                out.append(EncodedResult(answer.encode("utf-8"), study_uid))
                continue
            if plan is None:  # a study without a current cached answer: built from its columns
                plan = self._plan(spec, self._wanted(spec))
            out.append(EncodedResult(orjson.dumps(self._fast_json(plan, answer, {})), study_uid))
        return out, (found[-1][0] if found else None)

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

    def _cached(self, level: Level, row: Mapping[str, Any], *, needed: bool) -> dict[str, Any]:
        if not needed or level == Level.PATIENT:
            return {}
        if level == Level.IMAGE:
            text = row.get("_metadata")
        elif level == Level.STUDY:
            text = self.index.representative_metadata(study_uid=row["StudyInstanceUID"])
        else:
            text = self.index.representative_metadata(
                study_uid=row["StudyInstanceUID"], series_uid=row["SeriesInstanceUID"]
            )
        return json.loads(text) if text else {}

    @staticmethod
    def _extra_match(spec: QuerySpec, cached: Mapping[str, Any]) -> bool:
        for keyword, raw in spec.extra_filters:
            tag = tag_for_keyword(keyword)
            elem = cached.get(f"{tag:08X}") if tag is not None else None
            values = (elem or {}).get("Value", [])
            texts = [v.get("Alphabetic", "") if isinstance(v, dict) else str(v) for v in values]
            vr = dictionary_VR(tag) if tag is not None else ""
            patterns = raw.split("\\")
            ok = False
            for text in texts:
                for pat in patterns:
                    if vr == "PN":
                        if dicom_wildcard_match(fold_pn(pat), fold_pn(text)):
                            ok = True
                    elif dicom_wildcard_match(pat, text):
                        ok = True
            if not ok:
                return False
        return True

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
