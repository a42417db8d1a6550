"""Compression at rest stopped dead at each of its steps, in process (the SIGKILL trials at random moments are
``tests/cli/test_cli_compression_crash.py``): between writing the compressed object and switching the instance to
it, between the switch and the removal of the original, between the removal's claim and its deletion, and between
the deletion and its finish. After each: the instance reads back as received; run again, then the removal sweep and
the orphan sweep, it is compressed, proved, and no original bytes or unswitched compressed bytes are left.

The stop is a ``BaseException`` (as a kill is, it passes every ``except Exception`` the code has) raised from the
index or store call that would come next.
"""

from __future__ import annotations

import hashlib
import io
import time
from collections.abc import Callable
from typing import Any

import pytest

from dicomvault.bootstrap import Archive
from dicomvault.domain.records import InstanceRecord
from dicomvault.services.lifecycle import BlobRemover
from tests.helpers import make_ct

JLS = "1.2.840.10008.1.2.4.80"


class Killed(BaseException):
    """The process stops here."""


def _kill(*_args: Any, **_kwargs: Any) -> Any:
    raise Killed


def _stop_before_switch(archive: Archive, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(archive.index, "switch_to_compressed", _kill)


def _stop_before_removal(archive: Archive, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(archive.remover, "remove", _kill)


def _stop_before_delete(archive: Archive, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(archive.remover.blobs, "delete", _kill)


def _stop_before_finish(archive: Archive, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(archive.index, "finish_blob_removals", _kill)


STOPS: dict[str, Callable[[Archive, pytest.MonkeyPatch], None]] = {
    "written-not-switched": _stop_before_switch,
    "switched-not-released": _stop_before_removal,
    "claimed-not-deleted": _stop_before_delete,
    "deleted-not-finished": _stop_before_finish,
}


def _reads_back(archive: Archive, record: InstanceRecord, data: bytes) -> None:
    if record.original is None:
        got = b"".join(archive.retrieve.iter_bytes(record, verify=True))
    else:
        got = b"".join(archive.retrieve.iter_transcoded(record, record.original.syntax))
        assert archive.compression is not None and archive.compression.prove(record) is None
    assert hashlib.sha256(got).hexdigest() == hashlib.sha256(data).hexdigest()


@pytest.mark.parametrize("stop", list(STOPS))
def test_compression_stopped_at_each_step_loses_nothing(archive: Archive, monkeypatch: pytest.MonkeyPatch,
                                                        stop: str) -> None:
    assert archive.compression is not None
    data = make_ct(study="1.2.3.40", rows=64, columns=64, frames=2, seed=7)
    archive.ingest.ingest(io.BytesIO(data), source="test")
    (before,) = archive.retrieve.locate(study_uid="1.2.3.40")

    with monkeypatch.context() as patched:
        STOPS[stop](archive, patched)
        with pytest.raises(Killed):
            archive.compression.compress_study("1.2.3.40", JLS)
    (now,) = archive.retrieve.locate(study_uid="1.2.3.40")
    assert (now.original is not None) == (stop != "written-not-switched")
    _reads_back(archive, now, data)
    report = archive.fixity.check()
    assert report.damaged == [] and report.data_loss == []
    assert not list(archive.index.iter_uncopied_blobs())

    # Run again (a job retried after its lease), then the sweeps that finish what a dead process left.
    work = archive.compression.compress_study("1.2.3.40", JLS)
    (now,) = archive.retrieve.locate(study_uid="1.2.3.40")
    assert now.original is not None and work.skipped == 0
    _reads_back(archive, now, data)
    # The sweep of every serving node takes over removals left pending or claimed for ``stale_after`` (a deleter
    # gives up after half of it, so it cannot be tiny): one second here, waited out.
    time.sleep(1.05)
    BlobRemover(archive.index, archive.blobs, stale_after=1.0).sweep()
    report = archive.fixity.check()
    archive.fixity.remove_orphans(report)
    report = archive.fixity.check()
    assert report.damaged == [] and report.orphans == [] and not report.untracked, report
    assert not archive.blobs.exists(before.blob.key), "the original's bytes were left behind"
    assert archive.index.blob_removals_due(stale_after=0.0, limit=10) == []
    assert archive.index.original_recipe(now.blob.key) is not None
    _reads_back(archive, now, data)
