"""A running DIMSE server over a fresh archive, and a little storage SCP for C-MOVE destinations."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from pydicom.dataset import Dataset
from pynetdicom import AE, ALL_TRANSFER_SYNTAXES, AllStoragePresentationContexts, evt

from dicomvault.bootstrap import Archive, build_archive
from dicomvault.dimse.server import DimseServer
from dicomvault.settings import Settings
from tests.conftest import free_port


@dataclass
class Receiver:
    """A storage SCP that keeps what it receives: SOP Instance UID → (transfer syntax, dataset bytes)."""

    aet: str
    port: int
    received: dict[str, tuple[str, bytes]] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    rec = Receiver("RECEIVER", free_port())

    def on_store(event: evt.Event) -> int:
        with rec.lock:
            rec.received[str(event.request.AffectedSOPInstanceUID)] = (
                str(event.context.transfer_syntax), event.request.DataSet.getvalue())
        return 0x0000

    ae = AE(ae_title=rec.aet)
    for cx in AllStoragePresentationContexts:
        ae.add_supported_context(cx.abstract_syntax, ALL_TRANSFER_SYNTAXES)
    server = ae.start_server(("127.0.0.1", rec.port), block=False, evt_handlers=[(evt.EVT_C_STORE, on_store)])
    yield rec
    server.shutdown()


@dataclass
class Running:
    archive: Archive
    server: DimseServer
    settings: Settings

    @property
    def port(self) -> int:
        return self.server.port


def start(tmp_path: Path, **overrides: object) -> Running:
    settings = Settings.load(data_dir=tmp_path / "vault", dimse_port=free_port(), **overrides)
    archive = build_archive(settings)
    server = DimseServer(archive)
    server.start()
    return Running(archive, server, settings)


@pytest.fixture
def dimse(tmp_path: Path, receiver: Receiver) -> Iterator[Running]:
    running = start(tmp_path, move_destinations={receiver.aet: f"127.0.0.1:{receiver.port}"})
    yield running
    running.server.stop()
    running.archive.close()


def identifier(level: str, **keys: object) -> Dataset:
    ds = Dataset()
    ds.QueryRetrieveLevel = level
    for k, v in keys.items():
        setattr(ds, k, v)
    return ds
