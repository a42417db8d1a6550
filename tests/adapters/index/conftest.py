"""Fixtures of the index adapter tests: ``arc``, an archive on the test's index (SQLite or PostgreSQL,
``any_index_url``) and a memory blob store; ``store_path``, every new instance through the hot path or the Core
path. A module may define its own ``arc`` (it overrides this one)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from dicomvault.adapters.index.hot_store import HotStore
from dicomvault.bootstrap import Archive
from tests.adapters.index.tiers_support import _archive


@pytest.fixture
def arc(tmp_path: Path, any_index_url: str) -> Iterator[Archive]:
    a = _archive(tmp_path, any_index_url)
    yield a
    a.close()


@pytest.fixture(params=["hot", "core"])
def store_path(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Every new instance through the hot path (as ingest does), or through the Core path (the reference)."""
    if request.param == "core":
        monkeypatch.setattr(HotStore, "store", lambda *args, **kwargs: None)
    return str(request.param)
