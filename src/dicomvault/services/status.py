"""What the archive holds and whether its backends answer: the readiness probe, ``dicomvault stats`` and
``dicomvault storage info``.

Why a service: these are the only reads front ends made on the raw index and blob store; behind one object the
front ends keep to services, and a backend that cannot answer raises the same typed errors as everywhere else.
"""

from __future__ import annotations

from dicomvault.domain.records import ArchiveStats
from dicomvault.ports.blobs import BlobStore
from dicomvault.ports.index import IndexRepository
from dicomvault.services.storage_migration import store_usage


class StatusService:
    def __init__(self, index: IndexRepository, blobs: BlobStore) -> None:
        self._index = index
        self._blobs = blobs

    def ping(self) -> None:
        """Raise ``Unavailable`` if the index database does not answer."""
        self._index.ping()

    def stats(self) -> ArchiveStats:
        """Patients, studies, series, instances and bytes the index references (with a modality breakdown)."""
        return self._index.stats()

    def storage(self) -> str:
        """The blob store, described for people (no secrets): ``file:///…``, ``s3://bucket/prefix``."""
        return self._blobs.describe()

    def storage_usage(self) -> tuple[int, int]:
        """(objects, bytes) the blob store holds, referenced or not (a full listing: slow on a large store)."""
        return store_usage(self._blobs)
