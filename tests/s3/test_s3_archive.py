"""The archive on S3 storage (moto over HTTP): ingest, frame reads as byte ranges, write-once, and outages."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any, cast

import pydicom
import pytest
from pydicom.uid import generate_uid

from dicomvault.adapters.blobs.s3 import S3BlobStore
from dicomvault.bootstrap import Archive, build_archive
from dicomvault.domain.errors import NotFound, Unavailable
from dicomvault.domain.records import StoreOutcome
from dicomvault.settings import Settings
from tests.helpers import make_ct
from tests.s3_fixture import MotoServer

MiB = 1 << 20


def _archive(tmp_path: Path, storage_url: str) -> Archive:
    return build_archive(Settings.load(data_dir=tmp_path / "vault", storage_url=storage_url))


@pytest.fixture
def s3_archive(tmp_path: Path, s3_bucket_url: str) -> Any:
    archive = _archive(tmp_path, s3_bucket_url)
    yield archive
    archive.close()


def test_s3_ingest_and_retrieve_corpus_byte_exact(s3_archive: Archive, corpus: list[Path]) -> None:
    files = corpus[:25]
    for path in files:
        s3_archive.ingest.ingest(io.BytesIO(path.read_bytes()), source="test")
    assert s3_archive.index.stats().instances == len(files)
    for path in files:
        sop = str(pydicom.dcmread(path, stop_before_pixels=True).SOPInstanceUID)
        rec = s3_archive.retrieve.locate(sop_uids=[sop])[0]
        assert b"".join(s3_archive.retrieve.iter_bytes(rec, verify=True)) == path.read_bytes()
    assert s3_archive.blobs.describe().startswith("s3://")
    assert s3_archive.blobs.local_path(rec.blob.key) is None


def test_s3_frames_are_ranged_reads(s3_archive: Archive) -> None:
    data = make_ct(rows=64, columns=64, frames=3, seed=5)
    res = s3_archive.ingest.ingest(io.BytesIO(data), source="test")
    rec = s3_archive.retrieve.instance(res.study_uid, res.series_uid, res.sop_instance_uid)
    pixels = pydicom.dcmread(io.BytesIO(data)).PixelData
    store = cast(S3BlobStore, s3_archive.tiers.store("default") if s3_archive.tiers else None)
    ranges: list[str] = []
    store.client.meta.events.register("before-call.s3.GetObject",
                                      lambda params, **_: ranges.append(params.get("headers", {}).get("Range")))
    frame_len = 64 * 64 * 2
    for n in (1, 2, 3):
        assert s3_archive.retrieve.frame(rec, n) == pixels[(n - 1) * frame_len : n * frame_len]
    assert len(ranges) == 3 and all(r and r.startswith("bytes=") for r in ranges)
    with pytest.raises(NotFound):
        s3_archive.retrieve.frame(rec, 4)
    # whole-object paths also work without a local file: header parse via the seekable reader, temp copy
    assert s3_archive.retrieve.read_dataset(rec, stop_before_pixels=True).SOPInstanceUID == res.sop_instance_uid
    with s3_archive.retrieve.as_file(rec) as path:
        assert path.read_bytes() == data


def test_s3_objects_use_the_content_addressed_layout(moto_server: Any, s3_archive: Archive) -> None:
    res = s3_archive.ingest.ingest(io.BytesIO(make_ct()), source="test")
    store = cast(S3BlobStore, s3_archive.tiers.store("default") if s3_archive.tiers else None)
    key = res.blob.key
    assert moto_server.object_names(store.bucket) == [f"vault/{key[:2]}/{key[2:4]}/{key}"]
    assert list(store.iter_keys()) == [key]
    head = store.client.head_object(Bucket=store.bucket, Key=store.object_key(key), ChecksumMode="ENABLED")
    assert head["ContentLength"] == res.blob.size


@pytest.mark.parametrize("size", [4096, 6 * MiB], ids=["single-put", "multipart"])
def test_s3_conditional_write_never_overwrites(s3_bucket_url: str, monkeypatch: pytest.MonkeyPatch,
                                               size: int) -> None:
    store = S3BlobStore.from_url(s3_bucket_url + f"&multipart_threshold={5 * MiB}&part_size={5 * MiB}")
    data = bytes(range(256)) * (size // 256)
    first = store.put(io.BytesIO(data))
    etag = store.client.head_object(Bucket=store.bucket, Key=store.object_key(first.info.key))["ETag"]
    # Two writers race: both saw "absent" (HEAD), so the second reaches the conditional PUT/Complete → 412.
    monkeypatch.setattr(store, "exists", lambda key: False)
    second = store.put(io.BytesIO(data))
    assert first.created is True and second.created is False and second.info == first.info
    assert store.client.head_object(Bucket=store.bucket, Key=store.object_key(first.info.key))["ETag"] == etag
    assert store.client.list_multipart_uploads(Bucket=store.bucket).get("Uploads", []) == []


def test_s3_outage_mid_upload_fails_cleanly_then_recovers(tmp_path: Path, fresh_moto: MotoServer) -> None:
    bucket = fresh_moto.create_bucket()
    archive = _archive(tmp_path, fresh_moto.url(bucket, multipart_threshold=5 * MiB, part_size=5 * MiB,
                                                concurrency=1))
    try:
        store = cast(S3BlobStore, archive.tiers.store("default") if archive.tiers else None)
        big = make_ct(rows=1024, columns=1024, frames=6, seed=3)  # 12 MiB: three parts
        sop = pydicom.dcmread(io.BytesIO(big), stop_before_pixels=True).SOPInstanceUID
        parts_sent: list[int] = []

        def stop_after_first_part(**_: Any) -> None:
            parts_sent.append(1)
            if len(parts_sent) == 1:
                fresh_moto.stop()  # the S3 endpoint goes away in the middle of the multipart upload

        store.client.meta.events.register("after-call.s3.UploadPart", stop_after_first_part)
        with pytest.raises(Unavailable):
            archive.ingest.ingest(io.BytesIO(big), source="test")
        assert len(parts_sent) == 1
        assert archive.index.instance_checksum(str(sop)) is None
        assert archive.index.stats().instances == 0

        # While it is down, a small store fails the same way (no retry loop hangs the caller).
        with pytest.raises(Unavailable):
            archive.ingest.ingest(io.BytesIO(make_ct()), source="test")

        fresh_moto.start()  # same port, moto keeps its in-process state
        assert fresh_moto.object_names(bucket) == []  # nothing half-written became visible
        res = archive.ingest.ingest(io.BytesIO(big), source="test")
        assert res.outcome == StoreOutcome.STORED
        rec = archive.retrieve.locate(sop_uids=[str(sop)])[0]
        assert b"".join(archive.retrieve.iter_bytes(rec, verify=True)) == big
        assert archive.index.stats().instances == 1
    finally:
        archive.close()


def test_s3_missing_bucket_is_unavailable_not_a_crash(tmp_path: Path, moto_server: Any) -> None:
    archive = _archive(tmp_path, moto_server.url(f"dv-missing-{generate_uid()[-8:]}"))
    try:
        with pytest.raises(Unavailable):
            archive.ingest.ingest(io.BytesIO(make_ct()), source="test")
        assert archive.index.stats().instances == 0
    finally:
        archive.close()


def test_s3_url_parsing_rejects_unknown_parameters(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="unknown s3 URL parameter"):
        S3BlobStore.from_url("s3://bucket/p?endpoint=http://127.0.0.1:1&secret_key=x")
    store = S3BlobStore.from_url("s3://bucket/a/b/?endpoint=http://127.0.0.1:1&region=us-east-1",
                                 default_spool_dir=tmp_path / "spool")
    assert store.prefix == "a/b" and store.describe() == "s3://bucket/a/b?endpoint=http%3A%2F%2F127.0.0.1%3A1"
    assert (tmp_path / "spool").is_dir()
