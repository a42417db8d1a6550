"""The share link tables (migration 0016): what the adapter writes matches the migrated schema, and moving the index
to another database (``dicomvault index migrate``) copies links and their uses."""

from __future__ import annotations

import io
from datetime import UTC, datetime
from pathlib import Path

import pytest

from dicomvault.adapters.index.engine import create_index_engine, migrate
from dicomvault.adapters.index.shares import SqlShareStore
from dicomvault.adapters.index.transfer import copy_index
from dicomvault.bootstrap import Archive
from dicomvault.services.auth import Principal
from dicomvault.services.shares import ShareRefused
from tests.helpers import make_ct

OWNER = Principal("alice", frozenset({"write", "read"}), "token")


def test_links_and_uses_are_copied_to_another_index(archive: Archive, tmp_path: Path) -> None:
    study = "1.2.826.0.1.3680043.8.498.4242"
    archive.ingest.ingest(io.BytesIO(make_ct(study=study)), source="test")
    assert archive.shares is not None
    created = archive.shares.create(OWNER, study, password="pass-word")
    with pytest.raises(ShareRefused):
        archive.shares.open(created.secret, "nope", "203.0.113.5")
    archive.shares.open(created.secret, "pass-word", "203.0.113.5")
    store = archive.shares.store
    assert isinstance(store, SqlShareStore)
    target = create_index_engine(f"sqlite:///{tmp_path / 'target.sqlite'}")
    try:
        migrate(target)
        counts = copy_index(store.engine, target)
        assert counts["share_links"] == 1 and counts["share_uses"] == 2
        copied = SqlShareStore(target)
        [link] = copied.all()
        assert link == archive.shares.get(created.record.id)
        assert link.uses == 1 and link.failed_attempts == 0 and link.last_used_at is not None
        assert [u.what for u in copied.uses(link.id)] == ["opened", "wrong_password"]
        assert copied.revoke(link.id, datetime.now(UTC)) and not copied.revoke(link.id, datetime.now(UTC))
    finally:
        target.dispose()
