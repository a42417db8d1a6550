"""Plain records passed between services, ports and front ends (no ORM objects cross a boundary)."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from enum import Enum
from typing import Any


@dataclass(frozen=True)
class BlobInfo:
    """A stored blob: content-addressed ``key``, its length and its SHA-256 (hex)."""

    key: str
    size: int
    sha256: str


class DuplicatePolicy(str, Enum):
    """What to do when a SOP Instance UID arrives again with *different* content (identical content is always
    a success that stores nothing)."""

    REJECT = "reject"
    REPLACE = "replace"
    KEEP_BOTH = "keep-both"


class StoreOutcome(str, Enum):
    STORED = "stored"
    DUPLICATE = "duplicate"  # same UID, same bytes: success, nothing written twice
    REPLACED = "replaced"  # same UID, new bytes replaced the old ones (policy replace)
    VERSIONED = "versioned"  # same UID, new bytes are current, old bytes kept as a prior version (keep-both)


@dataclass(frozen=True)
class FrameIndex:
    """Where each frame's bytes lie inside the stored blob, so a frame is one byte-range read.

    For native pixel data each frame is one (offset, length) span; for encapsulated pixel data each frame is the
    list of its fragments' (offset, length) spans (fragment item headers excluded).
    """

    encapsulated: bool
    frames: tuple[tuple[tuple[int, int], ...], ...]

    def to_json(self) -> str:
        return json.dumps({"e": self.encapsulated, "f": self.frames}, separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str) -> FrameIndex:
        data = json.loads(text)
        return cls(bool(data["e"]), tuple(tuple((int(o), int(n)) for o, n in fr) for fr in data["f"]))


@dataclass
class InstanceEntry:
    """Everything ingest hands the index for one instance, keyed by index column (see ``domain.tags``)."""

    patient: dict[str, Any]
    study: dict[str, Any]
    series: dict[str, Any]
    instance: dict[str, Any]
    blob: BlobInfo
    metadata_json: str
    frame_index: FrameIndex | None = None
    source: str = ""


@dataclass(frozen=True)
class StoreResult:
    outcome: StoreOutcome
    #: blobs the index no longer references after the commit, recorded as pending removals in that same
    #: transaction; the caller removes them through the claim protocol (``services.lifecycle``).
    released_blobs: tuple[BlobInfo, ...] = ()


@dataclass(frozen=True)
class RemovalRound:
    """The latest claimed removal of one blob: ``claim`` names it; ``finished`` once its blob was deleted."""

    claim: str
    finished: bool


@dataclass(frozen=True)
class BlobClaim:
    """What ``IndexRepository.claim_blob_removals`` granted: the blobs the caller may now delete under ``claim``,
    and those it asked for that an index row references again (kept)."""

    claim: str
    keys: tuple[str, ...] = ()
    referenced: tuple[str, ...] = ()


@dataclass(frozen=True)
class InstanceRecord:
    """What retrieval needs to know about a stored instance."""

    patient_id: str | None
    study_uid: str
    series_uid: str
    sop_uid: str
    sop_class_uid: str
    transfer_syntax_uid: str
    blob: BlobInfo
    number_of_frames: int | None = None
    rows: int | None = None
    columns: int | None = None
    instance_number: int | None = None
    frame_index: FrameIndex | None = None


@dataclass(frozen=True)
class ArchiveStats:
    patients: int
    studies: int
    series: int
    instances: int
    bytes: int
    by_modality: dict[str, tuple[int, int]] = field(default_factory=dict)  # modality -> (instances, bytes)
