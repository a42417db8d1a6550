"""Several named blob stores seen as one: new objects go to the ingest store, reads come from the fastest store
that holds a copy, removals reach every store.

Why a composite of the blob store port rather than a store lookup in every reader: retrieval (C-GET, C-MOVE,
WADO-RS instances, frames, bulk data, rendered, WADO-URI), ingest's duplicate comparison and fixity already read
through ``ports.blobs.BlobStore``; answering "which store?" in one place keeps every one of them transparent to
tiers, and a single-store archive pays one dictionary lookup. Reads try the stores in ascending read priority
(local disks before object storage before archive storage classes): a blob that is not on a store costs a failed
``open`` there (a ``stat`` on a disk), which is far cheaper than asking the index which stores hold it on every
frame. The index stays the record of *verified* copies (``domain.tiers``); this class never decides what is a
copy, it only finds bytes.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import BinaryIO, TypeVar

from dicomvault.domain.errors import NotFound, NotRestored
from dicomvault.ports.blobs import BlobStore, PutResult

_T = TypeVar("_T")


class TieredBlobs:
    """A ``BlobStore`` over named stores (``stores`` in read order; ``ingest`` names the store puts go to)."""

    def __init__(self, stores: Mapping[str, BlobStore], *, ingest: str, read_order: list[str] | None = None) -> None:
        if ingest not in stores:
            raise ValueError(f"ingest store {ingest!r} is not among the stores ({', '.join(stores)})")
        order = read_order if read_order is not None else list(stores)
        if sorted(order) != sorted(stores):
            raise ValueError("read_order must name every store once")
        self._stores = {name: stores[name] for name in order}
        self.ingest_name = ingest
        self.ingest_store = stores[ingest]

    # -- naming ----------------------------------------------------------------------------------------------

    @property
    def names(self) -> list[str]:
        """Store names in read order."""
        return list(self._stores)

    def store(self, name: str) -> BlobStore:
        try:
            return self._stores[name]
        except KeyError:
            raise NotFound(f"no store named {name!r}") from None

    def items(self) -> list[tuple[str, BlobStore]]:
        return list(self._stores.items())

    # -- the BlobStore port ----------------------------------------------------------------------------------

    def put(self, stream: BinaryIO) -> PutResult:
        return self.ingest_store.put(stream)

    def open(self, key: str) -> BinaryIO:
        return self._first(lambda store: store.open(key), key)

    def read_range(self, key: str, offset: int, length: int) -> bytes:
        return self._first(lambda store: store.read_range(key, offset, length), key)

    def locate(self, key: str) -> str:
        """The name of the first store (in read order) holding ``key``; raises ``NotFound``."""
        for name, store in self._stores.items():
            if store.exists(key):
                return name
        raise NotFound(f"blob {key} not found on any store")

    def exists(self, key: str) -> bool:
        return any(store.exists(key) for store in self._stores.values())

    def size(self, key: str) -> int:
        return self._first(lambda store: store.size(key), key)

    def delete(self, key: str) -> None:
        """Delete ``key`` on every store (the blob removal protocol removes a blob wherever it is); every store is
        tried, and the first error is raised afterwards so that the removal is retried."""
        first: Exception | None = None
        for store in self._stores.values():
            try:
                store.delete(key)
            except Exception as exc:
                first = first or exc
        if first is not None:
            raise first

    def iter_keys(self) -> Iterator[str]:
        """Keys held by any store, each once (memory: the keys of every store but the last)."""
        if len(self._stores) == 1:
            yield from self.ingest_store.iter_keys()
            return
        seen: set[str] = set()
        for store in self._stores.values():
            for key in store.iter_keys():
                if key not in seen:
                    seen.add(key)
                    yield key

    def local_path(self, key: str) -> Path | None:
        """The path of a local copy (first in read order) that exists, else None (readers then stream ``open``)."""
        for store in self._stores.values():
            path = store.local_path(key)
            if path is not None and path.exists():
                return path
        return None

    def describe(self) -> str:
        if len(self._stores) == 1:
            return self.ingest_store.describe()
        return ", ".join(f"{name}={store.describe()}" for name, store in self._stores.items())

    # -- helpers ---------------------------------------------------------------------------------------------

    def _first(self, read: Callable[[BlobStore], _T], key: str) -> _T:
        """``read`` on the first store that has the blob. A store that holds it only in an archive storage class
        (``NotRestored``) is skipped for a later readable copy; if none has one, that is the answer."""
        archived: NotRestored | None = None
        for store in self._stores.values():
            try:
                return read(store)
            except NotFound:
                continue
            except NotRestored as exc:
                archived = archived or exc
        if archived is not None:
            raise archived
        raise NotFound(f"blob {key} not found")

