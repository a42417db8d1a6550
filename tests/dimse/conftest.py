"""A running DIMSE server over a fresh archive, a little storage SCP for C-MOVE destinations, and helpers to
drive dcmtk clients (they run with TCP_NODELAY=1, as dcmtk needs for speed on loopback)."""

from __future__ import annotations

import io
import os
import subprocess
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pydicom
import pytest
from pydicom.dataset import Dataset
from pydicom.uid import generate_uid
from pynetdicom import AE, ALL_TRANSFER_SYNTAXES, AllStoragePresentationContexts, evt

from dicomvault.bootstrap import Archive, build_archive
from dicomvault.dimse.server import DimseServer
from dicomvault.services.part10 import dataset_offset
from dicomvault.settings import Settings
from tests.conftest import free_port
from tests.helpers import make_ct

ENV = {**os.environ, "TCP_NODELAY": "1"}


def received_bytes(event: evt.Event) -> bytes:
    """The data set bytes a pynetdicom storage SCP received (in memory, or spooled to a file once the DicomVault
    server switched pynetdicom's process-wide STORE_RECV_CHUNKED_DATASET on)."""
    if event.request._dataset_path is None:
        return bytes(event.request.DataSet.getvalue())
    data = Path(event.dataset_path).read_bytes()
    return data[dataset_offset(data[:65536]):]


def dataset_bytes(data: bytes) -> bytes:
    """The data set part of a Part 10 object (what goes over the wire)."""
    return data[dataset_offset(data[:65536]):]


def stored_bytes(archive: Archive, sop_uid: str) -> bytes:
    [rec] = archive.retrieve.locate(sop_uids=[sop_uid])
    return b"".join(archive.retrieve.iter_bytes(rec, verify=True))


def run(args: list[str], timeout: float = 60, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    """Run a dcmtk tool; its log goes to stderr/stdout (kept for assertion messages)."""
    return subprocess.run(args, env=ENV, capture_output=True, text=True, timeout=timeout, cwd=cwd)


def storescu_config(folder: Path, files: list[Path]) -> Path:
    """A dcmtk association profile ``Exact`` proposing every (SOP class, transfer syntax) pair of ``files`` in a
    presentation context of its own, so storescu sends each file in its own syntax (its -x options can name only
    one compressed syntax per run)."""
    pairs: set[tuple[str, str]] = set()
    for f in files:
        ds = pydicom.dcmread(f, stop_before_pixels=True)
        pairs.add((str(ds.SOPClassUID), str(ds.file_meta.get("TransferSyntaxUID", "1.2.840.10008.1.2"))))
    syntaxes = sorted({ts for _, ts in pairs})
    lines = ["[[TransferSyntaxes]]"]
    for i, ts in enumerate(syntaxes):
        lines += [f"[TS{i}]", f"TransferSyntax1 = {ts}"]
    lines += ["[[PresentationContexts]]", "[Exact]"]
    for n, (sop_class, ts) in enumerate(sorted(pairs), start=1):
        lines.append(f"PresentationContext{n} = {sop_class}\\TS{syntaxes.index(ts)}")
    lines += ["[[Profiles]]", "[Exact]", "PresentationContexts = Exact"]
    assert len(pairs) <= 128, "one association proposes at most 128 contexts"
    path = folder / "storescu-exact.cfg"
    path.write_text("\n".join(lines) + "\n")
    return path


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
                str(event.context.transfer_syntax), received_bytes(event))
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


@dataclass
class Loaded:
    """What ``load`` put in the archive: SOP Instance UID → Part 10 bytes, and the study UIDs by name."""

    objects: dict[str, bytes]
    studies: dict[str, str]
    series: dict[str, str]


def load(archive: Archive) -> Loaded:
    """Two patients, three studies (A: 3 CT, B: 2 MR of patient P1; C: 2 CT of P2 with a non-ASCII name)."""
    objects: dict[str, bytes] = {}
    studies: dict[str, str] = {}
    series_uids: dict[str, str] = {}
    specs = [
        ("A", "P1", "Doe^Jane", "20200105", "CT", 3),
        ("B", "P1", "Doe^Jane", "20210610", "MR", 2),
        ("C", "P2", "Müller^Hans", "20220101", "CT", 2),
    ]
    for name, pid, patient_name, date, modality, count in specs:
        study, series = generate_uid(), generate_uid()
        studies[name], series_uids[name] = study, series
        for i in range(count):
            data = make_ct(study=study, series=series, PatientID=pid, PatientName=patient_name, StudyDate=date,
                           Modality=modality, InstanceNumber=i + 1, seed=i, AccessionNumber=f"ACC{name}",
                           StudyDescription=f"Study {name}", SeriesNumber=1)
            result = archive.ingest.ingest(io.BytesIO(data))
            objects[result.sop_instance_uid] = data
    return Loaded(objects, studies, series_uids)
