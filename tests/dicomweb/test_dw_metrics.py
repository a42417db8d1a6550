"""``GET /metrics``: data loss found by fixity is visible to a Prometheus scraper (issue #11: "data loss, loudly")."""

from __future__ import annotations

import io

import httpx

from tests.dicomweb.dw_live import DwServer
from tests.helpers import make_ct


def _value(text: str, name: str) -> float:
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
               if line.startswith(name) and not line.startswith("#"))


def test_metrics_show_fixity_data_loss(dw_server: DwServer) -> None:
    archive = dw_server.archive
    result = archive.ingest.ingest(io.BytesIO(make_ct()), source="t")
    archive.fixity.check()
    healthy = httpx.get(f"{dw_server.base_url}/metrics")
    assert healthy.status_code == 200 and healthy.headers["content-type"].startswith("text/plain")
    assert _value(healthy.text, "dicomvault_fixity_data_loss_blobs") == 0
    archive.blobs.delete(result.blob.key)  # the only copy is lost
    archive.fixity.check()
    lost = httpx.get(f"{dw_server.base_url}/metrics").text
    assert _value(lost, "dicomvault_fixity_data_loss_blobs") == 1
    assert _value(lost, 'dicomvault_fixity_damaged_copies{store="default"}') == 1
    assert _value(lost, "dicomvault_fixity_last_check_timestamp_seconds") > 0
