"""``dicomvault recall`` as a real process against a cold (GLACIER, moto) store configured in TOML."""

from __future__ import annotations

import json
from pathlib import Path

from dicomvault.bootstrap import build_archive
from dicomvault.settings import Settings
from tests.cli.cli_helpers import run_dv
from tests.recall_support import store_study


def test_recall_command_requests_and_waits(tmp_path: Path, s3_bucket_url: str) -> None:
    config = tmp_path / "dicomvault.toml"
    config.write_text(f'data_dir = "{tmp_path / "vault"}"\ningest_store = "cold"\n[stores.cold]\n'
                      f'url = "{s3_bucket_url}&storage_class=DEEP_ARCHIVE"\nrecall_tier = "Bulk"\n')
    archive = build_archive(Settings.load(config))
    try:
        study, _ = store_study(archive, 2)
    finally:
        archive.close()

    r = run_dv("recall", study, "--config", str(config), "--wait", "--poll", "0.2")
    assert r.returncode == 0, r.stderr
    assert "2 blob(s): 0 readable, 0 being restored, 2 restore(s) requested" in r.stdout
    assert "2 blob(s): 2 readable" in r.stdout

    again = run_dv("recall", study, "--config", str(config), "--json")
    assert again.returncode == 0, again.stderr
    counts = json.loads(again.stdout)
    assert (counts["readable"], counts["requested"], counts["job_id"]) == (2, 0, None)

    unknown = run_dv("recall", "1.2.3.4", "--config", str(config))
    assert unknown.returncode == 1 and "study not found" in unknown.stderr
