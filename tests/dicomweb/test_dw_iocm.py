"""An IOCM rejection note stored by STOW-RS (dicomweb-client) hides the rejected instances from QIDO-RS and WADO-RS
in the same request."""

from __future__ import annotations

import io

import pydicom
from dicomweb_client import DICOMwebClient
from pydicom.uid import generate_uid
from requests import HTTPError

from tests.dicomweb.dw_live import DwServer
from tests.helpers import make_ct
from tests.services.test_services_iocm import rejection_note


def test_stow_rejection_note_hides_instances(dw_server: DwServer) -> None:
    client = DICOMwebClient(dw_server.dicomweb_url)
    study, series = generate_uid(), generate_uid()
    sops = [generate_uid() for _ in range(3)]
    client.store_instances([pydicom.dcmread(io.BytesIO(make_ct(study=study, series=series, sop=s, seed=i)))
                            for i, s in enumerate(sops)])
    note = pydicom.dcmread(io.BytesIO(rejection_note(study, [(series, sops[0])], code="113037",
                                                     meaning="Rejected for Patient Safety Reasons")))
    client.store_instances([note])
    found = {r["00080018"]["Value"][0] for r in client.search_for_instances(study, series)}
    assert found == set(sops[1:]), "QIDO-RS no longer offers the rejected instance"
    try:
        client.retrieve_instance(study, series, sops[0])
    except HTTPError as exc:
        assert exc.response.status_code == 404
    else:
        raise AssertionError("the rejected instance was still served")
    assert dw_server.archive.trash is not None
    assert [i.deleted_by for i in dw_server.archive.trash.items(study)] == ["iocm:113037"]
