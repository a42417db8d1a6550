"""``/ui/dashboard`` after a known ingest: the totals on the page, the charts, the refreshable figures part, the
same figures at ``/metrics``; who may see it."""

from __future__ import annotations

import io
import xml.etree.ElementTree as ET
from datetime import UTC, datetime, timedelta

from pydicom.uid import generate_uid

from dicomvault.bootstrap import Archive
from dicomvault.services.auth import Principal
from dicomvault.services.sessions import SESSION_COOKIE
from tests.helpers import make_ct
from tests.webui.pages_site import login, pages_client


def ingest_known(archive: Archive) -> int:
    """4 CT instances from one scanner and 1 MR uploaded; returns the bytes stored."""
    total = 0
    study, series = generate_uid(), generate_uid()
    for n in range(4):
        total += archive.ingest.ingest(io.BytesIO(make_ct(study=study, series=series, seed=n)),
                                       source="dimse:SCANNER_1").blob.size
    total += archive.ingest.ingest(io.BytesIO(make_ct(Modality="MR", PatientID="P2")), source="dicomweb").blob.size
    return total


def text_of(html: str, element_id: str) -> str:
    marker = f'id="{element_id}"'
    start = html.index(marker)
    start = html.index(">", start) + 1
    return html[start:html.index("<", start)].strip()


def test_dashboard_shows_the_totals_and_charts_after_a_known_ingest(archive: Archive) -> None:
    total = ingest_known(archive)
    assert archive.jobs is not None
    failed = archive.jobs.enqueue("route-deliver", {"destination": "PACS"})
    assert archive.jobs.claim("w", kinds=["route-deliver"]) is not None
    archive.jobs.fail(failed, "association rejected by <PACS>", None)
    with pages_client(archive) as client:  # anonymous read on loopback
        page = client.get("/ui/dashboard")
        assert page.status_code == 200, page.text
        html = page.text
        assert text_of(html, "total-instances") == "5" and text_of(html, "total-studies") == "2"
        assert text_of(html, "total-patients") == "2" and text_of(html, "last-hour") == "5"
        assert text_of(html, "jobs-failed") == "1" and text_of(html, "fixity-state") == "no scan yet"
        assert f'title="{total:,} bytes"' in html
        assert "association rejected by &lt;PACS&gt;" in html and "<PACS>" not in html
        assert "dimse:SCANNER_1" in html and '<script src="/ui/static/dashboard.js" defer>' in html
        svgs = [html[i:html.index("</svg>", i) + 6] for i in range(len(html)) if html.startswith("<svg", i)]
        assert len(svgs) == 6  # last hour, per day (2), by modality, source, store
        for svg in svgs:
            assert ET.fromstring(svg).get("role") == "img"
        part = client.get("/ui/dashboard/figures", params={"days": 7})
        assert part.status_code == 200 and "<html" not in part.text and text_of(part.text, "total-instances") == "5"
        assert client.get("/ui/dashboard", params={"days": 8}).status_code == 400
        assert client.get("/ui/static/dashboard.js").status_code == 200


def test_metrics_carry_the_dashboard_figures(archive: Archive) -> None:
    total = ingest_known(archive)
    assert archive.jobs is not None
    archive.jobs.enqueue("fixity", {"sop_uid": "1.2.3"}, run_at=datetime.now(UTC) + timedelta(hours=1))
    with pages_client(archive) as client:
        for _ in range(2):  # the collector is registered once per app: a second scrape works the same
            answer = client.get("/metrics")
            assert answer.status_code == 200
            text = answer.text
            assert 'dicomvault_stored_instances{modality="CT"} 4.0' in text
            assert 'dicomvault_stored_instances{modality="MR"} 1.0' in text
            assert 'dicomvault_source_instances{source="dimse:SCANNER_1"} 4.0' in text
            assert f'dicomvault_store_bytes{{store="default"}} {float(total)}' in text
            assert 'dicomvault_jobs{kind="fixity",state="queued"} 1.0' in text
            assert "dicomvault_studies 2.0" in text and "dicomvault_dashboard_up 1.0" in text
            assert "dicomvault_received_instances_last_hour 5.0" in text
            assert "dicomvault_fixity_data_loss_blobs" in text  # the process-wide registry is still there


def test_dashboard_needs_a_login_once_tokens_exist_and_refuses_share_links(archive: Archive) -> None:
    assert archive.tokens is not None and archive.sessions is not None
    secret = archive.tokens.create("reader", ["read"])[1]
    with pages_client(archive) as client:
        answer = client.get("/ui/dashboard")
        assert answer.status_code == 303 and answer.headers["location"].startswith("/ui/login")
        login(client, secret)
        assert client.get("/ui/dashboard").status_code == 200
    shared = archive.sessions.open(Principal("share:7", frozenset({"read"}), "share", study="1.2.3"),
                                   expires_at=datetime.now(UTC) + timedelta(hours=1))
    with pages_client(archive) as client:
        client.cookies.set(SESSION_COOKIE, shared.secret)
        assert client.get("/ui/dashboard").status_code == 403
        assert client.get("/ui/dashboard/figures").status_code == 403
