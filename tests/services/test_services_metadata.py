"""WADO-RS metadata documents: assembled from the cached instance JSON, kept in a per-process LRU, and never
served stale after an ingest, delete or replacement done behind the cache's back (another process, here: the
archive's own ingest and index, which do not tell the metadata service anything)."""

from __future__ import annotations

import io

import orjson
import pytest
from pydicom.uid import generate_uid

from dicomvault.bootstrap import Archive
from dicomvault.domain.errors import NotFound
from dicomvault.domain.records import DuplicatePolicy
from dicomvault.services.ingest import IngestService
from dicomvault.services.metadata import MetadataService
from tests.helpers import make_ct

BASE = "http://dv.test/dicom-web"


def _ingest(archive: Archive, **attrs: object) -> str:
    return archive.ingest.ingest(io.BytesIO(make_ct(**attrs)), source="test").sop_instance_uid


def _sops(body: bytes | None) -> list[str]:
    assert body is not None
    return [item["00080018"]["Value"][0] for item in orjson.loads(body)]


def test_document_is_the_array_of_cached_texts_with_absolute_bulk_uris(archive: Archive) -> None:
    study, series = generate_uid(), generate_uid()
    sops = [_ingest(archive, study=study, series=series, InstanceNumber=i + 1, seed=i) for i in range(3)]
    svc = MetadataService(archive.index)
    body = svc.document(study, series, None, BASE)
    assert _sops(body) == sops
    items = orjson.loads(body or b"")
    instance_url = f"{BASE}/studies/{study}/series/{series}/instances/{sops[1]}"
    assert items[1]["7FE00010"]["BulkDataURI"] == f"{instance_url}/bulk/7FE00010"
    assert svc.document(study, series, None, BASE) is body  # served from the cache
    streamed = b"".join(svc.array_chunks(svc.documents(study, series), BASE, study))
    assert streamed == body
    assert svc.document(study, None, sops[0], BASE) == b"[" + body[1:].split(b',{"', 1)[0] + b"]"
    assert svc.document(study, series, None, BASE, max_instances=2) is None


def test_cache_is_invalidated_by_ingest_delete_and_replacement(archive: Archive) -> None:
    study, series, other = generate_uid(), generate_uid(), generate_uid()
    sops = [_ingest(archive, study=study, series=series, InstanceNumber=i + 1, seed=i) for i in range(2)]
    svc = MetadataService(archive.index)
    assert _sops(svc.document(study, series, None, BASE)) == sops

    sops.append(_ingest(archive, study=study, series=series, InstanceNumber=3, seed=3))
    assert _sops(svc.document(study, series, None, BASE)) == sops
    _ingest(archive, study=study, series=other, seed=4)  # another series of the study
    assert len(_sops(svc.document(study, None, None, BASE))) == 4

    archive.index.delete(study_uid=study, series_uid=series, sop_uid=sops[0])
    assert _sops(svc.document(study, series, None, BASE)) == sops[1:]

    # Replace the newest instance: same count, and SQLite hands the freed highest row id to the new row.
    replacing = IngestService(archive.index, archive.blobs, archive.remover, policy=DuplicatePolicy.REPLACE)
    replacing.ingest(io.BytesIO(make_ct(study=study, series=series, sop=sops[2], InstanceNumber=3, seed=9,
                                        SeriesDescription="replaced")), source="test")
    items = orjson.loads(svc.document(study, series, None, BASE) or b"")
    assert [i["00080018"]["Value"][0] for i in items] == sops[1:]
    assert items[-1]["0008103E"]["Value"] == ["replaced"]

    archive.index.delete(study_uid=study)
    with pytest.raises(NotFound):
        svc.document(study, series, None, BASE)


def test_cache_keys_include_the_base_url_and_stay_bounded(archive: Archive) -> None:
    study, series = generate_uid(), generate_uid()
    _ingest(archive, study=study, series=series)
    svc = MetadataService(archive.index, cache_entries=2)
    bodies = [svc.document(study, series, None, f"http://host{i}/dicom-web") for i in range(4)]
    assert all(f"http://host{i}/dicom-web".encode() in (b or b"") for i, b in enumerate(bodies))
    assert len(svc._cache._map) == 2
