"""S3 storage classes and restores against the moto S3 server (real HTTP through botocore).

moto 5.2.5 behaves like S3 where it matters here: PUT and CreateMultipartUpload keep ``x-amz-storage-class``; a
GET (ranged or not) of a GLACIER / DEEP_ARCHIVE object without a completed restore fails with InvalidObjectState
(403); RestoreObject answers 202 and HEAD then carries ``x-amz-restore``. Its restore state machine completes at
once by default; the ``slow_restores`` fixture switches it (through the server's state-manager API) to one step
every ``_STEP`` seconds, so "restore in progress" can be observed too.
"""

from __future__ import annotations

import io
import os
import time
from collections.abc import Iterator
from typing import Any

import pytest
import requests

from dicomvault.adapters.blobs.s3 import MiB, S3BlobStore, parse_s3_url
from dicomvault.domain.errors import NotFound, NotRestored
from dicomvault.ports.blobs import Recallable, RestoreState

_STEP = 1.5


def _store(url: str, storage_class: str, **extra: object) -> S3BlobStore:
    query = "".join(f"&{k}={v}" for k, v in extra.items())
    return S3BlobStore.from_url(f"{url}&storage_class={storage_class}{query}")


def _head(moto_server: Any, store: S3BlobStore, key: str) -> dict[str, Any]:
    return dict(moto_server.client().head_object(Bucket=store.bucket, Key=store.object_key(key)))


@pytest.fixture
def slow_restores(moto_server: Any) -> Iterator[None]:
    base = f"{moto_server.endpoint}/moto-api/state-manager"
    requests.post(f"{base}/set-transition", json={
        "model_name": "s3::keyrestore", "transition": {"progression": "time", "seconds": _STEP}}, timeout=5,
    ).raise_for_status()
    yield
    requests.post(f"{base}/unset-transition", json={"model_name": "s3::keyrestore"}, timeout=5).raise_for_status()


def test_storage_class_is_validated_and_normalised() -> None:
    assert parse_s3_url("s3://b/p?storage_class=glacier_ir")[2].storage_class == "GLACIER_IR"
    assert parse_s3_url("s3://b/p")[2].storage_class is None
    with pytest.raises(ValueError, match="unknown s3 storage_class 'COLD'"):
        parse_s3_url("s3://b/p?storage_class=COLD")


@pytest.mark.parametrize("storage_class", ["GLACIER_IR", "STANDARD_IA"])
def test_readable_classes_are_put_with_their_class_and_read_at_once(
    moto_server: Any, s3_bucket_url: str, storage_class: str
) -> None:
    store = _store(s3_bucket_url, storage_class)
    key = store.put(io.BytesIO(b"instant retrieval")).info.key
    assert _head(moto_server, store, key)["StorageClass"] == storage_class
    assert store.open(key).read() == b"instant retrieval"
    assert isinstance(store, Recallable)
    assert store.restore_state(key) == RestoreState.READABLE
    assert store.request_restore(key, days=1, tier="Standard") == RestoreState.READABLE  # nothing to request
    assert "storage_class=" + storage_class in store.describe()


def test_multipart_uploads_carry_the_class_too(moto_server: Any, s3_bucket_url: str) -> None:
    store = _store(s3_bucket_url, "DEEP_ARCHIVE", multipart_threshold=5 * MiB, part_size=5 * MiB)
    data = os.urandom(11 * MiB)
    key = store.put(io.BytesIO(data)).info.key
    assert _head(moto_server, store, key)["StorageClass"] == "DEEP_ARCHIVE"
    with pytest.raises(NotRestored):
        store.read_range(key, 5 * MiB, 10)
    assert store.request_restore(key, days=2, tier="Bulk") in (RestoreState.RESTORING, RestoreState.READABLE)
    assert store.read_range(key, 5 * MiB, 10) == data[5 * MiB: 5 * MiB + 10]


@pytest.mark.parametrize("storage_class", ["GLACIER", "DEEP_ARCHIVE"])
def test_archived_object_is_refused_until_restored(moto_server: Any, s3_bucket_url: str, storage_class: str) -> None:
    store = _store(s3_bucket_url, storage_class)
    put = store.put(io.BytesIO(b"cold bytes " * 100))
    key = put.info.key
    assert put.created and _head(moto_server, store, key)["StorageClass"] == storage_class
    assert store.exists(key) and store.size(key) == 1100  # HEAD works on archived objects
    assert store.restore_state(key) == RestoreState.ARCHIVED
    with pytest.raises(NotRestored) as refused:
        store.open(key)
    assert refused.value.restoring is False and refused.value.retry_after == 3600
    assert "recall" in refused.value.message
    with pytest.raises(NotRestored):
        store.read_range(key, 10, 5)

    assert store.request_restore(key, days=3, tier="Standard") == RestoreState.RESTORING  # 202 Accepted
    assert 'ongoing-request="false"' in _head(moto_server, store, key)["Restore"]  # moto restores at once
    assert store.restore_state(key) == RestoreState.READABLE
    assert store.request_restore(key, days=3, tier="Standard") == RestoreState.READABLE  # idempotent: no request
    assert store.open(key).read() == b"cold bytes " * 100
    assert store.read_range(key, 11, 4) == b"cold"
    assert store.put(io.BytesIO(b"cold bytes " * 100)).created is False  # write-once still holds


def test_restore_in_progress_is_reported(moto_server: Any, s3_bucket_url: str, slow_restores: None) -> None:
    store = _store(s3_bucket_url, "GLACIER")
    key = store.put(io.BytesIO(b"slow")).info.key
    time.sleep(_STEP + 0.2)  # moto's first step (none → in progress) counts from the object's creation
    assert store.request_restore(key, days=1, tier="Expedited") == RestoreState.RESTORING
    assert store.restore_state(key) == RestoreState.RESTORING
    assert store.request_restore(key, days=1, tier="Expedited") == RestoreState.RESTORING  # not requested again
    with pytest.raises(NotRestored) as refused:
        store.open(key)
    assert refused.value.restoring is True and "in progress" in refused.value.message
    deadline = time.monotonic() + 10 * _STEP
    while store.restore_state(key) != RestoreState.READABLE:
        assert time.monotonic() < deadline, "moto never finished the restore"
        time.sleep(0.3)
    assert store.open(key).read() == b"slow"


def test_recall_of_a_missing_key_is_not_found(s3_bucket_url: str) -> None:
    store = _store(s3_bucket_url, "GLACIER")
    with pytest.raises(NotFound):
        store.restore_state("0" * 64)
    with pytest.raises(NotFound):
        store.request_restore("0" * 64, days=1, tier="Standard")
    with pytest.raises(ValueError, match="tier"):
        store.request_restore("0" * 64, days=1, tier="Fast")
