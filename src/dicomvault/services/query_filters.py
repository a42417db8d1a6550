"""Matching keys the index does not hold as columns, against the DICOM JSON cached per instance.

``QueryService`` narrows the candidates in SQL with every indexed key first; what remains (``QuerySpec.
extra_filters``, e.g. InstitutionName) is matched here, row by row, with the linear wildcard matcher. Patterns are
compiled once per query, not once per row. PS3.4 C.2.2.2: a key matches when any value of the attribute matches
any of the key's values (``A\\B``); person names compare case- and accent-folded, everything else exactly.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from pydicom.datadict import dictionary_VR, tag_for_keyword

from dicomvault.domain.query import fold_pn
from dicomvault.domain.wildcard import WildcardPattern


@dataclass(frozen=True)
class _Filter:
    tag_hex: str
    person_name: bool
    patterns: tuple[WildcardPattern, ...]

    def match(self, cached: Mapping[str, Any]) -> bool:
        element = cached.get(self.tag_hex) or {}
        for value in element.get("Value", ()):
            if value is None:
                continue
            text = str(value.get("Alphabetic", "")) if isinstance(value, dict) else str(value)
            if self.person_name:
                text = fold_pn(text)
            if any(p.match(text) for p in self.patterns):
                return True
        return False


class CachedFilters:
    """The non-indexed keys of one query, compiled; ``match`` tells whether a row's cached metadata passes all."""

    def __init__(self, extra_filters: list[tuple[str, str]]) -> None:
        filters: list[_Filter] = []
        for keyword, raw in extra_filters:
            tag = tag_for_keyword(keyword)
            if tag is None:  # build_spec resolved every keyword: cannot happen, and then nothing can match
                filters.append(_Filter("", False, ()))
                continue
            person_name = str(dictionary_VR(tag)) == "PN"
            values = raw.split("\\")
            patterns = tuple(WildcardPattern(fold_pn(v) if person_name else v) for v in values)
            filters.append(_Filter(f"{tag:08X}", person_name, patterns))
        self._filters = tuple(filters)

    def __bool__(self) -> bool:
        return bool(self._filters)

    def may_match(self, text: str) -> bool:
        """A cheap necessary condition on the cached JSON text, checked before parsing it: every filtered
        attribute must occur in it (an absent attribute matches no value). Spares the parse of most candidates
        when the attribute is rare."""
        return all(f'"{f.tag_hex}"' in text for f in self._filters)

    def match(self, cached: Mapping[str, Any]) -> bool:
        return all(f.match(cached) for f in self._filters)
