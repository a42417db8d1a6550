"""Smoke test of the study-list benchmark's index (benchmarks/web_pages.py, benchmarks/index_scale.py; the benchmark
itself is not part of ``make test``): a bulk-loaded index must hold everything the study list, its sorting and
paging, and QIDO-RS read, as ingest writes it — otherwise the benchmark measures another archive than users run.
On the test index (SQLite, or PostgreSQL with ``DV_TEST_INDEX_URL``)."""

from __future__ import annotations

import argparse
import re
from pathlib import Path

import orjson
import psycopg
from sqlalchemy import create_engine, func, select
from sqlalchemy.pool import NullPool

from benchmarks.index_scale import load, load_sqlite
from benchmarks.web_pages import Case, explain, resolve
from dicomvault.adapters.index.tables import study_qido
from dicomvault.bootstrap import build_archive
from dicomvault.domain.tags import Level
from dicomvault.settings import Settings
from tests.webui.pages_site import pages_client

ROW = re.compile(r'<tr data-study="([0-9.]+)">')
STUDIES = 60


def _bulk_load(settings: Settings) -> str:
    url = settings.resolved_index_url
    build_archive(settings).close()  # the schema, through the migrations
    args = argparse.Namespace(seed=7, studies=STUDIES, instances=STUDIES * 3)
    if url.startswith("sqlite"):
        load_sqlite(Path(url.removeprefix("sqlite:///")), args)
    else:
        with psycopg.connect(url.replace("+psycopg", "")) as conn:
            load(conn, args)
    return url


def test_a_bulk_loaded_index_serves_the_study_list_and_qido_as_ingest_would(settings: Settings) -> None:
    url = _bulk_load(settings)
    engine = create_engine(url.replace("postgresql://", "postgresql+psycopg://"), poolclass=NullPool)
    try:
        with engine.connect() as conn:
            assert conn.execute(select(func.count()).select_from(study_qido)).scalar() == STUDIES
    finally:
        engine.dispose()
    archive = build_archive(settings)
    try:
        spec = archive.query.build_spec(Level.STUDY, {}, limit=STUDIES)
        cached = archive.query.search_page_encoded(spec)
        assert cached is not None
        assert [r.json for r in cached[0]] == [orjson.dumps(r) for r in archive.query.search(spec)]
        with pages_client(archive) as client:
            seen: list[str] = []
            for pages in range(3):  # 25 + 25 + 10, by patient name, following the Next links
                page = client.get(resolve(client, "", Case("by name", {"sort": "name", "order": "asc"}, pages)))
                assert page.status_code == 200, page.text
                seen += ROW.findall(page.text)
            assert len(seen) == len(set(seen)) == STUDIES
            names = client.get("/ui/studies", params={"name": "smi"})
            assert names.status_code == 200
    finally:
        archive.close()


def test_explain_shows_the_plan_of_a_page(settings: Settings, tmp_path: Path) -> None:
    url = _bulk_load(settings)
    plan = explain(url, Case("modality, by date", {"modality": "CT", "sort": "date"}), data_dir=tmp_path / "x")
    assert "studies" in plan and "Execution Time" in plan
