"""Duplicates (issue #10): the same data set in other bytes is a duplicate, a different one a conflict, and a
re-send repairs a missing or damaged stored copy. Runs on every index and blob store (DV_TEST_* variables)."""

from __future__ import annotations

import io
import subprocess
from pathlib import Path

import pydicom
import pytest
from pydicom.uid import ExplicitVRBigEndian, ImplicitVRLittleEndian, generate_uid

from dicomvault.bootstrap import Archive, build_archive
from dicomvault.domain.errors import Conflict
from dicomvault.domain.records import DuplicatePolicy, StoreOutcome
from dicomvault.services.fixity import FixityService
from dicomvault.services.ingest import IngestResult
from dicomvault.settings import Settings
from tests.helpers import deflated, make_ct


def ingest(archive: Archive, data: bytes) -> IngestResult:
    return archive.ingest.ingest(io.BytesIO(data), source="test")


def reencoded(data: bytes, *, source_aet: str | None = None, **attrs: object) -> bytes:
    """``data`` written again by pydicom (same transfer syntax), with another File Meta or attribute values."""
    ds = pydicom.dcmread(io.BytesIO(data))
    if source_aet is not None:
        ds.file_meta.SourceApplicationEntityTitle = source_aet
    for name, value in attrs.items():
        setattr(ds, name, value)
    out = io.BytesIO()
    ds.save_as(out, enforce_file_format=True)
    return out.getvalue()


def dcmconv(data: bytes, option: str, tmp_path: Path) -> bytes:
    """``data`` converted by dcmtk (``+ti`` implicit VR, ``+tb`` big endian), as storescu -xi/-xb would send it."""
    src, out = tmp_path / "in.dcm", tmp_path / "out.dcm"
    src.write_bytes(data)
    subprocess.run(["dcmconv", option, str(src), str(out)], check=True, capture_output=True, timeout=60)
    converted = out.read_bytes()
    wanted = ImplicitVRLittleEndian if option == "+ti" else ExplicitVRBigEndian
    assert pydicom.dcmread(io.BytesIO(converted)).file_meta.TransferSyntaxUID == wanted
    return converted


def served(archive: Archive, sop: str) -> bytes:
    rec = archive.retrieve.locate(sop_uids=[sop])[0]
    return b"".join(archive.retrieve.iter_bytes(rec, verify=True))


@pytest.mark.parametrize("variant", ["other AE title", "implicit VR", "big endian", "deflated"])
def test_same_data_set_in_other_bytes_is_a_duplicate(archive: Archive, variant: str, tmp_path: Path) -> None:
    first = make_ct(sop=generate_uid(), rows=64, columns=64)
    again = {
        "other AE title": lambda: reencoded(first, source_aet="OTHERAE"),
        "implicit VR": lambda: dcmconv(first, "+ti", tmp_path),
        "big endian": lambda: dcmconv(first, "+tb", tmp_path),
        "deflated": lambda: deflated(first),
    }[variant]()
    assert again != first
    stored = ingest(archive, first)
    keys = sorted(archive.blobs.iter_keys())
    res = ingest(archive, again)
    assert res.outcome == StoreOutcome.DUPLICATE and res.warning is None
    assert res.blob == stored.blob  # the stored copy stays the one served
    assert sorted(archive.blobs.iter_keys()) == keys, "nothing stored twice"
    assert archive.index.stats().instances == 1
    assert served(archive, stored.sop_instance_uid) == first


def test_different_data_set_is_a_conflict(archive: Archive, tmp_path: Path) -> None:
    first = make_ct(sop=generate_uid())
    ingest(archive, first)
    keys = sorted(archive.blobs.iter_keys())
    for other in (reencoded(first, PatientName="Other^Patient"),
                  dcmconv(reencoded(first, PatientName="Other^Patient"), "+ti", tmp_path),
                  make_ct(sop=pydicom.dcmread(io.BytesIO(first)).SOPInstanceUID, seed=7)):
        with pytest.raises(Conflict, match="a different object with this SOP Instance UID is already stored"):
            ingest(archive, other)
    assert sorted(archive.blobs.iter_keys()) == keys
    assert served(archive, pydicom.dcmread(io.BytesIO(first)).SOPInstanceUID) == first


@pytest.mark.parametrize("damage", ["missing", "corrupt"])
def test_resend_repairs_the_stored_copy(archive: Archive, damage: str) -> None:
    data = make_ct(sop=generate_uid())
    res = ingest(archive, data)
    key = res.blob.key
    archive.blobs.delete(key)
    if damage == "corrupt":
        archive.blobs.put(io.BytesIO(b"x"))  # keep the store non-empty; then damage the blob in place
        path = (archive.tiers.ingest_store if archive.tiers else archive.blobs).local_path(key)
        if path is None:
            pytest.skip("damaging a blob in place needs a filesystem store")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data[:-1] + b"\x00")
    assert ingest(archive, data).outcome == StoreOutcome.DUPLICATE
    assert served(archive, res.sop_instance_uid) == data
    report = FixityService(archive.index, archive.blobs, archive.remover).check()
    assert not report.damaged


def test_stored_copy_that_cannot_be_compared_is_refused(archive: Archive) -> None:
    first = make_ct(sop=generate_uid())
    res = ingest(archive, first)
    archive.blobs.delete(res.blob.key)
    with pytest.raises(Conflict, match="damaged"):
        ingest(archive, reencoded(first, source_aet="OTHERAE"))


@pytest.mark.parametrize("policy", [DuplicatePolicy.REPLACE, DuplicatePolicy.KEEP_BOTH])
def test_other_policies_keep_the_same_data_set_and_take_a_different_one(tmp_path: Path,
                                                                         policy: DuplicatePolicy) -> None:
    archive = build_archive(Settings.load(data_dir=tmp_path / "v", duplicate_policy=policy))
    try:
        first = make_ct(sop=generate_uid())
        stored = ingest(archive, first)
        res = ingest(archive, dcmconv(first, "+ti", tmp_path))
        assert res.outcome == StoreOutcome.DUPLICATE and res.blob == stored.blob
        assert served(archive, stored.sop_instance_uid) == first
        other = reencoded(first, PatientName="Other^Patient")
        expected = StoreOutcome.REPLACED if policy == DuplicatePolicy.REPLACE else StoreOutcome.VERSIONED
        assert ingest(archive, other).outcome == expected
        assert served(archive, stored.sop_instance_uid) == other
    finally:
        archive.close()
