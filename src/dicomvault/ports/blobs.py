"""The blob store port: a tiny, storage-agnostic contract (after Orthanc's IStorageArea and obspec).

Keys are chosen from content (SHA-256), never from patient data, so storage paths leak nothing and identical
content is stored once. Compression, tiering and checksum policy live above this port, not in each adapter.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import BinaryIO, Protocol, runtime_checkable

from dicomvault.domain.records import BlobInfo


@dataclass(frozen=True)
class PutResult:
    info: BlobInfo
    created: bool  # False when identical content was already stored (deduplicated)


class BlobStore(Protocol):
    """A content-addressed, write-once object store."""

    def put(self, stream: BinaryIO) -> PutResult:
        """Read ``stream`` to its end and store it durably under the key derived from its SHA-256.

        Returns only when the bytes are durable (fsync + atomic rename, or a completed object PUT). Never
        overwrites an existing key: identical content is detected and reported with ``created=False``.
        """
        ...

    def open(self, key: str) -> BinaryIO:
        """A streaming, readable file object; raises ``NotFound``."""
        ...

    def read_range(self, key: str, offset: int, length: int) -> bytes:
        """Exactly ``length`` bytes from ``offset`` (frames are served with one such read)."""
        ...

    def exists(self, key: str) -> bool: ...

    def size(self, key: str) -> int: ...

    def delete(self, key: str) -> None:
        """Remove a blob; deleting a missing key is not an error."""
        ...

    def iter_keys(self) -> Iterator[str]: ...

    def local_path(self, key: str) -> Path | None:
        """The blob's path when the store is a local filesystem (lets senders stream a file), else None."""
        ...

    def describe(self) -> str:
        """A URL-like description for logs and ``stats`` (no credentials)."""
        ...


@runtime_checkable
class Housekeeping(Protocol):
    """Optional capability of stores that can tell how old their files are and stage writes (the filesystem store).

    ``verify`` needs ages to tell garbage from work in progress on a running server: a blob written but not yet
    indexed (an ingest between its put and its commit) looks exactly like an orphan left by a crash, and a staged
    file being written looks like one a crash abandoned. Only what is older than a grace period is garbage.
    """

    def blob_age(self, key: str) -> float | None:
        """Seconds since the blob was written, or None if it does not exist."""
        ...

    def temporary_files(self, older_than: float = 0.0) -> list[str]:
        """Names of staged files untouched for ``older_than`` seconds."""
        ...

    def sweep_temporary(self, older_than: float = 3600.0) -> int:
        """Remove staged files untouched for ``older_than`` seconds; returns how many were removed."""
        ...


class RestoreState(str, Enum):
    READABLE = "readable"  # on a readable storage class, or restored
    ARCHIVED = "archived"  # on an archive storage class, no restore requested (or the restore expired)
    RESTORING = "restoring"  # a restore was requested and is in progress


@runtime_checkable
class Recallable(Protocol):
    """Optional capability of stores whose objects may need a restore before they can be read (S3 GLACIER and
    DEEP_ARCHIVE storage classes). Their ``open`` / ``read_range`` raise ``NotRestored`` until restored."""

    def restore_state(self, key: str) -> RestoreState:
        """Whether the blob can be read now; raises ``NotFound``."""
        ...

    def request_restore(self, key: str, *, days: int, tier: str) -> RestoreState:
        """Ask for a temporary readable copy for ``days`` days (``tier``: Expedited, Standard, Bulk); idempotent
        (a restore in progress or done is not requested again). Returns the state after the request."""
        ...
