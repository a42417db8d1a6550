"""``services.blob_tiers.TieredBlobs``: named stores seen as one (puts to the ingest store, reads from the first
store in read order that holds the blob, deletes everywhere) — on real filesystem and in-memory stores."""

from __future__ import annotations

import io
from pathlib import Path
from typing import BinaryIO

import pytest

from dicomvault.adapters.blobs.filesystem import FilesystemBlobStore
from dicomvault.adapters.blobs.memory import MemoryBlobStore
from dicomvault.domain.errors import NotFound, NotRestored
from dicomvault.services.blob_copier import Throttle
from dicomvault.services.blob_tiers import TieredBlobs


def _tiers(tmp_path: Path) -> tuple[TieredBlobs, FilesystemBlobStore, FilesystemBlobStore]:
    hot = FilesystemBlobStore(tmp_path / "hot", fsync=False)
    cold = FilesystemBlobStore(tmp_path / "cold", fsync=False)
    return TieredBlobs({"cold": cold, "hot": hot}, ingest="hot", read_order=["hot", "cold"]), hot, cold


def test_puts_go_to_the_ingest_store_and_reads_find_any_copy(tmp_path: Path) -> None:
    tiers, hot, cold = _tiers(tmp_path)
    key = tiers.put(io.BytesIO(b"on the hot disk")).info.key
    assert hot.exists(key) and not cold.exists(key)
    moved = cold.put(io.BytesIO(b"only in the cold store")).info.key
    with tiers.open(moved) as f:
        assert f.read() == b"only in the cold store"
    assert tiers.read_range(moved, 5, 4) == b"in t"
    assert tiers.size(moved) == len(b"only in the cold store")
    assert tiers.exists(moved) and tiers.locate(moved) == "cold" and tiers.locate(key) == "hot"
    assert tiers.local_path(moved) == cold.local_path(moved)
    assert tiers.names == ["hot", "cold"]
    assert sorted(tiers.iter_keys()) == sorted({key, moved})
    with pytest.raises(NotFound):
        tiers.open("0" * 64)


def test_delete_removes_every_copy(tmp_path: Path) -> None:
    tiers, hot, cold = _tiers(tmp_path)
    key = tiers.put(io.BytesIO(b"twice")).info.key
    cold.put(io.BytesIO(b"twice"))
    tiers.delete(key)
    assert not hot.exists(key) and not cold.exists(key)
    tiers.delete(key)  # deleting a missing key is not an error, as for every store


def test_the_ingest_store_must_be_a_store(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="ingest store"):
        TieredBlobs({"a": MemoryBlobStore()}, ingest="b")
    with pytest.raises(ValueError, match="read_order"):
        TieredBlobs({"a": MemoryBlobStore()}, ingest="a", read_order=["a", "b"])


class _Archived(MemoryBlobStore):
    """A store whose objects are all in an archive storage class (as S3 GLACIER answers before a restore; the
    real S3 behaviour is tested against moto in tests/adapters/blobs)."""

    def open(self, key: str) -> BinaryIO:
        if not self.exists(key):
            raise NotFound(key)
        raise NotRestored("archived", retry_after=60)


def test_an_archived_copy_is_skipped_for_a_readable_one_and_reported_when_alone() -> None:
    archived, readable = _Archived(), MemoryBlobStore()
    tiers = TieredBlobs({"glacier": archived, "disk": readable}, ingest="disk", read_order=["glacier", "disk"])
    both = archived.put(io.BytesIO(b"x")).info.key
    readable.put(io.BytesIO(b"x"))
    with tiers.open(both) as f:
        assert f.read() == b"x"
    alone = archived.put(io.BytesIO(b"y")).info.key
    with pytest.raises(NotRestored) as caught:
        tiers.open(alone)
    assert caught.value.retry_after == 60


def test_throttle_paces_to_its_rate() -> None:
    now = [0.0]
    slept: list[float] = []

    def sleep(seconds: float) -> None:
        slept.append(seconds)
        now[0] += seconds

    throttle = Throttle(1000, clock=lambda: now[0], sleep=sleep)
    throttle.take(1000)  # the first second's burst
    assert slept == []
    throttle.take(500)
    assert slept == [pytest.approx(0.5)]
    for _ in range(10):
        throttle.take(100)
    assert now[0] == pytest.approx(1.5)  # 2500 bytes at 1000/s, the first 1000 a burst
    Throttle(0).take(10**9)  # 0 = no throttle
