"""Storage migration between two filesystem stores: the source copy is deleted only once the target copy hashes
to the recorded SHA-256 (never on a size check alone)."""

from __future__ import annotations

import io
from pathlib import Path

import pytest

from dicomvault.adapters.blobs.filesystem import FilesystemBlobStore
from dicomvault.bootstrap import Archive, build_storage_migration
from dicomvault.services.storage_migration import Outcome
from tests.helpers import make_ct


def test_delete_source_keeps_the_copy_whose_target_fails_its_checksum(archive: Archive, tmp_path: Path) -> None:
    if not isinstance(archive.tiers.store("default") if archive.tiers else archive.blobs, FilesystemBlobStore):
        pytest.skip("damaging a copy in place needs a filesystem store")
    for i in range(3):
        archive.ingest.ingest(io.BytesIO(make_ct(seed=300 + i)), source="t")
    target = FilesystemBlobStore(tmp_path / "target")
    migration = build_storage_migration(archive, target, archive.blobs)
    copied = migration.run()
    assert copied.complete
    victim = next(b for _, b in archive.index.iter_blob_refs())
    path = target.local_path(victim.key)
    assert path is not None
    damaged = bytearray(path.read_bytes())
    damaged[-1] ^= 0xFF  # same size, other bytes: a size check cannot see it
    path.chmod(0o644)
    path.write_bytes(bytes(damaged))

    report = migration.delete_source()
    assert archive.blobs.exists(victim.key), "the source copy of a damaged target copy was deleted"
    assert sum(1 for _ in archive.blobs.iter_keys()) == 1
    assert report.deleted == 2
    [failure] = report.failures
    assert failure.blob.key == victim.key and failure.outcome is Outcome.FAILED
    assert "SHA-256" in failure.detail
