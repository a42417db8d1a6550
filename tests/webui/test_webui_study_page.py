"""One study's page: details, series with thumbnails, where the copies are; delete with the right scope and token."""

from __future__ import annotations

from typing import Any

from pynetdicom import AE, evt
from pynetdicom.sop_class import CTImageStorage

from dicomvault.bootstrap import Archive
from dicomvault.domain.peers import RemotePeer
from dicomvault.services.sessions import SESSION_COOKIE
from tests.webui.browser_data import share_session, store_study, token
from tests.webui.live_server import free_port
from tests.webui.pages_site import csrf_of, login, new_client, pages_client


def test_the_page_shows_the_study_its_series_and_its_stores(archive: Archive) -> None:
    stored = store_study(archive, name="Doe^Jane", pid="P-77", accession="ACC-9", description="CT ABDOMEN",
                         series=2, per_series=3, source="dimse:MODALITY1")
    with pages_client(archive) as client:
        page = client.get(f"/ui/studies/{stored.study}")
        assert page.status_code == 200, page.text
        for text in ("Doe, Jane", "P-77", "ACC-9", "CT ABDOMEN", "2024-01-02", "dimse:MODALITY1"):
            assert text in page.text
        for series in stored.series:
            thumbnail = f'src="/dicom-web/studies/{stored.study}/series/{series}/thumbnail?viewport=160,160"'
            assert thumbnail in page.text
            assert client.get(f"/dicom-web/studies/{stored.study}/series/{series}/thumbnail").status_code == 200
        assert page.text.count("3 inst.") == 2
        assert f'href="/viewer?StudyInstanceUIDs={stored.study}"' in page.text
        assert f'href="/ui/studies/{stored.study}/download.zip"' in page.text
        assert archive.tiering is not None
        [store] = archive.tiering.locations(stored.study)
        assert store.copies == 6 and f"<td>{store.store}</td>" in page.text
        assert 'id="delete-study"' not in page.text  # anonymous visitors change nothing through a page
        assert client.get("/ui/studies/1.2.3.4").status_code == 404
        assert client.get("/ui/studies/not-a-uid").status_code == 400


def test_delete_needs_the_scope_and_the_csrf_token(archive: Archive) -> None:
    stored = store_study(archive)
    reader, deleter = token(archive, "read"), token(archive, "read", "delete", name="bob")
    with pages_client(archive) as client:
        login(client, reader)
        page = client.get(f"/ui/studies/{stored.study}")
        assert page.status_code == 200 and 'id="delete-study"' not in page.text
        assert client.post(f"/ui/studies/{stored.study}/delete",
                           data={"csrf_token": csrf_of(client)}).status_code == 403
        with new_client(client) as other:
            login(other, deleter)
            assert 'id="delete-study"' in other.get(f"/ui/studies/{stored.study}").text
            assert other.post(f"/ui/studies/{stored.study}/delete", data={"csrf_token": "x"}).status_code == 403
            done = other.post(f"/ui/studies/{stored.study}/delete", data={"csrf_token": csrf_of(other)})
            assert done.status_code == 303 and done.headers["location"] == "/ui/studies?deleted=1"
            assert "The study was deleted" in other.get(done.headers["location"]).text
            assert other.get(f"/ui/studies/{stored.study}").status_code == 404
    assert archive.trash is not None
    [entry] = archive.trash.deletion_log(stored.study)
    assert entry.by == "ui:bob"


def test_a_share_link_sees_its_study_only_and_changes_nothing(archive: Archive) -> None:
    shared, other = store_study(archive), store_study(archive, pid="P-2")
    token(archive, "read")  # anonymous access off
    with pages_client(archive) as client:
        client.cookies.set(SESSION_COOKIE, share_session(archive, shared.study))
        page = client.get(f"/ui/studies/{shared.study}")
        assert page.status_code == 200
        assert 'id="delete-study"' not in page.text and "download.zip" not in page.text
        assert client.get(f"/ui/studies/{other.study}").status_code == 403
        assert client.get(f"/ui/studies/{shared.study}/download.zip").status_code == 403
        refused = client.post(f"/ui/studies/{shared.study}/delete", data={"csrf_token": csrf_of(client)})
        assert refused.status_code == 403


def test_send_queues_the_study_for_a_peer_as_a_durable_delivery(archive: Archive) -> None:
    """The Send button records one delivery per instance and a route-deliver job; a second send queues nothing new;
    the job then delivers to a real storage SCP."""
    received: list[str] = []

    def on_store(event: Any) -> int:
        received.append(event.request.AffectedSOPInstanceUID)
        return 0x0000

    scp = AE(ae_title="SENDTARGET")
    scp.add_supported_context(CTImageStorage, ["1.2.840.10008.1.2.1", "1.2.840.10008.1.2"])
    port = free_port()
    server = scp.start_server(("127.0.0.1", port), block=False, evt_handlers=[(evt.EVT_C_STORE, on_store)])
    try:
        assert archive.peers is not None and archive.routing is not None and archive.tokens is not None
        archive.peers.add(RemotePeer(aet="SENDTARGET", host="127.0.0.1", port=port))
        uid = store_study(archive, per_series=3).study
        _, secret = archive.tokens.create("sender", ["read", "write"])
        with pages_client(archive) as client:
            login(client, secret)
            page = client.get(f"/ui/studies/{uid}")
            assert 'id="send-study"' in page.text and "<option>SENDTARGET</option>" in page.text
            answer = client.post(f"/ui/studies/{uid}/send", data={"destination": "SENDTARGET", "csrf_token": "x"})
            assert answer.status_code == 403
            answer = client.post(f"/ui/studies/{uid}/send",
                                 data={"destination": "SENDTARGET", "csrf_token": csrf_of(client)})
            assert answer.status_code == 303
            shown = client.get(answer.headers["location"])
            assert "3 queued for SENDTARGET" in shown.text
            again = client.post(f"/ui/studies/{uid}/send",
                                data={"destination": "SENDTARGET", "csrf_token": csrf_of(client)})
            assert "0 queued for SENDTARGET, 3 already there or queued" in client.get(again.headers["location"]).text
            unknown = client.post(f"/ui/studies/{uid}/send",
                                  data={"destination": "NOPE", "csrf_token": csrf_of(client)})
            assert unknown.status_code == 404
        totals = archive.routing.deliver("SENDTARGET", uid, job_id=1)
        assert totals["confirmed"] == 3 and len(received) == 3
    finally:
        server.shutdown()
