"""Start-up warm-up: it runs every hot read once without finding or changing anything."""

from __future__ import annotations

import io

from dicomvault.bootstrap import Archive
from dicomvault.services.warmup import warm_up
from tests.helpers import make_ct


def test_warm_up_reads_nothing_and_changes_nothing(archive: Archive) -> None:
    archive.ingest.ingest(io.BytesIO(make_ct()), source="test")
    before = archive.index.stats()
    warm_up(archive.index, archive.query)
    assert archive.index.stats() == before

