"""``services.prefetch.Prefetcher``: the next objects of a retrieval from a remote store are fetched while one is
sent — in order, byte-identical, at most ``ahead`` ahead, and never for local files or large objects."""

from __future__ import annotations

import io
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import cast

from dicomvault.adapters.blobs.filesystem import FilesystemBlobStore
from dicomvault.adapters.blobs.memory import MemoryBlobStore
from dicomvault.domain.records import BlobInfo, InstanceRecord
from dicomvault.ports.index import IndexRepository
from dicomvault.services.prefetch import Prefetcher
from dicomvault.services.retrieve import RetrieveService


def _records(store: object, n: int, size: int = 1000) -> tuple[list[InstanceRecord], list[bytes]]:
    datas = [bytes([i]) * size for i in range(n)]
    infos = [store.put(io.BytesIO(d)).info for d in datas]  # type: ignore[attr-defined]
    return [InstanceRecord(None, "1.2", "1.2.1", f"1.2.1.{i}", "1.2.840.10008.5.1.4.1.1.2",
                           "1.2.840.10008.1.2.1", BlobInfo(info.key, info.size, info.sha256))
            for i, info in enumerate(infos)], datas


def test_remote_objects_are_fetched_ahead_in_order() -> None:
    store = MemoryBlobStore()  # no local path: remote, as S3
    records, datas = _records(store, 20)
    retrieve = RetrieveService(cast(IndexRepository, None), store)
    started: list[int] = []
    lock = threading.Lock()

    def body(i: int) -> Iterator[bytes]:
        with lock:
            started.append(i)
        return retrieve.iter_bytes(records[i], chunk=256)

    prefetch = Prefetcher(retrieve, ahead=3, workers=2)
    try:
        body_of = prefetch.bodies(records, body)
        got = [b"".join(body_of(0))]
        deadline = time.monotonic() + 10
        while len(started) < 4 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert sorted(started) == [0, 1, 2, 3], "the first object and three ahead, no more"
        got += [b"".join(body_of(i)) for i in range(1, 20)]
        assert got == datas
        assert sorted(started) == list(range(20))
    finally:
        prefetch.close()


def test_local_files_and_large_objects_are_streamed(tmp_path: Path) -> None:
    disk = FilesystemBlobStore(tmp_path / "blobs", fsync=False)
    records, datas = _records(disk, 4)
    retrieve = RetrieveService(cast(IndexRepository, None), disk)
    calls: list[int] = []

    def body(i: int) -> Iterator[bytes]:
        calls.append(i)
        return retrieve.iter_bytes(records[i])

    prefetch = Prefetcher(retrieve, ahead=3)
    body_of = prefetch.bodies(records, body)
    first = body_of(0)
    assert calls == [0], "a local file is streamed when its turn comes, not read ahead"
    assert b"".join(first) == datas[0]
    remote = MemoryBlobStore()
    big, big_datas = _records(remote, 3, size=2000)
    retrieve_remote = RetrieveService(cast(IndexRepository, None), remote)
    small_cap = Prefetcher(retrieve_remote, ahead=3, max_object=1000)
    body_of = small_cap.bodies(big, lambda i: retrieve_remote.iter_bytes(big[i]))
    assert [b"".join(body_of(i)) for i in range(3)] == big_datas
    small_cap.close()
