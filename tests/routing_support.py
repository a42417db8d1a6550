"""Shared by the routing tests: a pynetdicom destination that counts every C-STORE it receives (so "delivered
once" is checked, not assumed) and may act as a storage commitment SCP; archives with routes; a route worker."""

from __future__ import annotations

import io
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from pydicom.dataset import Dataset
from pynetdicom import AE, ALL_TRANSFER_SYNTAXES, AllStoragePresentationContexts, evt
from pynetdicom.sop_class import StorageCommitmentPushModel  # type: ignore[attr-defined]

from dicomvault.bootstrap import Archive, build_archive
from dicomvault.dicom import commitment
from dicomvault.domain.peers import RemotePeer
from dicomvault.domain.routing import DeliveryState
from dicomvault.jobs.handlers import default_handlers
from dicomvault.jobs.worker import Worker
from dicomvault.routing_settings import RouteRule
from dicomvault.services.routing import ROUTE_DELIVER, RoutingService
from dicomvault.settings import Settings
from tests.conftest import free_port


@dataclass
class Destination:
    """A storage SCP on loopback: every C-STORE counted per SOP Instance UID (with its transfer syntax)."""

    aet: str
    port: int
    stores: Counter[str] = field(default_factory=Counter)
    syntaxes: dict[str, str] = field(default_factory=dict)
    commitment_requests: list[tuple[str, list[tuple[str, str]]]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    server: Any = None

    def start(self, *, commit: bool = False) -> None:
        def on_store(event: evt.Event) -> int:
            with self.lock:
                uid = str(event.request.AffectedSOPInstanceUID)
                self.stores[uid] += 1
                self.syntaxes[uid] = str(event.context.transfer_syntax)
            return 0x0000

        def on_action(event: evt.Event) -> tuple[int, None]:
            found = commitment.read_request(event.action_information)
            assert found is not None
            transaction, refs = found
            with self.lock:
                self.commitment_requests.append((transaction, refs))
            assoc = event.assoc

            def answer() -> None:
                time.sleep(0.05)  # after the N-ACTION response
                with self.lock:
                    committed = [(c, i) for c, i in refs if self.stores[i]]
                    failed = {(c, i): commitment.NO_SUCH_OBJECT for c, i in refs if not self.stores[i]}
                event_type, info = commitment.report(transaction, committed, failed)
                assoc.send_n_event_report(info, event_type, commitment.PUSH_MODEL, commitment.PUSH_MODEL_INSTANCE)

            threading.Thread(target=answer, daemon=True).start()
            return 0x0000, None

        ae = AE(ae_title=self.aet)
        for cx in AllStoragePresentationContexts:
            ae.add_supported_context(cx.abstract_syntax, ALL_TRANSFER_SYNTAXES)
        handlers: list[Any] = [(evt.EVT_C_STORE, on_store)]
        if commit:
            ae.add_supported_context(StorageCommitmentPushModel)
            handlers.append((evt.EVT_N_ACTION, on_action))
        self.server = ae.start_server(("127.0.0.1", self.port), block=False, evt_handlers=handlers)

    def stop(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server = None

    def peer(self) -> RemotePeer:
        return RemotePeer(aet=self.aet, host="127.0.0.1", port=self.port)


@contextmanager
def destination(aet: str = "DEST", *, started: bool = True, commit: bool = False) -> Iterator[Destination]:
    dest = Destination(aet, free_port())
    if started:
        dest.start(commit=commit)
    try:
        yield dest
    finally:
        dest.stop()


def routed(settings: Settings, *routes: dict[str, Any]) -> Settings:
    """``settings`` with these ``[[route]]`` entries."""
    return settings.model_copy(update={"route": [RouteRule.model_validate(r) for r in routes]})


def open_archive(settings: Settings, *peers: RemotePeer) -> Archive:
    archive = build_archive(settings)
    assert archive.peers is not None
    for peer in peers:
        archive.peers.add(peer)
    return archive


@contextmanager
def route_worker(archive: Archive, *, backoff: float = 0.2) -> Iterator[Worker]:
    """A worker for delivery jobs polling every 50 ms, retrying after ``backoff`` seconds (doubling)."""
    assert archive.jobs is not None
    worker = Worker(archive.jobs, default_handlers(archive), kinds=[ROUTE_DELIVER], poll_interval=0.05,
                    backoff_base=backoff, backoff_cap=2.0)
    worker.start()
    try:
        yield worker
    finally:
        worker.stop()


def wait_for(condition: Callable[[], bool], timeout: float = 20.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def report_dataset(transaction: str, committed: list[tuple[str, str]],
                   failed: dict[tuple[str, str], int]) -> Dataset:
    return commitment.report(transaction, committed, failed)[1]


def routing_of(archive: Archive) -> RoutingService:
    assert archive.routing is not None
    return archive.routing


def store(archive: Archive, data: bytes, source: str = "dimse:CT1") -> str:
    """Ingest one object as if a modality sent it; its SOP Instance UID."""
    return archive.ingest.ingest(io.BytesIO(data), source=source).sop_instance_uid


def states(archive: Archive, dest: str) -> dict[str, DeliveryState]:
    """What became of each instance at ``dest`` (SOP Instance UID → state)."""
    return {d.sop_uid: d.state for d in routing_of(archive).ledger.deliveries(dest)}

