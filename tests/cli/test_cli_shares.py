"""``dicomvault share create|list|uses|revoke``, in-process, on an archive holding one study."""

from __future__ import annotations

import io
import json
from pathlib import Path

from typer.testing import CliRunner

from dicomvault.bootstrap import build_archive
from dicomvault.cli.main import app
from dicomvault.services.shares import ShareRefused
from dicomvault.settings import Settings
from tests.cli.cli_helpers import Invoke
from tests.helpers import make_ct

STUDY = "1.2.826.0.1.3680043.8.498.555"


def _study(data_dir: Path) -> None:
    archive = build_archive(Settings.load(data_dir=data_dir))
    try:
        archive.ingest.ingest(io.BytesIO(make_ct(study=STUDY)), source="test")
    finally:
        archive.close()


def _open(data_dir: Path, link: str, password: str | None = None) -> str:
    """Open the link through the service (as the /share page does); returns the refusal or 'opened'."""
    archive = build_archive(Settings.load(data_dir=data_dir))
    try:
        assert archive.shares is not None
        archive.shares.open(link.rsplit("/", 1)[1], password, "198.51.100.1")
        return "opened"
    except ShareRefused as exc:
        return exc.why
    finally:
        archive.close()


def test_cli_share_create_list_uses_revoke(data_dir: Path, invoke: Invoke) -> None:
    _study(data_dir)
    made = invoke("share", "create", STUDY, "--expires", "2d", "--base-url", "https://pacs.example.org/")
    assert made.exit_code == 0, made.output
    link = made.stdout.strip().splitlines()[-1]
    assert link.startswith("https://pacs.example.org/share/dvl_")
    assert _open(data_dir, link) == "opened"

    [row] = json.loads(invoke("share", "list", "--json").stdout)
    assert row["study"] == STUDY and row["state"] == "active" and row["uses"] == 1
    assert row["created_by"].startswith("cli:") and row["password"] is False
    table = invoke("share", "list").output
    assert STUDY in table and "active" in table and link.rsplit("/", 1)[1] not in table
    uses = invoke("share", "uses", str(row["id"]))
    assert uses.exit_code == 0 and "opened" in uses.output and "198.51.100.1" in uses.output

    revoked = invoke("share", "revoke", str(row["id"]))
    assert revoked.exit_code == 0 and f"revoked share link {row['id']}" in revoked.output
    assert _open(data_dir, link) == "revoked"
    again = invoke("share", "revoke", str(row["id"]))
    assert again.exit_code == 1 and "revoked already" in again.output
    assert json.loads(invoke("share", "list", "--json").stdout)[0]["state"] == "revoked"


def test_cli_share_create_refusals(data_dir: Path, invoke: Invoke) -> None:
    _study(data_dir)
    deid = invoke("share", "create", STUDY, "--deidentify")
    assert deid.exit_code == 1 and "de-identification is not available yet" in deid.output
    too_long = invoke("share", "create", STUDY, "--expires", "60d")
    assert too_long.exit_code == 1 and "at most 30 days" in too_long.output
    unknown = invoke("share", "create", "1.2.3.4")
    assert unknown.exit_code == 1 and "no such study" in unknown.output
    bad = invoke("share", "create", STUDY, "--expires", "soon")
    assert bad.exit_code == 1 and "expiry duration" in bad.output
    assert json.loads(invoke("share", "list", "--json").stdout) == []


def test_cli_share_create_with_a_password_prompts_twice(data_dir: Path) -> None:
    _study(data_dir)
    result = CliRunner().invoke(app, ["share", "create", STUDY, "--password", "--data-dir", str(data_dir)],
                                input="s3cret-pw\ns3cret-pw\n", env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    link = result.stdout.strip().splitlines()[-1]
    assert "s3cret-pw" not in result.stdout.replace("Password", "")  # not echoed
    assert _open(data_dir, link) == "password"
    assert _open(data_dir, link, "wrong-pw") == "wrong_password"
    assert _open(data_dir, link, "s3cret-pw") == "opened"
