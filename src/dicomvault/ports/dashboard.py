"""The storage figures port: aggregates over the index that the storage dashboard and ``/metrics`` show.

Why a port of its own (not more methods on ``IndexRepository``): these are read-only summaries for people and
scrapers, answered by a few GROUP BY statements chosen to stay cheap on a large index (``adapters.index.dashboard``
says which index serves which); nothing on the store or query paths depends on them.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Literal, Protocol

#: the label of instances whose series has no Modality, or that were stored without a source
UNKNOWN = "(none)"


@dataclass(frozen=True)
class Tally:
    """Instances and their bytes under one label (a day, a minute, a modality, a source, a store)."""

    label: str
    instances: int
    bytes: int


@dataclass(frozen=True)
class Totals:
    patients: int
    studies: int
    series: int
    instances: int
    bytes: int


class StorageFigures(Protocol):
    def totals(self) -> Totals:
        """Patients, studies, series, instances and bytes the index references."""
        ...

    def received(self, since: datetime, bucket: Literal["day", "minute"]) -> list[Tally]:
        """Instances stored at or after ``since`` (aware), counted per UTC day (label ``YYYY-MM-DD``) or minute
        (``YYYY-MM-DD HH:MM``), in time order; buckets without instances are left out."""
        ...

    def by_modality_and_source(self) -> tuple[list[Tally], list[Tally]]:
        """Every instance counted by its series' Modality and by its source (``UNKNOWN`` for none), largest
        first."""
        ...

    def by_store(self) -> list[Tally]:
        """Copies and their bytes per named store (a blob on two stores counts on both), by store name."""
        ...
