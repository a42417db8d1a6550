"""In-process blob store for unit tests and ephemeral runs (same contract as the durable stores)."""

from __future__ import annotations

import hashlib
import io
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

from dicomvault.adapters.blobs.keys import check_key
from dicomvault.domain.errors import NotFound
from dicomvault.domain.records import BlobInfo
from dicomvault.ports.blobs import PutResult


class MemoryBlobStore:
    def __init__(self) -> None:
        self._data: dict[str, bytes] = {}
        self._lock = threading.Lock()

    def local_path(self, key: str) -> Path | None:
        return None

    def describe(self) -> str:
        return "memory://"

    def put(self, stream: BinaryIO) -> PutResult:
        data = stream.read()
        key = hashlib.sha256(data).hexdigest()
        with self._lock:
            created = key not in self._data
            self._data.setdefault(key, data)
        return PutResult(BlobInfo(key, len(data), key), created)

    def _get(self, key: str) -> bytes:
        try:
            return self._data[check_key(key)]
        except KeyError:
            raise NotFound(f"blob {key} not found") from None

    def open(self, key: str) -> BinaryIO:
        return io.BytesIO(self._get(key))

    def read_range(self, key: str, offset: int, length: int) -> bytes:
        data = self._get(key)
        if offset + length > len(data):
            raise NotFound(f"blob {key} is shorter than {offset + length} bytes")
        return data[offset : offset + length]

    def exists(self, key: str) -> bool:
        return check_key(key) in self._data

    def size(self, key: str) -> int:
        return len(self._get(key))

    def delete(self, key: str) -> None:
        with self._lock:
            self._data.pop(check_key(key), None)

    def iter_keys(self) -> Iterator[str]:
        yield from sorted(self._data)
