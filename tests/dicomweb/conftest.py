"""DICOMweb test fixtures.

``dw_server``: a fresh archive (default settings: loopback, anonymous allowed) and its running server.
``make_dw_server``: a factory for servers with other settings (``make_dw_server(oidc_issuer=..., ...)``).
The tests store and delete without tokens, so these fixtures widen anonymous access explicitly
(``anonymous_scopes = WIDE_ANONYMOUS``; the default is read-only): a test of the default passes
``anonymous_scopes=["read"]`` to ``make_dw_server``.
Both give a ``DwServer`` with ``base_url`` (``http://127.0.0.1:<port>``), ``dicomweb_url`` (``…/dicom-web``),
``archive``, ``settings`` and ``app``. For a module-scoped server: ``with running(dw_module_settings) as server``
(``tests.dicomweb.dw_live.running``).
"""

from __future__ import annotations

import os
import socket
import uuid
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import pytest

from dicomvault.settings import Settings
from tests.dicomweb.dw_live import WIDE_ANONYMOUS, DwServer, running


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def dw_server(settings: Settings) -> Iterator[DwServer]:
    """A server on the root ``settings`` fixture (so ``DV_TEST_INDEX_URL`` / ``DV_TEST_STORAGE_URL`` apply)."""
    with running(settings.model_copy(update={"anonymous_scopes": WIDE_ANONYMOUS})) as server:
        yield server


@pytest.fixture
def make_dw_server(settings: Settings, tmp_path: Path) -> Iterator[Callable[..., DwServer]]:
    """Servers with setting overrides, on the test's backends (several servers of one test share them)."""
    stack = ExitStack()

    def make(**overrides: Any) -> DwServer:
        overrides.setdefault("anonymous_scopes", WIDE_ANONYMOUS)
        s = Settings.load(data_dir=tmp_path / f"vault-{uuid.uuid4().hex[:8]}", index_url=settings.index_url,
                          storage_url=settings.storage_url, dimse_port=free_port(), http_port=free_port(),
                          **overrides)
        return stack.enter_context(running(s))

    with stack:
        yield make


@pytest.fixture(scope="module")
def dw_module_settings(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Settings]:
    """Settings for a module-scoped server (a corpus loaded once), on the backends the environment selects:
    a database of its own on PostgreSQL, a bucket of its own on S3."""
    index_url = os.environ.get("DV_TEST_INDEX_URL") or None
    storage_url = os.environ.get("DV_TEST_STORAGE_URL") or None
    cleanup: list[Callable[[], None]] = []
    if index_url and index_url.startswith("postgres"):
        pg = request.getfixturevalue("pg_server")
        name = pg.create_database()
        index_url = pg.url(name)
        cleanup.append(lambda: pg.drop_database(name))
    if storage_url == "s3":
        moto = request.getfixturevalue("moto_server")
        bucket = moto.create_bucket()
        storage_url = moto.url(bucket)
        cleanup.append(lambda: moto.remove_bucket(bucket))
    yield Settings.load(data_dir=tmp_path_factory.mktemp("dw") / "vault", index_url=index_url,
                        storage_url=storage_url, dimse_port=free_port(), http_port=free_port(),
                        anonymous_scopes=WIDE_ANONYMOUS)
    for fn in cleanup:
        fn()
