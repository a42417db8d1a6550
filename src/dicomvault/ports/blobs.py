"""The blob store port: a tiny, storage-agnostic contract (after Orthanc's IStorageArea and obspec).

Keys are chosen from content (SHA-256), never from patient data, so storage paths leak nothing and identical
content is stored once. Compression, tiering and checksum policy live above this port, not in each adapter.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Protocol

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
