"""Issue #9, defect 1 through the real HTTP front end: ``DELETE /studies/{s}`` racing a STOW-RS re-send of the
same objects (httpx, one client per thread) must never leave an instance that QIDO-RS lists but WADO-RS cannot
serve with its exact bytes. Runs on the backends the environment selects. Before the claim protocol, the
service-level version of these rounds lost objects on every backend pair (tests/services/test_services_delete_race.py).
"""

from __future__ import annotations

import io

import httpx

from tests.dicomweb.dw_live import DwServer
from tests.helpers import make_ct
from tests.race_rounds import ACKNOWLEDGED, UNAVAILABLE, run_rounds

ROUNDS = 40
PER_STUDY = 3
ANY_TS = "application/dicom; transfer-syntax=*"


def test_delete_racing_a_stow_resend_loses_nothing(dw_server: DwServer) -> None:
    base = dw_server.dicomweb_url
    archive = dw_server.archive
    with httpx.Client(timeout=60) as sender, httpx.Client(timeout=60) as other:

        def store(data: bytes) -> str:
            return archive.ingest.ingest(io.BytesIO(data)).blob.sha256

        def resend(datas: list[bytes]) -> list[str]:
            answers = []
            for data in datas:
                resp = sender.post(f"{base}/studies", content=data, headers={"Content-Type": "application/dicom"})
                assert resp.status_code in (200, 503), resp.text
                answers.append(ACKNOWLEDGED if resp.status_code == 200 else UNAVAILABLE)
            return answers

        def delete(study: str) -> None:
            assert other.delete(f"{base}/studies/{study}").status_code in (204, 404)

        def indexed(study: str) -> set[str]:
            resp = other.get(f"{base}/studies/{study}/instances")
            assert resp.status_code in (200, 204), resp.text
            return {i["00080018"]["Value"][0] for i in resp.json()} if resp.content else set()

        def retrieve(study: str, series: str, sop: str) -> bytes | None:
            try:
                resp = other.get(f"{base}/studies/{study}/series/{series}/instances/{sop}",
                                 headers={"Accept": ANY_TS})
            except httpx.HTTPError:  # the stream broke off: the blob vanished mid-response
                return None
            return resp.content if resp.status_code == 200 else None

        tally = run_rounds(ROUNDS, PER_STUDY, store=store, delete=delete, resend=resend, indexed=indexed,
                           retrieve=retrieve, seed=21)
    assert tally.losses == [], f"{len(tally.losses)} losses in {tally.rounds} rounds: {tally.losses[:5]}"
    assert tally.indexed > 0, f"some re-sends must come after the delete: {tally}"


def test_stow_of_bytes_whose_removal_never_finishes_is_503(dw_server: DwServer) -> None:
    """A deleter that claimed the blob and died: the re-send is answered "try again", never acknowledged."""
    archive = dw_server.archive
    data = make_ct(seed=77)
    first = archive.ingest.ingest(io.BytesIO(data))
    archive.index.delete(study_uid=first.study_uid)
    archive.index.claim_blob_removals([first.blob.key], stale_after=300)  # ...and the deleter dies here
    archive.ingest.removal_wait = 0.3  # instead of 20 s
    resp = httpx.post(f"{dw_server.dicomweb_url}/studies", content=data,
                      headers={"Content-Type": "application/dicom"}, timeout=60)
    assert resp.status_code == 503 and resp.headers.get("content-type", "").startswith("application/dicom+json")
    [failed] = resp.json()["00081198"]["Value"]
    assert failed["00081197"]["Value"] == [0xA700]
    assert archive.index.instances(sop_uids=[first.sop_instance_uid]) == []
