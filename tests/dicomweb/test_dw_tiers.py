"""WADO-RS (study, instance, frames, rendered) and WADO-URI of a study that a lifecycle rule moved to the cold
store, with dicomweb-client: the same bytes, read transparently from the store that holds them. The cold store
is a moto S3 bucket when the environment selects S3, else a folder."""

from __future__ import annotations

import io
from collections.abc import Callable
from pathlib import Path

import httpx
import pydicom
from dicomweb_client import DICOMwebClient
from pydicom.uid import generate_uid

from dicomvault.jobs.handlers import TIER_KINDS, default_handlers
from dicomvault.jobs.worker import Worker
from dicomvault.settings import Settings
from tests.dicomweb.dw_live import DwServer
from tests.helpers import make_ct

RULE = {"name": "to cold", "when": {"study_age_days": 0}, "action": {"move_to": "cold"}}


def test_wado_of_a_moved_study(make_dw_server: Callable[..., DwServer], settings: Settings, tmp_path: Path) -> None:
    cold = settings.storage_url if (settings.storage_url or "").startswith("s3://") else f"file://{tmp_path / 'cold'}"
    server = make_dw_server(stores={"hot": {"url": f"file://{tmp_path / 'hot'}"}, "cold": {"url": cold}},
                            ingest_store="hot", lifecycle=[RULE], tier_max_bytes_per_second=0)
    archive = server.archive
    study, series = generate_uid(), generate_uid()
    objects = {}
    for i in range(3):
        data = make_ct(study=study, series=series, seed=i, rows=32, columns=32, frames=2, InstanceNumber=i + 1)
        objects[archive.ingest.ingest(io.BytesIO(data), source="STOW").sop_instance_uid] = data
    assert archive.tiering is not None and archive.jobs is not None
    archive.tiering.schedule()
    worker = Worker(archive.jobs, default_handlers(archive), kinds=list(TIER_KINDS), poll_interval=0)
    while worker.run_once():
        pass
    assert {b.stores for b in archive.index.study_blobs(study)} == {("cold",)}

    client = DICOMwebClient(server.dicomweb_url)
    got = client.retrieve_study(study)
    assert len(got) == 3
    for ds in got:
        original = pydicom.dcmread(io.BytesIO(objects[ds.SOPInstanceUID]))
        assert ds.PixelData == original.PixelData and ds.PatientName == original.PatientName
    sop = next(iter(objects))
    [frame] = client.retrieve_instance_frames(study, series, sop, frame_numbers=[2])
    assert frame == pydicom.dcmread(io.BytesIO(objects[sop])).PixelData[32 * 32 * 2:]
    rendered = httpx.get(f"{server.dicomweb_url}/studies/{study}/series/{series}/instances/{sop}/rendered",
                         headers={"Accept": "image/png"})
    assert rendered.status_code == 200 and rendered.content.startswith(b"\x89PNG")
    uri = httpx.get(f"{server.base_url}/wado", params={"requestType": "WADO", "studyUID": study,
                                                        "seriesUID": series, "objectUID": sop,
                                                        "contentType": "application/dicom"})
    assert uri.status_code == 200 and uri.content == objects[sop]
