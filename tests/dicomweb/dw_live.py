"""The real DICOMweb app served by uvicorn in a background thread on a free loopback port (used by conftest
fixtures, and directly by module-scoped fixtures that load a corpus once).

The server is configured by ``dicomweb.http_server.uvicorn_config`` like ``dicomvault serve``: the limited httptools
protocol (header size, header/body timeouts, connection caps), proxy trust and HTTPS all come from the settings.

Anonymous access is read-only by default; ``WIDE_ANONYMOUS`` is what the fixtures of tests that store and delete
anonymously set explicitly (``anonymous_scopes``)."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import uvicorn
from fastapi import FastAPI

from dicomvault.bootstrap import Archive, build_archive
from dicomvault.dicomweb.app import create_app
from dicomvault.dicomweb.http_server import uvicorn_config
from dicomvault.settings import Settings

#: anonymous scopes of the fixtures whose tests store and delete without a token
WIDE_ANONYMOUS = ["read", "write", "delete"]


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class DwServer:
    base_url: str
    archive: Archive
    settings: Settings
    app: FastAPI

    @property
    def dicomweb_url(self) -> str:
        return self.base_url + "/dicom-web"


@contextmanager
def serve(app: FastAPI, settings: Settings | None = None) -> Iterator[str]:
    """Run ``app`` with uvicorn on a free loopback port, configured from ``settings`` (default: the app's archive's
    settings); yields the base URL (``https://`` when the settings name a certificate)."""
    port = _free_port()
    settings = settings or app.state.archive.settings
    config = uvicorn_config(app, settings, host="127.0.0.1", port=port, log_level="warning",
                            lifespan="off", access_log=False)
    scheme = "https" if settings.tls_cert else "http"
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, name=f"uvicorn-{port}", daemon=True)
    thread.start()
    deadline = time.monotonic() + 15
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("uvicorn did not start")
        time.sleep(0.01)
    try:
        yield f"{scheme}://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)


def dw_settings(data_dir: Path, **overrides: Any) -> Settings:
    """Settings on the embedded defaults (SQLite + folder) in ``data_dir``, free ports, plus ``overrides``."""
    return Settings.load(data_dir=data_dir, dimse_port=_free_port(), http_port=_free_port(), **overrides)


@contextmanager
def running(settings: Settings) -> Iterator[DwServer]:
    """Build the archive for ``settings`` and serve it; closes both afterwards."""
    archive = build_archive(settings)
    try:
        app = create_app(archive)
        with serve(app, settings) as url:
            yield DwServer(url, archive, settings, app)
    finally:
        archive.close()
