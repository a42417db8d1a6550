"""A share link's session reaches its study and nothing else: every QIDO-RS, WADO-RS (retrieve, metadata, frames,
bulk data, rendered, thumbnail) and WADO-URI path of another study answers 404 (or an empty search), the shared
study's answer 200; STOW-RS, DELETE, /metrics, /openapi.json, /admin and the pages answer 403; a revoked link's
session is no credential (401)."""

from __future__ import annotations

import io
from collections.abc import Iterator
from dataclasses import dataclass

import httpx
import pytest

from dicomvault.bootstrap import Archive
from dicomvault.services.auth import Principal
from dicomvault.services.sessions import SESSION_COOKIE
from tests.helpers import make_ct
from tests.webui.pages_site import login, new_client, pages_client

ALICE = Principal("alice", frozenset({"read", "write", "delete"}), "token")


@dataclass(frozen=True)
class Study:
    study: str
    series: str
    sop: str

    def paths(self) -> list[str]:
        """Every read path of the study, series and instance."""
        st = f"/dicom-web/studies/{self.study}"
        se = f"{st}/series/{self.series}"
        inst = f"{se}/instances/{self.sop}"
        return [st, f"{st}/metadata", f"{st}/rendered", f"{st}/thumbnail", f"{st}/series", f"{st}/instances",
                se, f"{se}/metadata", f"{se}/rendered", f"{se}/thumbnail", f"{se}/instances",
                inst, f"{inst}/metadata", f"{inst}/rendered", f"{inst}/thumbnail", f"{inst}/frames/1",
                f"{inst}/frames/1,2", f"{inst}/frames/1/rendered", f"{inst}/frames/2/thumbnail",
                f"{inst}/bulk/7FE00010",
                f"/wado?requestType=WADO&studyUID={self.study}&seriesUID={self.series}&objectUID={self.sop}",
                f"/wado?requestType=WADO&studyUID={self.study}&seriesUID={self.series}&objectUID={self.sop}"
                "&contentType=application/dicom"]


SHARED = Study("1.2.826.0.1.3680043.8.498.11", "1.2.826.0.1.3680043.8.498.12", "1.2.826.0.1.3680043.8.498.13")
OTHER = Study("1.2.826.0.1.3680043.8.498.21", "1.2.826.0.1.3680043.8.498.22", "1.2.826.0.1.3680043.8.498.23")


@dataclass
class Site:
    owner: httpx.Client
    visitor: httpx.Client
    share_id: int


@pytest.fixture
def site(archive: Archive) -> Iterator[Site]:
    assert archive.tokens is not None and archive.shares is not None
    _, token = archive.tokens.create("alice", ["read"])  # anonymous access is off from now on
    for s in (SHARED, OTHER):
        blob = make_ct(study=s.study, series=s.series, sop=s.sop, frames=2, PatientName=f"P^{s.study[-2:]}")
        archive.ingest.ingest(io.BytesIO(blob), source="test")
    created = archive.shares.create(ALICE, SHARED.study)
    with pages_client(archive) as owner, new_client(owner) as visitor:
        login(owner, token)
        opened = visitor.get(f"/share/{created.secret}")
        assert opened.status_code == 303, opened.text
        assert opened.headers["location"] == f"/viewer?StudyInstanceUIDs={SHARED.study}"
        assert SESSION_COOKIE in visitor.cookies
        yield Site(owner, visitor, created.record.id)


def _uids(answer: httpx.Response, tag: str) -> set[str]:
    assert answer.status_code == 200, answer.text
    return {str(item[tag]["Value"][0]) for item in answer.json()}


def test_the_shared_study_answers_every_read_path(site: Site) -> None:
    for path in SHARED.paths():
        answer = site.visitor.get(path)
        assert answer.status_code == 200, (path, answer.status_code, answer.text[:200])
        assert len(answer.content) > 0, path


def test_another_study_answers_404_on_every_read_path(site: Site) -> None:
    for path in OTHER.paths():
        answer = site.visitor.get(path)
        assert answer.status_code == 404, (path, answer.status_code, answer.text[:200])


def test_the_shared_study_path_with_another_study_s_series_or_instance_finds_nothing(site: Site) -> None:
    st = f"/dicom-web/studies/{SHARED.study}"
    mixed = [f"{st}/series/{OTHER.series}", f"{st}/series/{OTHER.series}/metadata",
             f"{st}/series/{OTHER.series}/rendered",
             f"{st}/series/{OTHER.series}/instances/{OTHER.sop}",
             f"{st}/series/{OTHER.series}/instances/{OTHER.sop}/metadata",
             f"{st}/series/{OTHER.series}/instances/{OTHER.sop}/frames/1",
             f"{st}/series/{OTHER.series}/instances/{OTHER.sop}/bulk/7FE00010",
             f"{st}/series/{OTHER.series}/instances/{OTHER.sop}/rendered",
             f"{st}/series/{SHARED.series}/instances/{OTHER.sop}/frames/1",
             f"{st}/series/{SHARED.series}/instances/{OTHER.sop}/thumbnail",
             # WADO-URI naming the shared study with another study's object: resolved through the index
             f"/wado?requestType=WADO&studyUID={SHARED.study}&seriesUID={OTHER.series}&objectUID={OTHER.sop}",
             f"/wado?requestType=WADO&studyUID={SHARED.study}&seriesUID={SHARED.series}&objectUID={OTHER.sop}"]
    for path in mixed:
        assert site.visitor.get(path).status_code == 404, path
    for path in (f"{st}/series/{OTHER.series}/instances", f"{st}/series?SeriesInstanceUID={OTHER.series}",
                 f"{st}/instances?SOPInstanceUID={OTHER.sop}"):
        answer = site.visitor.get(path)
        assert answer.status_code == 200 and answer.json() == [], path


def test_searches_outside_a_study_answer_the_shared_study_only(site: Site) -> None:
    assert _uids(site.owner.get("/dicom-web/studies"), "0020000D") == {SHARED.study, OTHER.study}
    assert _uids(site.visitor.get("/dicom-web/studies"), "0020000D") == {SHARED.study}
    assert _uids(site.visitor.get("/dicom-web/series"), "0020000E") == {SHARED.series}
    assert _uids(site.visitor.get("/dicom-web/instances"), "00080018") == {SHARED.sop}
    assert site.visitor.get(f"/dicom-web/studies?StudyInstanceUID={OTHER.study}").json() == []
    assert site.visitor.get(f"/dicom-web/series?StudyInstanceUID={OTHER.study}").json() == []
    assert site.visitor.get(f"/dicom-web/instances?SOPInstanceUID={OTHER.sop}").json() == []
    assert site.visitor.get("/dicom-web/studies?PatientName=P*").status_code == 200
    both = f"/dicom-web/studies?StudyInstanceUID={OTHER.study},{SHARED.study}"
    assert _uids(site.visitor.get(both), "0020000D") == {SHARED.study}


def test_changes_and_everything_outside_dicomweb_reads_are_refused(site: Site) -> None:
    csrf = site.visitor.get("/ui/session").json()["csrf"]
    headers = {"X-CSRF-Token": csrf}
    stow = site.visitor.post("/dicom-web/studies", content=b"--b--\r\n", headers={
        **headers, "content-type": 'multipart/related; type="application/dicom"; boundary=b'})
    assert stow.status_code == 403
    assert site.visitor.post(f"/dicom-web/studies/{SHARED.study}", content=b"--b--\r\n", headers={
        **headers, "content-type": 'multipart/related; type="application/dicom"; boundary=b'}).status_code == 403
    assert site.visitor.delete(f"/dicom-web/studies/{SHARED.study}", headers=headers).status_code == 403
    for path in ("/metrics", "/openapi.json", "/admin/peers", "/ui/", "/ui/shares",
                 f"/ui/shares/new?study={SHARED.study}"):
        assert site.visitor.get(path).status_code == 403, path
    assert site.visitor.post(f"/admin/studies/{SHARED.study}/recall", headers=headers).status_code == 403
    # the owner's own view is untouched
    assert site.owner.get(f"/dicom-web/studies/{OTHER.study}/metadata").status_code == 200


def test_a_revoked_link_s_session_is_no_credential(site: Site, archive: Archive) -> None:
    metadata = f"/dicom-web/studies/{SHARED.study}/metadata"
    assert site.visitor.get(metadata).status_code == 200
    assert archive.shares is not None
    archive.shares.revoke(ALICE, site.share_id)
    assert site.visitor.get(metadata).status_code == 401
    assert site.visitor.get("/dicom-web/studies").status_code == 401
