"""``dicomvault trash list|restore|purge`` and ``dicomvault deletions``, in-process, on an archive whose studies
were soft-deleted through the service (as DICOMweb DELETE does with ``delete_grace_days``)."""

from __future__ import annotations

import hashlib
import io
import json
from pathlib import Path

from pydicom.uid import generate_uid

from dicomvault.bootstrap import build_archive
from dicomvault.domain.trash import Deletion
from dicomvault.settings import Settings
from tests.cli.cli_helpers import Invoke
from tests.helpers import make_ct


def _soft_deleted(data_dir: Path, n: int = 2) -> tuple[str, list[bytes]]:
    """A study of ``n`` instances, stored then soft-deleted for 7 days by ``alice``."""
    archive = build_archive(Settings.load(data_dir=data_dir, delete_grace_days=7))
    try:
        study, series = generate_uid(), generate_uid()
        datas = [make_ct(study=study, series=series, seed=i) for i in range(n)]
        for data in datas:
            archive.ingest.ingest(io.BytesIO(data))
        assert archive.trash is not None
        archive.trash.delete(study, deletion=Deletion("alice", "wrong patient"))
    finally:
        archive.close()
    return study, datas


def _blob(data_dir: Path, data: bytes) -> Path:
    key = hashlib.sha256(data).hexdigest()
    return next((data_dir / "blobs").rglob(key + "*"), data_dir / "missing")


def test_cli_trash_list_restore_and_deletions(data_dir: Path, invoke: Invoke) -> None:
    study, _ = _soft_deleted(data_dir)
    listed = invoke("trash", "list", "--json")
    assert listed.exit_code == 0, listed.output
    [row] = json.loads(listed.stdout)
    assert (row["study_uid"], row["instances"], row["deleted_by"], row["reasons"]) == (
        study, 2, ["alice"], ["wrong patient"])
    table = invoke("trash", "list")
    assert study in table.output and "alice" in table.output

    restored = invoke("trash", "restore", study)
    assert restored.exit_code == 0, restored.output
    assert "restored 2 object(s)" in restored.output
    assert invoke("trash", "list").output.strip() == "the trash is empty"
    found = invoke("find", f"StudyInstanceUID={study}", "--level", "instance", "--json")
    assert found.exit_code == 0 and len(json.loads(found.stdout)) == 2

    log = invoke("deletions", "--json")
    assert log.exit_code == 0, log.output
    entries = json.loads(log.stdout)
    assert [(e["action"], e["instances"]) for e in entries] == [("restore", 2), ("soft-delete", 2)]
    assert entries[0]["by"].startswith("cli:") and entries[1]["by"] == "alice"
    assert "soft-delete" in invoke("deletions", "--study", study).output
    assert json.loads(invoke("deletions", "--study", generate_uid(), "--json").stdout) == []

    missing = invoke("trash", "restore", study)
    assert missing.exit_code == 1 and "nothing of this is in the trash" in missing.output


def test_cli_trash_purge(data_dir: Path, invoke: Invoke) -> None:
    study, datas = _soft_deleted(data_dir)
    assert all(_blob(data_dir, d).exists() for d in datas)
    assert invoke("trash", "purge").exit_code == 2, "STUDY_UID or --all-due"
    assert invoke("trash", "purge", study, "--all-due").exit_code == 2
    assert invoke("trash", "purge", "--all-due", "--force").exit_code == 2

    due = invoke("trash", "purge", "--all-due", "--json")
    assert due.exit_code == 0, due.output
    assert json.loads(due.stdout)["purged"] == 0, "the grace period is not over"
    early = invoke("trash", "purge", study)
    assert early.exit_code == 0 and "2 not due yet (--force purges them)" in early.output
    assert all(_blob(data_dir, d).exists() for d in datas)

    forced = invoke("trash", "purge", study, "--force")
    assert forced.exit_code == 0, forced.output
    assert "purged 2 blob(s): 2 removed" in forced.output
    assert not any(_blob(data_dir, d).exists() for d in datas)
    assert json.loads(invoke("trash", "list", "--json").stdout) == []
    entries = json.loads(invoke("deletions", "--json", "--limit", "1").stdout)
    assert [(e["action"], e["study_uid"]) for e in entries] == [("purge", study)]
    assert invoke("trash", "purge", study, "--force").exit_code == 1
