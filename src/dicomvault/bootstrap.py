"""Composition root: Settings → adapters → services. The only module that imports adapters.

Front ends receive an ``Archive`` (a plain bundle of services), never a repository or a blob store.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlparse

from sqlalchemy import Engine

from dicomvault.adapters.blobs.filesystem import FilesystemBlobStore
from dicomvault.adapters.blobs.memory import MemoryBlobStore
from dicomvault.adapters.index.engine import create_index_engine, migrate
from dicomvault.adapters.index.repository import SqlIndexRepository
from dicomvault.ports.blobs import BlobStore
from dicomvault.ports.index import IndexRepository
from dicomvault.services.ingest import IngestService
from dicomvault.services.query import QueryService
from dicomvault.services.retrieve import RetrieveService
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
    engine: Engine | None = None
    extras: dict[str, object] = field(default_factory=dict)

    def close(self) -> None:
        if self.engine is not None:
            self.engine.dispose()


def build_blob_store(url: str, settings: Settings) -> BlobStore:
    parsed = urlparse(url)
    if parsed.scheme == "file":
        return FilesystemBlobStore(Path(parsed.path), fsync=settings.fsync)
    if parsed.scheme == "memory":
        return MemoryBlobStore()
    raise ValueError(f"unsupported storage URL scheme {parsed.scheme!r} (expected file://, s3:// or memory://)")


def build_archive(settings: Settings, *, run_migrations: bool = True) -> Archive:
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    engine = create_index_engine(settings.resolved_index_url, pool_size=settings.index_pool_size)
    if run_migrations:
        migrate(engine)
    index = SqlIndexRepository(engine)
    blobs = build_blob_store(settings.resolved_storage_url, settings)
    if isinstance(blobs, FilesystemBlobStore):
        blobs.sweep_temporary()
    return Archive(
        settings=settings,
        index=index,
        blobs=blobs,
        ingest=IngestService(index, blobs, policy=settings.duplicate_policy),
        query=QueryService(index),
        retrieve=RetrieveService(index, blobs),
        engine=engine,
    )
