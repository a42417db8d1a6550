"""The bundle of services a front end receives (built by ``bootstrap``; front ends never see adapters)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from dicomvault.ports.blobs import BlobStore
from dicomvault.ports.index import IndexRepository
from dicomvault.ports.jobs import JobQueue
from dicomvault.services.ingest import IngestService
from dicomvault.services.lifecycle import BlobRemover, LifecycleService
from dicomvault.services.query import QueryService
from dicomvault.services.retrieve import RetrieveService
from dicomvault.services.tokens import TokenService
from dicomvault.settings import Settings


@dataclass
class Archive:
    """The services a front end may use, built from one ``Settings``."""

    settings: Settings
    index: IndexRepository
    blobs: BlobStore
    ingest: IngestService
    query: QueryService
    retrieve: RetrieveService
    #: deleting studies, series, instances (DICOMweb DELETE)
    lifecycle: LifecycleService
    #: the only way blobs leave the store (claim → delete → finish), and its periodic sweep
    remover: BlobRemover
    #: API tokens (None when the archive is built without an index database that stores them)
    tokens: TokenService | None = None
    #: durable background jobs on the index database (``jobs.worker.start_worker(archive)`` runs them)
    jobs: JobQueue | None = None
    extras: dict[str, object] = field(default_factory=dict)
    #: called by ``close`` (the composition root registers engine disposal here)
    closers: list[Callable[[], None]] = field(default_factory=list)

    def close(self) -> None:
        for closer in self.closers:
            closer()
        self.closers.clear()
