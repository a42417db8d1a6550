"""One contract for every ``BlobStore`` adapter: filesystem, memory and S3 (moto over real HTTP).

Each test states a promise of ``ports.blobs.BlobStore`` that ingest, retrieval, fixity and storage migration rely
on, so a new adapter is accepted only when it passes this file unchanged.
"""

from __future__ import annotations

import hashlib
import io
import random
import tracemalloc
from collections.abc import Iterator
from pathlib import Path

import pytest

from dicomvault.bootstrap import build_blob_store
from dicomvault.domain.errors import NotFound
from dicomvault.ports.blobs import BlobStore
from dicomvault.settings import Settings

MiB = 1 << 20


class GeneratedStream(io.RawIOBase):
    """``size`` pseudo-random bytes produced on demand, so the test itself never holds the object."""

    def __init__(self, size: int, seed: int = 7) -> None:
        super().__init__()
        self._left = size
        self._rng = random.Random(seed)
        self.sha256 = hashlib.sha256()
        self.tail = b""  # the last bytes produced, to check a ranged read of the object's end

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: memoryview) -> int:  # type: ignore[override]
        n = min(len(buffer), self._left, MiB)
        if n <= 0:
            return 0
        data = self._rng.randbytes(n)
        self.sha256.update(data)
        self.tail = (self.tail + data)[-16:]
        buffer[:n] = data
        self._left -= n
        return n


@pytest.fixture(params=["filesystem", "memory", "s3"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[BlobStore]:
    settings = Settings.load(data_dir=tmp_path / "vault")
    if request.param == "filesystem":
        url = f"file://{tmp_path / 'blobs'}"
    elif request.param == "memory":
        url = "memory://"
    else:
        # small parts and one upload thread keep the multipart path's memory bound visible in a 20 MiB test
        url = str(request.getfixturevalue("s3_bucket_url")) + f"&multipart_threshold={8 * MiB}&part_size={5 * MiB}"
        url += "&concurrency=1"
    yield build_blob_store(url, settings)


def _put(store: BlobStore, data: bytes) -> str:
    return store.put(io.BytesIO(data)).info.key


def test_contract_put_is_content_addressed_and_deduplicated(store: BlobStore) -> None:
    data = b"DICM" * 1000
    first = store.put(io.BytesIO(data))
    assert first.created is True
    assert first.info.key == first.info.sha256 == hashlib.sha256(data).hexdigest()
    assert first.info.size == len(data)
    again = store.put(io.BytesIO(data))
    assert again.created is False
    assert again.info == first.info
    assert store.exists(first.info.key)
    assert store.size(first.info.key) == len(data)


def test_contract_empty_object(store: BlobStore) -> None:
    put = store.put(io.BytesIO(b""))
    assert put.info.key == hashlib.sha256(b"").hexdigest() and put.info.size == 0
    assert store.size(put.info.key) == 0
    with store.open(put.info.key) as f:
        assert f.read() == b""


def test_contract_open_streams_in_chunks(store: BlobStore) -> None:
    data = random.Random(1).randbytes(300_000)
    key = _put(store, data)
    chunks = []
    with store.open(key) as f:
        while chunk := f.read(65_536):
            assert len(chunk) <= 65_536
            chunks.append(chunk)
    assert b"".join(chunks) == data
    with store.open(key) as f:  # seekable enough for pydicom's header parser
        f.seek(128)
        assert f.read(4) == data[128:132]
        assert f.tell() == 132


def test_contract_read_range_exact_bytes(store: BlobStore) -> None:
    data = bytes(range(256)) * 40
    key = _put(store, data)
    assert store.read_range(key, 0, 10) == data[:10]
    assert store.read_range(key, 1000, 2345) == data[1000:3345]
    assert store.read_range(key, len(data) - 1, 1) == data[-1:]
    assert store.read_range(key, 0, len(data)) == data
    with pytest.raises(NotFound):
        store.read_range(key, len(data) - 5, 10)
    with pytest.raises(NotFound):
        store.read_range(key, len(data) + 10, 1)


def test_contract_exists_size_delete_are_idempotent(store: BlobStore) -> None:
    key = _put(store, b"to be deleted")
    store.delete(key)
    assert not store.exists(key)
    with pytest.raises(NotFound):
        store.size(key)
    with pytest.raises(NotFound):
        store.open(key)
    with pytest.raises(NotFound):
        store.read_range(key, 0, 1)
    store.delete(key)  # a missing key is not an error
    assert store.put(io.BytesIO(b"to be deleted")).created is True  # and it can be stored again


def test_contract_iter_keys_lists_exactly_the_stored_blobs(store: BlobStore) -> None:
    keys = {_put(store, f"object {i}".encode()) for i in range(5)}
    assert set(store.iter_keys()) == keys
    store.delete(min(keys))
    assert set(store.iter_keys()) == keys - {min(keys)}


@pytest.mark.parametrize("bad", ["../../etc/passwd", "abc", "A" * 64, "g" * 64, "a" * 63 + "/", ""])
def test_contract_invalid_keys_are_rejected(store: BlobStore, bad: str) -> None:
    _put(store, b"something")
    for call in (store.open, store.size, store.exists, store.delete, lambda k: store.read_range(k, 0, 1)):
        with pytest.raises((NotFound, ValueError)):
            call(bad)


def test_contract_local_path_and_describe(store: BlobStore) -> None:
    key = _put(store, b"where am I")
    path = store.local_path(key)
    if path is not None:  # only a filesystem store has one, and then it is the blob itself
        assert path.read_bytes() == b"where am I"
    desc = store.describe()
    assert "://" in desc
    assert "dicomvault-test-secret" not in desc


def test_contract_large_object_round_trip_with_bounded_memory(store: BlobStore) -> None:
    size = 20 * MiB + 12_345  # above the S3 multipart threshold used here: exercises the multipart path
    source = GeneratedStream(size)
    bounded = store.describe() != "memory://"  # the in-memory store holds objects in memory by design
    tracemalloc.start()
    try:
        put = store.put(io.BufferedReader(source, buffer_size=MiB))
        _, peak_put = tracemalloc.get_traced_memory()
        tracemalloc.reset_peak()
        digest = hashlib.sha256()
        read = 0
        with store.open(put.info.key) as f:
            while chunk := f.read(MiB):
                digest.update(chunk)
                read += len(chunk)
        _, peak_get = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert put.created is True
    assert put.info.key == source.sha256.hexdigest() and put.info.size == size
    assert read == size and digest.hexdigest() == put.info.key
    assert store.read_range(put.info.key, size - 16, 16) == source.tail
    if bounded:
        # at most half the object: the spool is on disk and only one 5 MiB part is in memory at a time
        assert peak_put < 10 * MiB, f"put peaked at {peak_put / MiB:.1f} MiB"
        assert peak_get < 6 * MiB, f"open/read peaked at {peak_get / MiB:.1f} MiB"
