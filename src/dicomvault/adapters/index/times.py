"""Datetimes read back from the index: SQLite returns them naive (they were written in UTC), PostgreSQL aware.

One helper instead of a copy per SQL module: every record the adapters build carries aware UTC datetimes, whatever
the dialect.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import overload


@overload
def aware(value: datetime) -> datetime: ...


@overload
def aware(value: None) -> None: ...


@overload
def aware(value: datetime | None) -> datetime | None: ...


def aware(value: datetime | None) -> datetime | None:
    """``value`` with UTC as its time zone when it has none (None stays None)."""
    if value is not None and value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value
