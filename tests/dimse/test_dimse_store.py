"""C-STORE from real peers (dcmtk storescu, pynetdicom): exact bytes kept, bad input refused cleanly."""

from __future__ import annotations

import io
import os
import subprocess
import threading
from pathlib import Path

import pydicom
import pytest
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian, generate_uid
from pynetdicom import AE, AllStoragePresentationContexts, StoragePresentationContexts, _config
from pynetdicom.sop_class import CTImageStorage, Verification  # type: ignore[attr-defined]

from dicomvault.domain.tags import Level
from dicomvault.services.part10 import dataset_offset
from tests.conftest import DAMAGED, corpus_dir
from tests.dimse.conftest import Running, start
from tests.helpers import make_ct

ENV = {**os.environ, "TCP_NODELAY": "1"}



def dataset_bytes(data: bytes) -> bytes:
    return data[dataset_offset(data[:4096]) :]


def same_elements(a: pydicom.Dataset, b: pydicom.Dataset) -> bool:
    def strip(ds: pydicom.Dataset) -> dict[int, object]:
        return {int(e.tag): e.value for e in ds if e.tag.element != 0 and e.tag != 0xFFFCFFFC}
    return strip(a) == strip(b)


def stored_bytes(running: Running, sop_uid: str) -> bytes:
    [rec] = running.archive.retrieve.locate(sop_uids=[sop_uid])
    return b"".join(running.archive.retrieve.iter_bytes(rec, verify=True))


def test_echo_with_echoscu(dimse: Running) -> None:
    r = subprocess.run(["echoscu", "-aec", "DICOMVAULT", "127.0.0.1", str(dimse.port)], env=ENV,
                       capture_output=True, text=True, timeout=30)
    assert r.returncode == 0, r.stderr


def test_storescu_corpus_is_kept_byte_for_byte(dimse: Running, corpus: list[Path]) -> None:
    r = subprocess.run(["storescu", "-nh", "-R", "-aec", "DICOMVAULT", "127.0.0.1", str(dimse.port), *map(str, corpus)],
                       env=ENV, capture_output=True, text=True, timeout=180)
    stored = 0
    for path in corpus:
        original = pydicom.dcmread(path, force=True)
        uid = str(original.SOPInstanceUID)
        if not dimse.archive.retrieve.locate(sop_uids=[uid]):
            continue
        stored += 1
        # dcmtk re-encodes what it sends (group lengths, padding), so compare element by element; pixel data
        # must be identical.
        kept = pydicom.dcmread(io.BytesIO(stored_bytes(dimse, uid)))
        assert same_elements(kept, original), path.name
    # dcmtk refuses a few deliberately odd corpus files itself (it logs why); everything it sent is stored.
    sent = r.stderr.count("Received Store Response (Success)") + r.stdout.count("Received Store Response (Success)")
    assert stored >= len(corpus) * 0.8, r.stderr[-3000:]
    assert stored >= sent


def test_pynetdicom_corpus_exact_bytes(dimse: Running, corpus: list[Path]) -> None:
    """pynetdicom sends a file's dataset bytes unchanged (chunked mode), so the archive must keep exactly them."""
    ae = AE(ae_title="PYSCU")
    pairs: dict[str, set[str]] = {}
    for path in corpus:
        ds = pydicom.dcmread(path, stop_before_pixels=True)
        if "TransferSyntaxUID" in ds.file_meta:
            pairs.setdefault(str(ds.SOPClassUID), set()).add(str(ds.file_meta.TransferSyntaxUID))
    for sop_class, syntaxes in pairs.items():
        for ts in sorted(syntaxes):
            if len(ae.requested_contexts) < 128:
                ae.add_requested_context(sop_class, [ts])
    assoc = ae.associate("127.0.0.1", dimse.port, ae_title="DICOMVAULT")
    assert assoc.is_established
    proposed = {(str(cx.abstract_syntax), str(cx.transfer_syntax[0])) for cx in assoc.accepted_contexts}
    sent: list[tuple[Path, str]] = []
    _config.STORE_SEND_CHUNKED_DATASET = True
    try:
        for path in [*corpus, *(corpus_dir() / name for name in sorted(DAMAGED))]:
            ds = pydicom.dcmread(path, stop_before_pixels=True)
            if (str(ds.SOPClassUID), str(ds.file_meta.get("TransferSyntaxUID"))) not in proposed:
                continue
            status = assoc.send_c_store(path)
            if path.name in DAMAGED:
                # Cut-short corpus files must be refused as 'cannot understand', with the reason.
                assert status.Status == 0xC000 and "truncated" in status.ErrorComment, path.name
                continue
            assert status.Status == 0x0000, (path.name, hex(status.Status), status.get("ErrorComment"))
            sent.append((path, str(ds.SOPInstanceUID)))
    finally:
        _config.STORE_SEND_CHUNKED_DATASET = False
    assoc.release()
    assert len(sent) >= len(corpus) * 0.8
    for path, uid in sent:
        kept = stored_bytes(dimse, uid)
        assert dataset_bytes(kept) == dataset_bytes(path.read_bytes()), path.name
        assert pydicom.dcmread(io.BytesIO(kept)).file_meta.SourceApplicationEntityTitle == "PYSCU"


def _assoc(port: int, aet: str = "PYSCU") -> object:
    ae = AE(ae_title=aet)
    ae.add_requested_context(CTImageStorage, [ExplicitVRLittleEndian])
    ae.add_requested_context(CTImageStorage, [ImplicitVRLittleEndian])
    ae.add_requested_context(Verification)
    return ae.associate("127.0.0.1", port, ae_title="DICOMVAULT")


def test_bad_objects_get_failure_status_and_the_association_continues(dimse: Running, tmp_path: Path) -> None:
    assoc = _assoc(dimse.port)
    assert assoc.is_established  # type: ignore[attr-defined]
    # 1. a dataset without Series Instance UID: "does not match SOP class"
    bad = pydicom.dcmread(io.BytesIO(make_ct()))
    del bad.SeriesInstanceUID
    st = assoc.send_c_store(bad)  # type: ignore[attr-defined]
    assert st.Status == 0xA900 and "SeriesInstanceUID" in st.ErrorComment
    # 2. a truncated object sent as raw bytes from a file: "cannot understand"
    truncated = tmp_path / "truncated.dcm"
    full = make_ct(rows=64, columns=64)
    truncated.write_bytes(full[: dataset_offset(full[:4096]) + 300])
    _config.STORE_SEND_CHUNKED_DATASET = True
    try:
        st = assoc.send_c_store(truncated)  # type: ignore[attr-defined]
    finally:
        _config.STORE_SEND_CHUNKED_DATASET = False
    assert 0xA900 <= st.Status <= 0xCFFF, hex(st.Status)
    assert st.ErrorComment
    # 3. the same association still stores a good object
    good = pydicom.dcmread(io.BytesIO(make_ct()))
    assert assoc.send_c_store(good).Status == 0x0000  # type: ignore[attr-defined]
    assoc.release()  # type: ignore[attr-defined]
    assert dimse.archive.index.stats().instances == 1


def test_duplicate_with_different_content_gets_a_warning(dimse: Running) -> None:
    sop = generate_uid()
    assoc = _assoc(dimse.port)
    first = pydicom.dcmread(io.BytesIO(make_ct(sop=sop, seed=1)))
    assert assoc.send_c_store(first).Status == 0x0000  # type: ignore[attr-defined]
    assert assoc.send_c_store(first).Status == 0x0000  # type: ignore[attr-defined]  # identical: success
    other = pydicom.dcmread(io.BytesIO(make_ct(sop=sop, seed=2)))
    st = assoc.send_c_store(other)  # type: ignore[attr-defined]
    assert st.Status == 0xB006 and "different" in st.ErrorComment
    assoc.release()  # type: ignore[attr-defined]
    assert dimse.archive.index.stats().instances == 1


def test_concurrent_associations_into_one_study(dimse: Running) -> None:
    study, series = generate_uid(), generate_uid()
    objects = [pydicom.dcmread(io.BytesIO(make_ct(study=study, series=series, InstanceNumber=i, seed=i)))
               for i in range(60)]
    failures: list[str] = []

    def worker(chunk: list[pydicom.Dataset]) -> None:
        assoc = _assoc(dimse.port)
        for ds in chunk:
            st = assoc.send_c_store(ds)  # type: ignore[attr-defined]
            if st.Status != 0:
                failures.append(hex(st.Status))
        assoc.release()  # type: ignore[attr-defined]

    threads = [threading.Thread(target=worker, args=(objects[i::4] + objects[: 5],)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not failures
    [row] = dimse.archive.query.search(dimse.archive.query.build_spec(Level.STUDY, {"StudyInstanceUID": study}))
    assert row["00201208"]["Value"] == [60] and row["00201206"]["Value"] == [1]
    assert dimse.archive.index.stats().instances == 60


def test_unknown_calling_aet_is_rejected(tmp_path: Path) -> None:
    running = start(tmp_path, allowed_calling_aets=["MODALITY1"])
    try:
        assert not _assoc(running.port, "INTRUDER").is_established  # type: ignore[attr-defined]
        ok = _assoc(running.port, "MODALITY1")
        assert ok.is_established  # type: ignore[attr-defined]
        ok.release()  # type: ignore[attr-defined]
    finally:
        running.server.stop()
        running.archive.close()


@pytest.mark.parametrize("contexts", [StoragePresentationContexts[:5]])
def test_storage_contexts_cover_pynetdicom_storage_classes(dimse: Running, contexts: list[object]) -> None:
    supported = {str(cx.abstract_syntax) for cx in dimse.server.ae.supported_contexts}
    assert {str(cx.abstract_syntax) for cx in AllStoragePresentationContexts} <= supported
