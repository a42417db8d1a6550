"""The real DICOMweb app served by uvicorn in a background thread on a free loopback port (used by conftest
fixtures, and directly by module-scoped fixtures that load a corpus once)."""

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
from dicomvault.settings import Settings


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
def serve(app: FastAPI) -> Iterator[str]:
    """Run ``app`` with uvicorn on a free loopback port; yields the base URL."""
    port = _free_port()
    config = uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning",
                            lifespan="off", access_log=False)
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, name=f"uvicorn-{port}", daemon=True)
    thread.start()
    deadline = time.monotonic() + 15
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("uvicorn did not start")
        time.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{port}"
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
        with serve(app) as url:
            yield DwServer(url, archive, settings, app)
    finally:
        archive.close()
