"""Coercion for one destination (issue #12 item 3, "optionally after coercion for that destination"): a route's
``coerce = [...]`` rules change the copy it forwards, with an Original Attributes Sequence item naming the archive,
never the stored object nor another route's copy; ``ingest = false`` rules do not apply on ingest; a route naming
an unknown rule refuses the start-up."""

from __future__ import annotations

import contextlib
import io
from collections.abc import Iterator
from typing import Any

import pydicom
import pytest
from pydicom.uid import ExplicitVRLittleEndian, generate_uid
from pynetdicom import AE, ALL_TRANSFER_SYNTAXES, AllStoragePresentationContexts, evt

from dicomvault.bootstrap import Archive
from dicomvault.coercion_settings import CoercionRule
from dicomvault.domain.errors import ConfigurationError
from dicomvault.domain.peers import RemotePeer
from dicomvault.settings import Settings
from tests.conftest import free_port
from tests.helpers import make_ct
from tests.routing_support import open_archive, route_worker, routed, wait_for

RULES = [
    {"name": "PACS B", "ingest": False, "prefix": {"AccessionNumber": "B-"}, "set": {"InstitutionName": "Site B"}},
    {"name": "MR only", "ingest": False, "when": {"modality": "MR"}, "set": {"StationName": "NEVER"}},
]


@contextlib.contextmanager
def keeping_scp(aet: str) -> Iterator[tuple[RemotePeer, dict[str, bytes]]]:
    """A pynetdicom storage SCP keeping each object's data set bytes as received."""
    received: dict[str, bytes] = {}

    def handler(event: evt.Event) -> int:
        received[str(event.request.AffectedSOPInstanceUID)] = event.request.DataSet.getvalue()
        return 0

    ae = AE(ae_title=aet)
    syntaxes = [ExplicitVRLittleEndian, *(ts for ts in ALL_TRANSFER_SYNTAXES if ts != ExplicitVRLittleEndian)]
    for cx in AllStoragePresentationContexts:
        ae.add_supported_context(cx.abstract_syntax, syntaxes)  # the stored syntax first: objects go as stored
    port = free_port()
    server = ae.start_server(("127.0.0.1", port), block=False, evt_handlers=[(evt.EVT_C_STORE, handler)])
    try:
        yield RemotePeer(aet=aet, host="127.0.0.1", port=port), received
    finally:
        server.shutdown()


def _coercing(settings: Settings, *routes: dict[str, Any]) -> Settings:
    return routed(settings, *routes).model_copy(
        update={"coercion": [CoercionRule.model_validate(r) for r in RULES]})


def _dataset(raw: bytes, syntax: str = "1.2.840.10008.1.2.1") -> pydicom.Dataset:
    meta = pydicom.dataset.FileMetaDataset()
    meta.TransferSyntaxUID = syntax
    ds = pydicom.dcmread(io.BytesIO(raw), force=True)
    ds.file_meta = meta
    return ds


def test_the_forwarded_copy_is_coerced_for_its_destination_only(settings: Settings) -> None:
    with keeping_scp("PACSB") as (b, at_b), keeping_scp("PACSC") as (c, at_c):
        archive: Archive = open_archive(_coercing(settings, {"name": "to B", "to": "PACSB", "coerce": ["PACS B",
                                                                                                      "MR only"]},
                                                  {"name": "to C", "to": "PACSC"}), b, c)
        try:
            assert archive.routing is not None
            archive.routing.check_destinations()
            original = make_ct(study=generate_uid(), AccessionNumber="A1", InstitutionName="General")
            stored = archive.ingest.ingest(io.BytesIO(original), source="dimse:CT1")
            with route_worker(archive):
                wait_for(lambda: len(at_b) == 1 and len(at_c) == 1, what="both copies delivered")
            uid = stored.sop_instance_uid
            # the stored object and the other route's copy: as received (ingest = false rules never ran)
            [record] = archive.retrieve.locate(sop_uids=[uid])
            with archive.retrieve.as_file(record) as path:
                kept = path.read_bytes()
            start = 144 + int.from_bytes(original[140:144], "little")
            assert kept[-len(original) + start:] == original[start:]
            assert at_c[uid] == kept[144 + int.from_bytes(kept[140:144], "little"):]
            # the copy for B: coerced, traceably
            copy = _dataset(at_b[uid])
            assert copy.AccessionNumber == "B-A1"
            assert copy.InstitutionName == "Site B"
            assert "StationName" not in copy or copy.StationName != "NEVER"  # the MR-only rule did not apply
            [item] = copy.OriginalAttributesSequence
            [modified] = item.ModifiedAttributesSequence
            assert modified.AccessionNumber == "A1" and modified.InstitutionName == "General"
            assert item.SourceOfPreviousValues == settings.aet
            assert item.ReasonForTheAttributeModification == "COERCE"
            assert copy.PixelData == _dataset(at_c[uid]).PixelData
        finally:
            archive.close()


def test_a_route_naming_an_unknown_rule_refuses_the_start(settings: Settings) -> None:
    with keeping_scp("PACSB") as (b, _):
        archive = open_archive(_coercing(settings, {"name": "to B", "to": "PACSB", "coerce": "PACS Z"}), b)
        try:
            assert archive.routing is not None
            with pytest.raises(ConfigurationError, match=r"coerce: route 'to B' names unknown coercion rules 'PACS Z'"):
                archive.routing.check_destinations()
        finally:
            archive.close()


def test_ingest_false_rules_do_not_apply_on_ingest_but_ingest_rules_still_do(settings: Settings) -> None:
    rules = [*RULES, {"name": "everyone", "set": {"StationName": "ST1"}}]
    archive = open_archive(settings.model_copy(update={"coercion": [CoercionRule.model_validate(r) for r in rules]}))
    try:
        stored = archive.ingest.ingest(io.BytesIO(make_ct(AccessionNumber="A1")), source="dimse:CT1")
        [record] = archive.retrieve.locate(sop_uids=[stored.sop_instance_uid])
        with archive.retrieve.as_file(record) as path:
            ds = pydicom.dcmread(path)
        assert ds.StationName == "ST1" and ds.AccessionNumber == "A1" and ds.get("InstitutionName") != "Site B"
    finally:
        archive.close()


def test_coerce_must_name_rules() -> None:
    from dicomvault.routing_settings import RouteRule

    assert RouteRule.model_validate({"name": "r", "to": "B", "coerce": "PACS B"}).route().coerce == ("PACS B",)
    for empty in ([], [" "], ""):
        with pytest.raises(ValueError, match="coerce must name"):
            RouteRule.model_validate({"name": "r", "to": "B", "coerce": empty})
