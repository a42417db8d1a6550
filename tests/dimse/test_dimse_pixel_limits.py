"""Deflated objects and damaged pixel data over DIMSE (issue #9 defects 3 and 10): a deflate bomb sent by
C-STORE in Deflated Explicit VR Little Endian is refused (0xA701, the limit in the Error Comment) while memory
stays flat; short pixel data is refused (0xA900, the reason in the Error Comment) or, by policy, stored with a
warning (0xB007); C-GET sends a deflated object inflated to a peer that did not accept Deflated, and fails the
sub-operation that would have to decode damaged pixel data."""

from __future__ import annotations

import io
import logging
import zlib
from pathlib import Path

import pydicom
import pytest
from pydicom.uid import (
    DeflatedExplicitVRLittleEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    SecondaryCaptureImageStorage,
    generate_uid,
)
from pynetdicom import AE, _config
from pynetdicom.association import Association
from pynetdicom.sop_class import (  # type: ignore[attr-defined]
    CTImageStorage,
    MRImageStorage,
    StudyRootQueryRetrieveInformationModelGet,
)

from dicomvault.services.part10 import dataset_offset
from tests.dimse.conftest import Running, dataset_bytes, identifier, start
from tests.dimse.test_dimse_retrieve import c_get
from tests.helpers import deflate_bomb, deflated, make_ct, peak_rss_growth, short_mr

MB = 1 << 20


def _assoc(port: int) -> Association:
    ae = AE(ae_title="PYSCU")
    ae.add_requested_context(SecondaryCaptureImageStorage, [DeflatedExplicitVRLittleEndian])
    ae.add_requested_context(CTImageStorage, [DeflatedExplicitVRLittleEndian])
    ae.add_requested_context(MRImageStorage, [ExplicitVRLittleEndian])
    assoc = ae.associate("127.0.0.1", port, ae_title="DICOMVAULT")
    assert assoc.is_established
    assert {str(cx.transfer_syntax[0]) for cx in assoc.accepted_contexts} >= {DeflatedExplicitVRLittleEndian}
    return assoc


def _send_file(assoc: Association, path: Path) -> pydicom.Dataset:
    """The file's data set bytes as they are (pynetdicom streams them from the file in the file's syntax)."""
    _config.STORE_SEND_CHUNKED_DATASET = True
    return assoc.send_c_store(path)


def test_deflate_bomb_by_c_store_is_refused_with_bounded_memory(dimse: Running, tmp_path: Path) -> None:
    bomb = tmp_path / "bomb.dcm"
    bomb.write_bytes(deflate_bomb(256 * MB))
    assoc = _assoc(dimse.port)
    with peak_rss_growth() as rss:
        st = _send_file(assoc, bomb)
    assert st.Status == 0xA701
    assert "max_inflate_ratio" in st.ErrorComment
    assert rss.growth < 150 * MB, f"memory grew by {rss.growth / MB:.0f} MB"
    # A legitimately deflated object on the same association is stored, its bytes kept as sent.
    good = tmp_path / "good.dcm"
    good.write_bytes(deflated(make_ct(rows=256, columns=256)))
    assert _send_file(assoc, good).Status == 0x0000
    assoc.release()
    assert dimse.archive.index.stats().instances == 1


def test_over_max_inflated_bytes_is_refused(tmp_path: Path) -> None:
    running = start(tmp_path, max_inflated_bytes=4 * MB, max_inflate_ratio=0)
    try:
        path = tmp_path / "big.dcm"
        path.write_bytes(deflate_bomb(8 * MB))
        assoc = _assoc(running.port)
        st = _send_file(assoc, path)
        assoc.release()
        assert st.Status == 0xA701 and "max_inflated_bytes" in st.ErrorComment
    finally:
        running.server.stop()
        running.archive.close()


def test_short_pixel_data_is_refused_with_the_reason(dimse: Running) -> None:
    assoc = _assoc(dimse.port)
    st = assoc.send_c_store(pydicom.dcmread(io.BytesIO(short_mr())))
    assoc.release()
    assert st.Status == 0xA900
    assert st.ErrorComment == "pixel data holds 50000 of the 131072 bytes the header describes"
    assert dimse.archive.index.stats().instances == 0


def test_flag_policy_stores_short_pixel_data_with_a_warning_and_get_fails_to_convert_it(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    running = start(tmp_path, pixel_length_policy="accept-and-flag")
    try:
        data = short_mr()
        ds = pydicom.dcmread(io.BytesIO(data))
        assoc = _assoc(running.port)
        st = assoc.send_c_store(ds)
        assoc.release()
        assert st.Status == 0xB007
        assert st.ErrorComment == "pixel data holds 50000 of the 131072 bytes the header describes"
        ident = identifier("STUDY", StudyInstanceUID=ds.StudyInstanceUID)
        model = StudyRootQueryRetrieveInformationModelGet
        # A peer taking the stored syntax gets the object as it was received ...
        final, received = c_get(running, ident, model, [(MRImageStorage, [ExplicitVRLittleEndian])])
        assert final.Status == 0x0000 and len(received) == 1
        # ... one that needs it converted gets a failed sub-operation, and the log says why.
        with caplog.at_level(logging.INFO, logger="dicomvault"):
            final, received = c_get(running, ident, model, [(MRImageStorage, [ImplicitVRLittleEndian])])
        assert final.Status == 0xA702 and final.NumberOfFailedSuboperations == 1 and not received
        assert "pixel data holds 50000 of the 131072 bytes" in caplog.text
    finally:
        running.server.stop()
        running.archive.close()


def test_get_sends_a_deflated_object_inflated_to_a_peer_without_deflate(dimse: Running) -> None:
    study = generate_uid()
    data = deflated(make_ct(study=study, rows=512, columns=512, frames=2))
    sop = dimse.archive.ingest.ingest(io.BytesIO(data)).sop_instance_uid
    inflated = zlib.decompress(data[dataset_offset(data[:65536]):], -zlib.MAX_WBITS)
    model = StudyRootQueryRetrieveInformationModelGet
    final, received = c_get(dimse, identifier("STUDY", StudyInstanceUID=study), model,
                            [(CTImageStorage, [ExplicitVRLittleEndian])])
    assert final.Status == 0x0000
    ts, body = received[sop]
    assert ts == ExplicitVRLittleEndian and body == inflated  # the inflated data set, byte for byte
    # A peer that accepts Deflated gets the stored bytes.
    final, received = c_get(dimse, identifier("STUDY", StudyInstanceUID=study), model,
                            [(CTImageStorage, [DeflatedExplicitVRLittleEndian])])
    assert received[sop] == (DeflatedExplicitVRLittleEndian, dataset_bytes(data))
