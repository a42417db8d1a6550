"""Fixtures shared by every test package: an isolated archive, free loopback ports, the pydicom corpus.

Backends are chosen by environment so that the backend-agnostic suite can run against every adapter:
``DV_TEST_INDEX_URL`` (default: SQLite in the test's folder) and ``DV_TEST_STORAGE_URL`` (default: a folder).
"""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator
from pathlib import Path

import pydicom.data
import pytest

from dicomvault.bootstrap import Archive, build_archive
from dicomvault.settings import Settings


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def corpus_dir() -> Path:
    return Path(pydicom.data.get_testdata_file("CT_small.dcm")).parent  # type: ignore[arg-type]


def _is_storable(path: Path) -> bool:
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
def settings(tmp_path: Path) -> Settings:
    return Settings.load(
        data_dir=tmp_path / "vault",
        index_url=os.environ.get("DV_TEST_INDEX_URL") or None,
        storage_url=os.environ.get("DV_TEST_STORAGE_URL") or None,
        dimse_port=free_port(),
        http_port=free_port(),
    )


@pytest.fixture
def archive(settings: Settings) -> Iterator[Archive]:
    a = build_archive(settings)
    yield a
    a.close()
