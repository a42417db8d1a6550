"""Compression at rest over DIMSE, as a PACS administrator checks it after turning compression on: what third-party
peers (dcmtk getscu/movescu/storescp, pynetdicom) receive from C-GET and C-MOVE of instances stored JPEG-LS
lossless.

- A peer that accepts only uncompressed syntaxes gets the original data set, byte for byte, when it accepted the
  syntax the original was received in (explicit VR; implicit VR when it proposed implicit); in another
  uncompressed syntax it gets the same data set converted from the original.
- A peer that accepts JPEG-LS lossless gets the stored compressed object unchanged (nothing decoded), and decoding
  it (pydicom, dcmtk's dcmdjpls) gives the original pixels.
- Multi-frame objects, and a study mixing instances compressed at rest, one left uncompressed (too small to be
  worth it) and one received compressed (JPEG 2000), the same way.
- Instances compressed while a retrieve that selected them runs (``compress_on_ingest`` works on studies minutes
  old) are still sent; from S3 each compressed object is read from the bucket once.

The archive runs on the backends the environment selects (``DV_TEST_INDEX_URL`` / ``DV_TEST_STORAGE_URL``: on S3,
C-GET and C-MOVE read through the download-ahead spool files and the original is rebuilt from them).
"""

from __future__ import annotations

import contextlib
import io
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
import pytest
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.encaps import generate_frames
from pydicom.filereader import read_dataset
from pydicom.uid import (
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEGLSLossless,
    generate_uid,
)
from pynetdicom import AE, build_role, evt
from pynetdicom.sop_class import (  # type: ignore[attr-defined]
    CTImageStorage,
    StudyRootQueryRetrieveInformationModelGet,
    StudyRootQueryRetrieveInformationModelMove,
)

from dicomvault.bootstrap import Archive, build_archive
from dicomvault.dimse.server import DimseServer
from dicomvault.services.compression import CompressionWork
from dicomvault.settings import Settings
from tests.compression_support import locate_then_compress
from tests.conftest import free_port
from tests.dimse.conftest import ENV, dataset_bytes, identifier, received_bytes, run, stored_bytes
from tests.helpers import make_ct

JLS = str(JPEGLSLossless)
EXPLICIT = str(ExplicitVRLittleEndian)
IMPLICIT = str(ImplicitVRLittleEndian)
J2K = str(JPEG2000Lossless)
UNCOMPRESSED = (EXPLICIT, IMPLICIT)


# -- objects ---------------------------------------------------------------------------------------------------


def _reencoded(data: bytes, syntax: str) -> bytes:
    """``data`` (a native explicit VR object) in ``syntax``: implicit VR as it is, a compressed syntax by pydicom."""
    ds = pydicom.dcmread(io.BytesIO(data))
    if syntax == IMPLICIT:
        ds.file_meta.TransferSyntaxUID = ImplicitVRLittleEndian
        out = io.BytesIO()
        ds.save_as(out, enforce_file_format=True, implicit_vr=True, little_endian=True)
        return out.getvalue()
    ds.compress(syntax)
    out = io.BytesIO()
    ds.save_as(out, enforce_file_format=True)
    return out.getvalue()


@dataclass
class Item:
    """One instance of the test study: what was sent to the archive and what it keeps."""

    name: str
    sop_uid: str
    original: bytes  # the Part 10 object as received
    received_syntax: str
    compressed: bool  # compressed at rest (JPEG-LS lossless)

    @property
    def original_dataset(self) -> bytes:
        return dataset_bytes(self.original)


@dataclass
class Study:
    uid: str
    items: dict[str, Item] = field(default_factory=dict)

    def by_uid(self, sop_uid: str) -> Item:
        return next(i for i in self.items.values() if i.sop_uid == sop_uid)


def _load(archive: Archive) -> Study:
    """One study: an explicit VR CT, an implicit VR CT and a 4-frame explicit VR CT, compressed at rest (JPEG-LS
    lossless); an 8×8 CT left as it is (too small to be worth it); a CT received as JPEG 2000 lossless."""
    study = Study(generate_uid())
    series = generate_uid()
    specs: list[tuple[str, bytes, bool]] = [
        ("explicit", make_ct(study=study.uid, series=series, rows=64, columns=64, seed=1, InstanceNumber=1), True),
        ("implicit", _reencoded(make_ct(study=study.uid, series=series, rows=64, columns=64, seed=2,
                                        InstanceNumber=2), IMPLICIT), True),
        ("multiframe", make_ct(study=study.uid, series=series, rows=32, columns=48, frames=4, seed=3,
                               InstanceNumber=3), True),
        ("native", make_ct(study=study.uid, series=series, rows=8, columns=8, seed=4, InstanceNumber=4), False),
        ("j2k", _reencoded(make_ct(study=study.uid, series=series, rows=32, columns=32, seed=5,
                                   InstanceNumber=5), J2K), False),
    ]
    assert archive.compression is not None
    for name, data, compress in specs:
        result = archive.ingest.ingest(io.BytesIO(data), source="test")
        (record,) = archive.retrieve.locate(sop_uids=[result.sop_instance_uid])
        syntax = str(pydicom.dcmread(io.BytesIO(data), stop_before_pixels=True).file_meta.TransferSyntaxUID)
        if syntax in UNCOMPRESSED:  # what a compress rule does for each native instance of the study
            work = CompressionWork()
            archive.compression.compress_instance(record, JLS, work)
            assert (work.compressed, work.skipped) == ((1, 0) if compress else (0, 1)), (name, work)
        (now,) = archive.retrieve.locate(sop_uids=[result.sop_instance_uid])
        assert (now.original is not None) == compress, name
        if compress:
            assert now.transfer_syntax_uid == JLS and now.original is not None and now.original.syntax == syntax
            assert now.blob.size < len(data)
        else:
            assert now.transfer_syntax_uid == syntax
        study.items[name] = Item(name, result.sop_instance_uid, data, syntax, compress)
    return study


def _dataset(body: bytes, syntax: str) -> Dataset:
    """A data set received over the network (no File Meta Information) in ``syntax``, ready to decode."""
    ds = read_dataset(io.BytesIO(body), is_implicit_VR=syntax == IMPLICIT, is_little_endian=True)
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = syntax
    return ds


def _elements(ds: Dataset) -> dict[str, Any]:
    """Every element of ``ds`` by tag with its value (the VR left out: implicit VR reads 'OB or OW' as OW)."""
    return {str(e.tag): e.value for e in ds}


def _expected_syntax(item: Item, stored: str, accepted: set[str]) -> str:
    """What the archive sends ``item`` in to a peer that accepted ``accepted`` for CT Image Storage: as stored, else
    (compressed at rest) as received, else uncompressed, explicit VR first (``scu._target_syntax``)."""
    for ts in (stored, item.received_syntax, EXPLICIT, IMPLICIT, *sorted(accepted)):
        if ts in accepted:
            return ts
    raise AssertionError(f"{item.name}: the test peer accepted nothing ({accepted})")


def _check(study: Study, archive: Archive, received: dict[str, tuple[str, bytes]], accepted: set[str]) -> None:
    """Every instance of the study arrived once, right for a peer that accepted ``accepted`` (SOP Instance UID →
    (transfer syntax, data set bytes) received):

    - in the stored syntax (JPEG-LS for those compressed at rest): the stored object's data set, unchanged, one
      fragment per frame, whose pixels decode to the original's;
    - compressed at rest, in the syntax it was received in: the original's data set, byte for byte;
    - otherwise converted to an uncompressed syntax: element for element the original (pixels included).
    """
    assert set(received) == {i.sop_uid for i in study.items.values()}
    for uid, (syntax, body) in received.items():
        item = study.by_uid(uid)
        (record,) = archive.retrieve.locate(sop_uids=[uid])
        stored = record.transfer_syntax_uid
        assert syntax == _expected_syntax(item, stored, accepted), (item.name, syntax)
        original = pydicom.dcmread(io.BytesIO(item.original))
        if syntax == stored:
            assert body == dataset_bytes(stored_bytes(archive, uid)), f"{item.name}: the stored object, unchanged"
            if item.compressed:
                got = _dataset(body, syntax)
                frames = int(original.get("NumberOfFrames", 1) or 1)
                assert len(list(generate_frames(got.PixelData, number_of_frames=frames))) == frames
                assert np.array_equal(got.pixel_array, original.pixel_array), f"{item.name}: the original pixels"
        elif syntax == item.received_syntax:
            assert body == item.original_dataset, f"{item.name}: the original data set, byte for byte"
        else:
            got = _dataset(body, syntax)
            if item.received_syntax in UNCOMPRESSED and syntax in UNCOMPRESSED:
                assert _elements(got) == _elements(original), f"{item.name}: converted from the original"
            else:  # decoded (received JPEG 2000) or encoded (the only syntax the peer took): the same pixels
                assert np.array_equal(got.pixel_array, original.pixel_array), item.name


def _paths(folder: Path) -> dict[str, Path]:
    """The files a dcmtk tool wrote into ``folder`` by SOP Instance UID."""
    out: dict[str, Path] = {}
    for f in folder.iterdir():
        uid = str(pydicom.dcmread(f, stop_before_pixels=True).SOPInstanceUID)
        assert uid not in out, "each instance once"
        out[uid] = f
    return out


def _files(folder: Path) -> dict[str, tuple[str, bytes]]:
    """What a dcmtk tool wrote bit-preserving into ``folder``: SOP Instance UID → (transfer syntax, data set)."""
    return {uid: (str(pydicom.dcmread(f, stop_before_pixels=True).file_meta.TransferSyntaxUID),
                  dataset_bytes(f.read_bytes())) for uid, f in _paths(folder).items()}


# -- the archive and its peers ---------------------------------------------------------------------------------


@dataclass
class Vault:
    archive: Archive
    server: DimseServer
    study: Study
    #: AE title → port of the C-MOVE destinations the archive knows
    destinations: dict[str, int]

    @property
    def port(self) -> int:
        return self.server.port


@contextlib.contextmanager
def _serving(settings: Settings, **overrides: Any) -> Iterator[tuple[Archive, DimseServer]]:
    """An archive on ``settings``' data folder and backends (``overrides`` on top) and its running DIMSE server."""
    values: dict[str, Any] = {"data_dir": settings.data_dir, "index_url": settings.index_url,
                              "storage_url": settings.storage_url, **overrides}
    archive = build_archive(Settings.load(dimse_port=free_port(), http_port=free_port(), **values))
    server = DimseServer(archive)
    server.start()
    try:
        yield archive, server
    finally:
        server.stop()
        archive.close()


@pytest.fixture
def vault(settings: Settings) -> Iterator[Vault]:
    """A DIMSE server on the test's backends holding ``_load``'s study, with two C-MOVE destinations (ports
    reserved here, served by the tests that use them)."""
    destinations = {"STORESCP": free_port(), "PYSCP": free_port()}
    with _serving(settings, move_destinations={aet: f"127.0.0.1:{port}" for aet, port in destinations.items()}
                  ) as (archive, server):
        yield Vault(archive, server, _load(archive), destinations)


def _wait_for_echo(port: int, aet: str, proc: subprocess.Popen[bytes], log: Path) -> None:
    """Until the storage SCP on ``port`` (just started) answers dcmtk echoscu's C-ECHO."""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        assert proc.poll() is None, "storescp exited: " + log.read_text(errors="replace")
        if run(["echoscu", "-to", "5", "-aec", aet, "127.0.0.1", str(port)], timeout=30).returncode == 0:
            return
        time.sleep(0.1)
    raise AssertionError("storescp did not start")


@pytest.fixture
def storescp(vault: Vault, tmp_path: Path) -> Iterator[Any]:
    """A factory: ``storescp(*options)`` starts dcmtk's storescp on the STORESCP port, bit-preserving (+B), and
    returns its output folder. Stopped (its own process) at the end of the test."""
    procs: list[subprocess.Popen[bytes]] = []

    def start(*options: str) -> Path:
        assert not procs, "one storescp per test"
        out = tmp_path / "storescp"
        out.mkdir()
        log = tmp_path / "storescp.log"
        port = vault.destinations["STORESCP"]
        with log.open("wb") as sink:
            proc = subprocess.Popen(["storescp", "-aet", "STORESCP", "+B", "-od", str(out), *options, str(port)],
                                    env=ENV, cwd=out, stdout=sink, stderr=subprocess.STDOUT)
        procs.append(proc)
        _wait_for_echo(port, "STORESCP", proc, log)
        return out

    yield start
    for proc in procs:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@contextlib.contextmanager
def _pyscp(aet: str, port: int, syntaxes: list[str]) -> Iterator[dict[str, tuple[str, bytes]]]:
    """A pynetdicom storage SCP accepting CT Image Storage in ``syntaxes``; yields what it receives (SOP Instance
    UID → (transfer syntax, the raw data set bytes of the C-STORE))."""
    received: dict[str, tuple[str, bytes]] = {}
    lock = threading.Lock()

    def on_store(event: evt.Event) -> int:
        with lock:
            received[str(event.request.AffectedSOPInstanceUID)] = (str(event.context.transfer_syntax),
                                                                   received_bytes(event))
        return 0x0000

    ae = AE(ae_title=aet)
    ae.add_supported_context(CTImageStorage, syntaxes)
    server = ae.start_server(("127.0.0.1", port), block=False, evt_handlers=[(evt.EVT_C_STORE, on_store)])
    try:
        yield received
    finally:
        server.shutdown()


def _pynetdicom_get(vault: Vault, contexts: list[list[str]]) -> tuple[Dataset, dict[str, tuple[str, bytes]]]:
    """C-GET of the study by pynetdicom proposing CT Image Storage (SCP role) in each of ``contexts``, a context per
    list; the final status and what came (SOP Instance UID → (transfer syntax, raw data set of the C-STORE))."""
    received: dict[str, tuple[str, bytes]] = {}

    def on_store(event: evt.Event) -> int:
        received[str(event.request.AffectedSOPInstanceUID)] = (str(event.context.transfer_syntax),
                                                               received_bytes(event))
        return 0x0000

    ae = AE(ae_title="GETSCU")
    ae.add_requested_context(StudyRootQueryRetrieveInformationModelGet)
    for syntaxes in contexts:
        ae.add_requested_context(CTImageStorage, syntaxes)
    assoc = ae.associate("127.0.0.1", vault.port, ae_title="DICOMVAULT",
                         ext_neg=[build_role(CTImageStorage, scp_role=True)],
                         evt_handlers=[(evt.EVT_C_STORE, on_store)])
    assert assoc.is_established
    try:
        statuses = [s for s, _ in assoc.send_c_get(identifier("STUDY", StudyInstanceUID=vault.study.uid),
                                                     StudyRootQueryRetrieveInformationModelGet)]
    finally:
        assoc.release()
    return statuses[-1], received


def _pynetdicom_move(vault: Vault, destination: str) -> Dataset:
    ae = AE(ae_title="MOVESCU")
    ae.add_requested_context(StudyRootQueryRetrieveInformationModelMove)
    assoc = ae.associate("127.0.0.1", vault.port, ae_title="DICOMVAULT")
    assert assoc.is_established
    try:
        responses = list(assoc.send_c_move(identifier("STUDY", StudyInstanceUID=vault.study.uid), destination,
                                           StudyRootQueryRetrieveInformationModelMove))
    finally:
        assoc.release()
    final: Dataset = responses[-1][0]
    return final


def _all_completed(final: Dataset, count: int) -> None:
    assert final.Status == 0x0000, final
    assert (final.NumberOfCompletedSuboperations, final.NumberOfFailedSuboperations,
            final.NumberOfWarningSuboperations) == (count, 0, 0)


# -- C-GET -----------------------------------------------------------------------------------------------------

#: getscu's storage proposals (incoming associations): its option → the syntaxes the archive accepts for CT Image
#: Storage in them (getscu proposes one context per SOP class; the archive takes the first syntax the requestor
#: proposed that it supports, ``dimse.get_contexts``).
GETSCU = {
    "default": ([], {EXPLICIT}),  # +x=: explicit VR (local = little endian) first, then the other uncompressed
    # (+xi, "implicit VR only", makes dcmtk 3.6.7's getscu propose Explicit VR Little Endian only)
    "jpeg-ls": (["+xt"], {JLS}),  # JPEG-LS lossless first, then uncompressed: the archive accepts JPEG-LS
}


@pytest.mark.parametrize("proposal", list(GETSCU))
def test_getscu(vault: Vault, tmp_path: Path, proposal: str) -> None:
    """dcmtk getscu (bit-preserving): an uncompressed peer gets each original it can take in its received syntax
    byte for byte; a JPEG-LS peer gets the stored objects, which dcmtk's own JPEG-LS decoder turns back into the
    original pixel data."""
    options, accepted = GETSCU[proposal]
    out = tmp_path / "got"
    out.mkdir()
    r = run(["getscu", "-S", "+B", *options, "-od", str(out), "-aec", "DICOMVAULT",
             "-k", "QueryRetrieveLevel=STUDY", "-k", f"StudyInstanceUID={vault.study.uid}",
             "127.0.0.1", str(vault.port)], cwd=out)
    assert r.returncode == 0, r.stdout + r.stderr
    received = _files(out)
    _check(vault.study, vault.archive, received, accepted)
    if JLS not in accepted:
        return
    for name in ("explicit", "multiframe"):  # dcmdjpls: the original Pixel Data value, bit for bit
        item = vault.study.items[name]
        path = _paths(out)[item.sop_uid]
        decoded = tmp_path / f"{name}-decoded.dcm"
        r = run(["dcmdjpls", str(path), str(decoded)])
        assert r.returncode == 0, r.stdout + r.stderr
        assert pydicom.dcmread(decoded).PixelData == pydicom.dcmread(io.BytesIO(item.original)).PixelData, name


#: pynetdicom C-GET proposals (a context per list) → what the archive accepts for CT Image Storage
PYNETDICOM_GET = {
    "explicit+implicit": [[EXPLICIT], [IMPLICIT]],
    "implicit": [[IMPLICIT]],
    "jpeg-ls+explicit": [[JLS], [EXPLICIT]],
}


@pytest.mark.parametrize("proposal", list(PYNETDICOM_GET))
def test_pynetdicom_get(vault: Vault, proposal: str) -> None:
    """pynetdicom C-GET: the raw data set of each C-STORE sub-operation. With explicit and implicit VR proposed in
    contexts of their own, every original comes back in the syntax it was received in, byte for byte."""
    contexts = PYNETDICOM_GET[proposal]
    final, received = _pynetdicom_get(vault, contexts)
    _all_completed(final, len(vault.study.items))
    _check(vault.study, vault.archive, received, {ts for cx in contexts for ts in cx})


# -- C-MOVE ----------------------------------------------------------------------------------------------------

#: storescp's options → the syntaxes it accepts of those the archive proposes (a context per stored and per
#: received syntax, plus one with both uncompressed syntaxes: ``scu.proposed_contexts``)
STORESCP = {
    "default": ([], {EXPLICIT, IMPLICIT}),  # the uncompressed syntaxes
    "implicit": (["+xi"], {IMPLICIT}),
    "accept-all": (["+xa"], {EXPLICIT, IMPLICIT, JLS, J2K}),
}


@pytest.mark.parametrize("proposal", list(STORESCP))
def test_movescu_to_storescp(vault: Vault, storescp: Any, proposal: str) -> None:
    """dcmtk movescu moves the study to dcmtk storescp (bit-preserving)."""
    options, accepted = STORESCP[proposal]
    out = storescp(*options)
    r = run(["movescu", "-S", "-aet", "MOVESCU", "-aem", "STORESCP", "-aec", "DICOMVAULT",
             "-k", "QueryRetrieveLevel=STUDY", "-k", f"StudyInstanceUID={vault.study.uid}",
             "127.0.0.1", str(vault.port)])
    assert r.returncode == 0, r.stdout + r.stderr
    _check(vault.study, vault.archive, _files(out), accepted)


@pytest.mark.parametrize("syntaxes", [[EXPLICIT, IMPLICIT], [JLS, EXPLICIT]], ids=["uncompressed", "jpeg-ls"])
def test_pynetdicom_move_to_pynetdicom(vault: Vault, syntaxes: list[str]) -> None:
    """pynetdicom moves the study to a pynetdicom storage SCP accepting ``syntaxes``."""
    with _pyscp("PYSCP", vault.destinations["PYSCP"], syntaxes) as received:
        final = _pynetdicom_move(vault, "PYSCP")
    _all_completed(final, len(vault.study.items))
    _check(vault.study, vault.archive, received, set(syntaxes))


def test_originals_are_rebuilt_from_the_downloaded_copy(tmp_path: Path, s3_bucket_url: str,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """From an S3 store, a C-GET downloads the next objects ahead into spool files (``services.prefetch``); an
    uncompressed peer's originals are rebuilt from those downloads, so each compressed object is read from the
    bucket once, not once ahead and once more to rebuild it."""
    with _serving(Settings.load(data_dir=tmp_path / "vault"), storage_url=s3_bucket_url) as (archive, server):
        study = _load(archive)
        reads: list[str] = []
        blobs = archive.retrieve.blobs
        opened = blobs.open

        def counting_open(key: str) -> Any:
            reads.append(key)
            return opened(key)

        with monkeypatch.context() as patched:
            patched.setattr(blobs, "open", counting_open)
            final, received = _pynetdicom_get(Vault(archive, server, study, {}), [[EXPLICIT], [IMPLICIT]])
        _all_completed(final, len(study.items))
        _check(study, archive, received, {EXPLICIT, IMPLICIT})
        names = {r.blob.key: study.by_uid(r.sop_uid).name for r in archive.retrieve.locate(study_uid=study.uid)}
        read = [names[k] for k in reads]
        compressed = [name for name, item in study.items.items() if item.compressed]
        assert sorted(n for n in read if n in compressed) == sorted(compressed), read


@pytest.mark.parametrize("syntaxes", [[[EXPLICIT], [IMPLICIT]], [[JLS], [EXPLICIT]]], ids=["uncompressed", "jpeg-ls"])
def test_instances_compressed_while_a_retrieve_runs(settings: Settings, monkeypatch: pytest.MonkeyPatch,
                                                    syntaxes: list[list[str]]) -> None:
    """``compress_on_ingest`` compresses a study about 30 s after it arrived, when it is likely being read: a
    C-GET that selected its instances just before they were switched to their compressed blobs (and the originals'
    blobs removed) still sends every one, as it now is."""
    with _serving(settings) as (archive, server):
        study = Study(generate_uid())
        series = generate_uid()
        for n, data in enumerate([make_ct(study=study.uid, series=series, rows=64, columns=64, seed=1),
                                  _reencoded(make_ct(study=study.uid, series=series, rows=64, columns=64, seed=2),
                                             IMPLICIT),
                                  make_ct(study=study.uid, series=series, rows=32, columns=48, frames=4, seed=3)]):
            uid = archive.ingest.ingest(io.BytesIO(data)).sop_instance_uid
            syntax = str(pydicom.dcmread(io.BytesIO(data), stop_before_pixels=True).file_meta.TransferSyntaxUID)
            study.items[f"item{n}"] = Item(f"item{n}", uid, data, syntax, True)
        with monkeypatch.context() as patched:
            patched.setattr(archive.retrieve, "locate", locate_then_compress(archive, JLS))
            final, received = _pynetdicom_get(Vault(archive, server, study, {}), syntaxes)
        _all_completed(final, len(study.items))
        _check(study, archive, received, {ts for cx in syntaxes for ts in cx})
