"""The plain-DBAPI store path (``adapters.index.hot_store``) leaves exactly the index the Core path leaves.

The same objects are stored twice, into two fresh archives: once as ingest does it (the hot path), once with the
hot path turned off (``HotStore.store`` answering None sends every store down the Core path). Every row of every
table must then be the same, timestamps aside: ids, counters, ModalitiesInStudy, the cached study answers, the
cached metadata, the blobs' copy records. Run on SQLite and PostgreSQL.
"""

from __future__ import annotations

import io
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pydicom.uid import generate_uid
from sqlalchemy import select

from dicomvault.adapters.index.hot_store import HotStore
from dicomvault.adapters.index.repository import SqlIndexRepository
from dicomvault.adapters.index.tables import blob_copies, instances, patients, series, studies, study_qido
from dicomvault.bootstrap import Archive, build_archive
from dicomvault.settings import Settings
from tests.helpers import make_ct

#: Times differ between the two runs: compared by whether they are set (a copy's ``verified_at`` must be set by
#: both paths or by neither).
_TIMES = {"stored_at", "updated_at", "verified_at", "last_read_at"}


def _objects() -> list[bytes]:
    """Two patients (one with an issuer), three studies, new series in an existing study, a second modality, a
    study moving between patient rows (same study, other PatientID), names with and without non-ASCII text."""
    s1, s2, s3 = generate_uid(), generate_uid(), generate_uid()
    a, b, c, d = (generate_uid() for _ in range(4))
    plan: list[dict[str, Any]] = [
        {"study": s1, "series": a, "PatientID": "P1", "PatientName": "Müller^Hans", "Modality": "CT"},
        {"study": s1, "series": a, "PatientID": "P1", "PatientName": "Müller^Hans", "Modality": "CT"},
        {"study": s1, "series": b, "PatientID": "P1", "PatientName": "Müller^Hans", "Modality": "SR"},
        {"study": s2, "series": c, "PatientID": "P2", "IssuerOfPatientID": "HOSP", "Modality": "MR"},
        {"study": s2, "series": d, "PatientID": "P3", "Modality": "MR"},  # study known under another patient
        {"study": s3, "series": generate_uid(), "PatientID": "P1", "Modality": "US", "StudyDate": "20240102"},
    ]
    return [make_ct(seed=i, InstanceNumber=i + 1, **kw) for i, kw in enumerate(plan)]


def _dump(archive: Archive) -> dict[str, list[tuple[Any, ...]]]:
    index = archive.index
    assert isinstance(index, SqlIndexRepository)
    out = {}
    with index.engine.connect() as conn:
        for table in (patients, studies, series, instances, study_qido, blob_copies):
            cols = [c.is_(None).label(c.name) if c.name in _TIMES else c for c in table.columns]
            out[table.name] = [tuple(r) for r in conn.execute(select(*cols).order_by(*table.primary_key))]
    return out


def _store_all(tmp_path: Path, url: str, objects: list[bytes]) -> dict[str, list[tuple[Any, ...]]]:
    archive = build_archive(Settings.load(data_dir=tmp_path, index_url=url, storage_url="memory://"))
    try:
        for data in objects:
            archive.ingest.ingest(io.BytesIO(data), source="dimse:TEST")
        return _dump(archive)
    finally:
        archive.close()


@pytest.fixture
def second_index_url(any_index_url: str, tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[str]:
    if any_index_url.startswith("sqlite"):
        yield f"sqlite:///{tmp_path / 'core.sqlite'}"
        return
    server = request.getfixturevalue("pg_server")
    name = server.create_database()
    yield server.url(name)
    server.drop_database(name)


def test_hot_path_leaves_the_index_the_core_path_leaves(
    tmp_path: Path, any_index_url: str, second_index_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    objects = _objects()
    hot = _store_all(tmp_path / "hot", any_index_url, objects)
    calls: list[int] = []

    def core_only(self: HotStore, *args: object, **kwargs: object) -> None:
        calls.append(1)
        return None

    monkeypatch.setattr(HotStore, "store", core_only)
    core = _store_all(tmp_path / "core", second_index_url, objects)
    assert len(calls) == len(objects)
    assert hot["patients"] and len(hot["instances"]) == len(objects)
    assert len(hot["blob_copies"]) == len(objects)
    for table in hot:
        assert hot[table] == core[table], table
