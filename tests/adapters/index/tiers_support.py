"""Shared pieces of the index tier tests (``test_index_tiers*.py``): an archive on the test's index, ingest helpers
and the targets the tests use."""

from __future__ import annotations

import io
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from dicomvault.adapters.index.repository import SqlIndexRepository
from dicomvault.bootstrap import Archive, build_archive
from dicomvault.domain.records import DuplicatePolicy, InstanceEntry
from dicomvault.domain.tags import Level
from dicomvault.domain.tiers import CopyTarget, StudyCondition
from dicomvault.ports.index import IndexRepository
from dicomvault.services import header as hdr
from dicomvault.settings import Settings
from tests.helpers import make_ct

ARCHIVE = "archive"
COPY = CopyTarget((ARCHIVE,), exclusive=False)
MOVE = CopyTarget((ARCHIVE,), exclusive=True)
EVERY_STUDY = StudyCondition(min_bytes=0)


def _archive(tmp_path: Path, url: str, policy: DuplicatePolicy = DuplicatePolicy.REJECT) -> Archive:
    return build_archive(Settings.load(data_dir=tmp_path / "v", index_url=url, storage_url="memory://",
                                       duplicate_policy=policy))


def _index(a: Archive) -> SqlIndexRepository:
    assert isinstance(a.index, SqlIndexRepository)
    return a.index


def _entry(a: Archive, data: bytes, *, store: str = "default", created: bool = True, **instance: Any) -> InstanceEntry:
    """The entry ingest builds for ``data`` (blob put in the memory store), put on ``store``."""
    stream = io.BytesIO(data)
    parsed = hdr.parse_header(stream, a.ingest.limits)
    cols = hdr.index_columns(hdr.json_dict(parsed.dataset, parsed), parsed.transfer_syntax_uid)
    parsed.close()
    stream.seek(0)
    blob = a.blobs.put(stream).info
    return InstanceEntry(patient=cols[Level.PATIENT], study=cols[Level.STUDY], series=cols[Level.SERIES],
                         instance={**cols[Level.IMAGE], **instance}, blob=blob, metadata_json="{}",
                         store=store, blob_created=created)


def _stores(a: Archive, key: str) -> list[tuple[str, bool]]:
    """(store, verified?) of each recorded copy of ``key``."""
    return [(c.store, c.verified_at is not None) for c in a.index.blob_copies([key]).get(key, [])]


def _add(index: IndexRepository, key: str, store: str, *, verified_at: datetime | None = None,
         present: bool = True) -> bool:
    """``add_blob_copy`` as a tier copy calls it once the bytes are verified on ``store``."""
    return index.add_blob_copy(key, store, verified_at=verified_at or datetime.now(UTC), present=lambda: present)


def _drop(index: IndexRepository, key: str, store: str, deleted: list[str] | None = None) -> bool:
    """``drop_blob_copy`` whose byte deletion is recorded in ``deleted``."""
    return index.drop_blob_copy(key, store, delete=lambda: (deleted if deleted is not None else []).append(store))


def _ingest(a: Archive, *, source: str = "dimse:TEST", **kw: Any) -> Any:
    return a.ingest.ingest(io.BytesIO(make_ct(**kw)), source=source)
