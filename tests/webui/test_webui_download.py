"""A study as a zip: a valid archive in a DICOMDIR-like layout whose members are the stored objects byte for byte,
written while it is sent."""

from __future__ import annotations

import io
import zipfile

from dicomvault.bootstrap import Archive
from dicomvault.services.study_zip import CHUNK, StudyLayout, safe_name, stream_zip
from tests.helpers import make_ct
from tests.webui.browser_data import store_study
from tests.webui.pages_site import pages_client


def test_the_zip_holds_every_instance_as_wado_rs_returns_it(archive: Archive) -> None:
    stored = store_study(archive, pid="../../etc/P 1", accession="A/1", series=2, per_series=3)
    with pages_client(archive) as client:
        answer = client.get(f"/ui/studies/{stored.study}/download.zip")
        assert answer.status_code == 200, answer.text
        assert answer.headers["content-type"] == "application/zip"
        assert answer.headers["content-disposition"] == 'attachment; filename="etc_P_1_20240102_A_1.zip"'
        zf = zipfile.ZipFile(io.BytesIO(answer.content))
        assert zf.testzip() is None
        names = zf.namelist()
        assert len(names) == 6 and len(set(names)) == 6
        assert all(n.startswith("DICOM/etc_P_1/20240102_A_1/S00") and n.endswith(".dcm") for n in names)
        assert {n.split("/")[3] for n in names} == {"S001_CT", "S002_CT"}
        assert "DICOM/etc_P_1/20240102_A_1/S002_CT/I00003.dcm" in names
        for info in zf.infolist():
            assert info.compress_type == zipfile.ZIP_STORED and info.flag_bits & 0x08  # data descriptor: streamed
        by_sop = {}
        for name in names:
            data = zf.read(name)
            assert data[128:132] == b"DICM"
            by_sop[data] = name
        for sop, series in zip(stored.sops, [s for s in stored.series for _ in range(3)], strict=True):
            wado = client.get(f"/dicom-web/studies/{stored.study}/series/{series}/instances/{sop}",
                              headers={"accept": "application/dicom; transfer-syntax=*"})
            assert wado.status_code == 200 and wado.content in by_sop
        assert client.get("/ui/studies/1.2.3.4/download.zip").status_code == 404


def test_a_large_object_is_sent_in_chunks(archive: Archive) -> None:
    blob = make_ct(sop="1.2.3.4.5", rows=1024, columns=1024, frames=3)  # 6 MiB of pixel data
    archive.ingest.ingest(io.BytesIO(blob), source="test")
    records = archive.retrieve.locate(sop_uids=["1.2.3.4.5"])
    chunks = list(stream_zip(archive.retrieve, records, StudyLayout("P", "S")))
    assert max(len(c) for c in chunks) <= CHUNK + 1024 and len(chunks) >= 6
    zf = zipfile.ZipFile(io.BytesIO(b"".join(chunks)))
    assert zf.read(zf.namelist()[0]) == blob


def test_names_are_short_safe_and_unique() -> None:
    assert safe_name("Dupont^Jean-Pierre / é", "X") == "Dupont_Jean-Pierre"
    assert safe_name("", "PATIENT") == "PATIENT" and safe_name("../..", "X") == "X"
    assert len(safe_name("A" * 100, "X")) == 24
