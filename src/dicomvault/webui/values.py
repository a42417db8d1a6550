"""DICOM JSON values as the pages show them: a person name with its parts spaced, a date with dashes.

Why here: query results reach the pages as DICOM JSON (the one form ``QueryService`` answers in); the pages need
the first value of an element and human forms of PN and DA, and nothing else of DICOM's encodings.
"""

from __future__ import annotations

from typing import Any


def element_value(item: dict[str, Any], tag: str) -> Any:
    """The first value of element ``tag`` of a DICOM JSON object, or None."""
    values = (item.get(tag) or {}).get("Value")
    return values[0] if values else None


def person_name(element: dict[str, Any] | None) -> str:
    """A PN element's alphabetic form, ``Doe^John`` shown as ``Doe, John`` (empty parts dropped)."""
    values = (element or {}).get("Value") or []
    if not values:
        return ""
    first = values[0]
    text = first.get("Alphabetic", "") if isinstance(first, dict) else str(first)
    parts = [p.strip() for p in str(text).split("^")]
    family, rest = parts[0], " ".join(p for p in parts[1:] if p)
    return f"{family}, {rest}" if family and rest else family or rest


def shown_date(value: str | None) -> str:
    """``20240102`` as ``2024-01-02``; anything else as it is."""
    text = (value or "").strip()
    if len(text) == 8 and text.isdigit():
        return f"{text[:4]}-{text[4:6]}-{text[6:]}"
    return text


def shown_bytes(count: int) -> str:
    """A byte count for people: ``1.5 MB`` (decimal units, as disks are sold)."""
    size = float(count)
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if size < 1000 or unit == "TB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1000
    return f"{count} B"
