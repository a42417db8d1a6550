"""Attribute coercion on ingest (issue #12 item 2) through the real ingest, on the backends the environment selects:
rules chosen by sender, modality and SOP class change what is stored, the Original Attributes Sequence records
every previous value, and pixel data and everything after it stay byte for byte as received."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import pydicom
import pytest
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset

from dicomvault.bootstrap import Archive, build_archive
from dicomvault.domain.errors import ConfigurationError
from dicomvault.domain.tags import Level
from dicomvault.settings import Settings
from tests.helpers import make_ct

ACME = {"name": "ACME PACS", "when": {"source": "ACMEPACS"},
        "issuer_of_patient_id": "ACME", "issuer_qualifiers": {"UniversalEntityID": "1.2.3.4",
                                                             "UniversalEntityIDType": "ISO"},
        "prefix": {"AccessionNumber": "ACME-"}, "map": {"InstitutionName": {"GH": "General Hospital"}},
        "set": {"InstitutionalDepartmentName": "Radiology"}, "remove": ["OtherPatientIDs"]}


def _archive(settings: Settings, rules: list[dict[str, Any]], **extra: Any) -> Archive:
    return build_archive(Settings.load(data_dir=settings.data_dir, index_url=settings.index_url,
                                       storage_url=settings.storage_url, coercion=rules, **extra))


def _stored(archive: Archive, sop_uid: str) -> bytes:
    (record,) = archive.retrieve.locate(sop_uids=[sop_uid])
    return b"".join(archive.retrieve.iter_bytes(record, verify=True))


def _pixels_and_after(data: bytes) -> bytes:
    """The bytes from the Pixel Data element's tag to the end (what coercion must never touch)."""
    ds = pydicom.dcmread(io.BytesIO(data), defer_size=16)
    raw = ds.get_item(0x7FE00010, keep_deferred=True)
    header = 12 if ds.file_meta.TransferSyntaxUID != "1.2.840.10008.1.2" else 8
    return data[int(raw.value_tell) - header:]


def test_rules_change_what_is_stored_and_record_every_previous_value(settings: Settings) -> None:
    archive = _archive(settings, [ACME])
    try:
        data = make_ct(AccessionNumber="A123", InstitutionName="GH", OtherPatientIDs="OLD-9")
        result = archive.ingest.ingest(io.BytesIO(data), source="dimse:ACMEPACS")
        stored = _stored(archive, result.sop_instance_uid)
        ds = pydicom.dcmread(io.BytesIO(stored))
        assert ds.AccessionNumber == "ACME-A123" and ds.InstitutionName == "General Hospital"
        assert ds.IssuerOfPatientID == "ACME" and ds.InstitutionalDepartmentName == "Radiology"
        assert ds.IssuerOfPatientIDQualifiersSequence[0].UniversalEntityID == "1.2.3.4"
        assert "OtherPatientIDs" not in ds
        [item] = ds.OriginalAttributesSequence
        assert item.ReasonForTheAttributeModification == "COERCE" and item.ModifyingSystem == "dicomvault"
        assert item.SourceOfPreviousValues == "ACMEPACS" and item.AttributeModificationDateTime
        [before] = item.ModifiedAttributesSequence
        assert before.AccessionNumber == "A123" and before.InstitutionName == "GH"
        assert before.OtherPatientIDs == "OLD-9"
        assert before["IssuerOfPatientID"].is_empty and before["InstitutionalDepartmentName"].is_empty, \
            "attributes that were added appear with zero length"
        assert "IssuerOfPatientIDQualifiersSequence" in before
        assert _pixels_and_after(stored) == _pixels_and_after(data)
        # the index describes the stored object
        found = archive.query.search(archive.query.build_spec(Level.STUDY, {"AccessionNumber": "ACME-A123"}))
        assert len(found) == 1
        assert archive.query.search(archive.query.build_spec(Level.STUDY, {"AccessionNumber": "A123"})) == []
    finally:
        archive.close()


def test_rules_apply_only_to_their_senders_and_a_no_op_stores_the_bytes_received(settings: Settings) -> None:
    rules = [ACME, {"name": "MR only", "when": {"modality": "MR"}, "set": {"InstitutionName": "MR centre"}}]
    archive = _archive(settings, rules)
    try:
        data = make_ct(AccessionNumber="B1", InstitutionName="GH")
        other = archive.ingest.ingest(io.BytesIO(data), source="dimse:OTHER")
        assert _stored(archive, other.sop_instance_uid) == data, "no rule matches: byte for byte as received"
        stow = archive.ingest.ingest(io.BytesIO(make_ct(Modality="MR", InstitutionName="MR centre")),
                                     source="stow:viewer")
        stored = pydicom.dcmread(io.BytesIO(_stored(archive, stow.sop_instance_uid)))
        assert "OriginalAttributesSequence" not in stored, "the value was already right: nothing changed"
        mr = archive.ingest.ingest(io.BytesIO(make_ct(Modality="MR", InstitutionName="X")), source="stow:viewer")
        assert pydicom.dcmread(io.BytesIO(_stored(archive, mr.sop_instance_uid))).InstitutionName == "MR centre"
    finally:
        archive.close()


@pytest.mark.parametrize("name", ["MR_small_implicit.dcm", "MR_small_bigendian.dcm", "JPEG2000.dcm",
                                  "image_dfl.dcm", "SC_rgb_small_odd.dcm"])
def test_every_encoding_keeps_its_pixel_data(settings: Settings, name: str) -> None:
    path = get_testdata_file(name)
    assert path is not None
    data = Path(str(path)).read_bytes()
    archive = _archive(settings, [{"name": "all", "when": {}, "set": {"InstitutionName": "Coerced"}}])
    try:
        result = archive.ingest.ingest(io.BytesIO(data), source="cli-import")
        stored = _stored(archive, result.sop_instance_uid)
        ds, original = pydicom.dcmread(io.BytesIO(stored)), pydicom.dcmread(io.BytesIO(data))
        assert ds.InstitutionName == "Coerced"
        assert ds.OriginalAttributesSequence[-1].ModifiedAttributesSequence[0].get("InstitutionName", "") == \
            original.get("InstitutionName", "")
        assert (ds.pixel_array == original.pixel_array).all()
        if name == "image_dfl.dcm":
            assert ds.file_meta.TransferSyntaxUID == "1.2.840.10008.1.2.1", "a deflated object is stored inflated"
        else:
            assert ds.file_meta.TransferSyntaxUID == original.file_meta.TransferSyntaxUID
            assert _pixels_and_after(stored) == _pixels_and_after(data)
    finally:
        archive.close()


def test_character_set_normalised_to_utf8(settings: Settings) -> None:
    ds = pydicom.dcmread(io.BytesIO(make_ct()))
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.PatientName = "Müller^Jürgen"
    ds.StudyDescription = "Thorax Übersicht"
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    archive = _archive(settings, [{"name": "utf8", "character_set": "ISO_IR 192"}])
    try:
        result = archive.ingest.ingest(io.BytesIO(buf.getvalue()), source="dimse:X")
        stored = _stored(archive, result.sop_instance_uid)
        back = pydicom.dcmread(io.BytesIO(stored))
        assert back.SpecificCharacterSet == "ISO_IR 192"
        assert str(back.PatientName) == "Müller^Jürgen" and back.StudyDescription == "Thorax Übersicht"
        assert "Müller".encode() in stored, "stored as UTF-8"
        assert back.OriginalAttributesSequence[0].ModifiedAttributesSequence[0].SpecificCharacterSet == "ISO_IR 100"
    finally:
        archive.close()


def test_a_rule_naming_an_unknown_peer_is_refused_at_start_up(settings: Settings) -> None:
    rule = {"name": "from PACS9", "when": {"peer": "PACS9"}, "set": {"InstitutionName": "x"}}
    with pytest.raises(ConfigurationError, match="'PACS9' is not a known peer"):
        _archive(settings, [rule])
    archive = _archive(settings, [rule], dimse_peers={"PACS9": {"permissions": ["store"]}})
    try:
        result = archive.ingest.ingest(io.BytesIO(make_ct()), source="dimse:PACS9")
        assert pydicom.dcmread(io.BytesIO(_stored(archive, result.sop_instance_uid))).InstitutionName == "x"
    finally:
        archive.close()


def test_the_original_attributes_sequence_grows_with_each_coercion(settings: Settings) -> None:
    ds = pydicom.dcmread(io.BytesIO(make_ct(InstitutionName="A")))
    earlier = Dataset()
    earlier.ReasonForTheAttributeModification = "CORRECT"
    ds.OriginalAttributesSequence = [earlier]
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    archive = _archive(settings, [{"name": "B", "set": {"InstitutionName": "B"}}])
    try:
        result = archive.ingest.ingest(io.BytesIO(buf.getvalue()), source="dimse:X")
        back = pydicom.dcmread(io.BytesIO(_stored(archive, result.sop_instance_uid)))
        assert [i.ReasonForTheAttributeModification for i in back.OriginalAttributesSequence] == ["CORRECT", "COERCE"]
    finally:
        archive.close()
