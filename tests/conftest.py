"""Fixtures shared by every test package: an isolated archive, free loopback ports, the pydicom corpus.

Backends are chosen by environment so that the backend-agnostic suite can run against every adapter:
``DV_TEST_INDEX_URL`` (default: SQLite in the test's folder; ``postgresql://…`` = a fresh database per test on
that server) and ``DV_TEST_STORAGE_URL`` (default: a folder;
``s3`` = a fresh moto bucket per test).
"""

from __future__ import annotations

import atexit
import os
import shutil
import socket
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pydicom.data
import pytest

from dicomvault.bootstrap import Archive, build_archive
from dicomvault.settings import Settings

# Moto S3 fixtures (``s3_bucket_url``, ``moto_server``, ``fresh_moto``).
# PostgreSQL fixtures (``pg_server``, ``pg_url``, ``own_pg_server``).
pytest_plugins = ["tests.s3_fixture", "tests.pg_fixture"]

# ``dicomvault serve`` leaves a record of where its archive is for the other commands (cli/discovery.py): the
# servers the tests start write it here, never into the user's ~/.local/state (tests of it set their own folder).
if not os.environ.get("DICOMVAULT_STATE_DIR"):
    os.environ["DICOMVAULT_STATE_DIR"] = _STATE_DIR = tempfile.mkdtemp(prefix="dv-test-state-")
    atexit.register(shutil.rmtree, _STATE_DIR, True)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def corpus_dir() -> Path:
    return Path(pydicom.data.get_testdata_file("CT_small.dcm")).parent  # type: ignore[arg-type]


#: Files of pydicom's corpus whose data is cut short on purpose (pixel data or their last element ends past the
#: end of the file). Ingest refuses them as truncated (tests/services/test_services_ingest.py checks it), so the
#: "whole corpus" fixtures leave them out.
DAMAGED = frozenset({"MR_truncated.dcm", "rtplan_truncated.dcm", "SC_rgb_jpeg.dcm"})


def _is_storable(path: Path) -> bool:
    if path.name in DAMAGED:
        return False
    try:
        ds = pydicom.dcmread(path, stop_before_pixels=True)
    except Exception:
        return False
    return all(k in ds and str(ds[k].value).strip() for k in
               ("SOPClassUID", "SOPInstanceUID", "StudyInstanceUID", "SeriesInstanceUID"))


@pytest.fixture(scope="session")
def corpus() -> list[Path]:
    """Every file of pydicom's shipped test corpus that is a storable DICOM object, one per SOP Instance UID
    (several corpus files reuse a UID with different content; the first one wins, as the default policy)."""
    seen: set[str] = set()
    out: list[Path] = []
    for p in sorted(corpus_dir().rglob("*")):
        if p.is_file() and _is_storable(p):
            uid = str(pydicom.dcmread(p, stop_before_pixels=True).SOPInstanceUID)
            if uid not in seen:
                seen.add(uid)
                out.append(p)
    return out


@pytest.fixture
def settings(tmp_path: Path, request: pytest.FixtureRequest) -> Settings:
    storage_url = os.environ.get("DV_TEST_STORAGE_URL") or None
    if storage_url == "s3":  # a fresh bucket on the moto S3 server of tests/s3_fixture.py
        storage_url = str(request.getfixturevalue("s3_bucket_url"))
    index_url = os.environ.get("DV_TEST_INDEX_URL") or None
    if index_url and index_url.startswith("postgres"):  # a fresh database per test (tests/pg_fixture.py)
        index_url = str(request.getfixturevalue("pg_url"))
    return Settings.load(
        data_dir=tmp_path / "vault",
        index_url=index_url,
        storage_url=storage_url,
        dimse_port=free_port(),
        http_port=free_port(),
    )


@pytest.fixture
def archive(settings: Settings) -> Iterator[Archive]:
    a = build_archive(settings)
    yield a
    a.close()
