"""Plain records passed between services, ports and front ends (no ORM objects cross a boundary)."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum
from typing import Any

from dicomvault.domain.frame_index import FrameIndex


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


class PixelLengthPolicy(str, Enum):
    """What ingest does with native pixel data shorter than its header describes."""

    REJECT = "reject"
    ACCEPT_AND_FLAG = "accept-and-flag"  # stored, answered with a warning, the problem kept in the index


class StoreOutcome(str, Enum):
    STORED = "stored"
    DUPLICATE = "duplicate"  # same UID, same bytes: success, nothing written twice
    REPLACED = "replaced"  # same UID, new bytes replaced the old ones (policy replace)
    VERSIONED = "versioned"  # same UID, new bytes are current, old bytes kept as a prior version (keep-both)


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
    #: the named store the blob was put on (``domain.tiers``), and whether that put wrote it (False: identical
    #: bytes were already there); the index records the copy (see ``IndexRepository.store_instance``)
    store: str = "default"
    blob_created: bool = True


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
class OriginalForm:
    """The object as received, for an instance whose blob holds a losslessly compressed form of it (issue #11
    item 4, ``services.compression``): its transfer syntax, size and SHA-256, and the layout of its native frames
    (``dicom.lossless.FrameLayout.as_dict()``), enough to give back any frame bit for bit."""

    syntax: str
    size: int
    sha256: str
    layout: dict[str, Any]
    #: the original Pixel Data value's length, its pad byte included (the frames, then zero bytes up to it)
    pixel_length: int = 0


@dataclass(frozen=True)
class OriginalRecipe:
    """Everything that rebuilds the received object from its compressed blob, besides the frames: the original's
    bytes before the Pixel Data value (``head``) and after it (``tail``), and that value's length, pad byte included
    (the frames, then zero bytes up to it)."""

    form: OriginalForm
    head: bytes
    tail: bytes
    pixel_length: int


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
    #: where the frames lie (decoded from the first characters of the stored index: see ``domain.frame_index``)
    frame_index: FrameIndex | None = None
    #: why the pixel data cannot be decoded, for an object stored by the ``accept-and-flag`` policy
    pixel_problem: str | None = None
    #: the object as received, when the blob holds a losslessly compressed form of it (None: the blob is it)
    original: OriginalForm | None = None


@dataclass(frozen=True)
class ArchiveStats:
    patients: int
    studies: int
    series: int
    instances: int
    bytes: int
    by_modality: dict[str, tuple[int, int]] = field(default_factory=dict)  # modality -> (instances, bytes)
