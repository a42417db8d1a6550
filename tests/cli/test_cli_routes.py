"""``dicomvault routes status|retry`` and the start-up refusal of a route to an unknown peer (issue #12 item 3)."""

from __future__ import annotations

import io
import json
from pathlib import Path

from pydicom.uid import generate_uid

from dicomvault.bootstrap import build_archive
from dicomvault.settings import Settings
from tests.cli.cli_helpers import Invoke, cli_free_port
from tests.helpers import make_ct


def test_cli_routes_status_and_retry(invoke: Invoke, data_dir: Path, tmp_path: Path) -> None:
    config = tmp_path / "config.toml"
    down = cli_free_port()  # nothing listens there
    config.write_text(f'[move_destinations]\nDEST = "127.0.0.1:{down}"\n\n'
                      '[[route]]\nname = "all to DEST"\nto = "DEST"\n')
    missing = invoke("routes", "status", "--json", "--config", str(config))  # read-only: creates no archive
    assert missing.exit_code == 2 and "no archive at" in missing.stderr and not data_dir.exists()
    archive = build_archive(Settings.load(config, data_dir=data_dir))
    try:
        assert json.loads(invoke("routes", "status", "--json", "--config", str(config)).stdout)["destinations"] == []
        assert archive.routing is not None
        study = generate_uid()
        archive.ingest.ingest(io.BytesIO(make_ct(study=study)), source="dimse:CT1")
        archive.routing.flush()
        try:
            archive.routing.deliver("DEST", study, job_id=1, attempt=5, max_attempts=5)
        except Exception as exc:
            assert "not established" in str(exc)
    finally:
        archive.close()
    status = json.loads(invoke("routes", "status", "--json", "--config", str(config)).stdout)
    assert status["routes"] == [{"name": "all to DEST", "on": "stored", "to": "DEST", "via": "dimse",
                                 "commitment": False}]
    [dest] = status["destinations"]
    assert dest["destination"] == "DEST" and dest["failed"] == 1 and dest["confirmed"] == 0
    assert "not established" in dest["last_error"]
    table = invoke("routes", "status", "--config", str(config)).output
    assert "DEST" in table and "not established" in table
    retried = invoke("routes", "retry", "--destination", "DEST", "--config", str(config))
    assert retried.exit_code == 0 and "1 studies queued again to DEST" in retried.output
    [dest] = json.loads(invoke("routes", "status", "--json", "--config", str(config)).stdout)["destinations"]
    assert dest["queued"] == 1 and dest["failed"] == 0
    assert "no failed deliveries" in invoke("routes", "retry", "--config", str(config)).output


def test_serve_refuses_a_route_to_an_unknown_peer(invoke: Invoke, tmp_path: Path) -> None:
    config = tmp_path / "config.toml"
    config.write_text('aet = "DV"\n[[route]]\nname = "lost"\nto = "NOBODY"\n')
    result = invoke("serve", "--config", str(config), "--dimse-port", str(cli_free_port()),
                    "--http-port", str(cli_free_port()))
    assert result.exit_code == 2
    assert f"refusing to start: {config} line 4: [[route]] rule 1 ('lost'), to: route 'lost' sends to unknown " \
           "peer 'NOBODY'" in result.output.replace("\n", "")


def test_a_misspelt_route_key_is_refused_with_its_line(invoke: Invoke, tmp_path: Path) -> None:
    config = tmp_path / "config.toml"
    config.write_text('[[route]]\nname = "x"\nto = "PACS"\nwhen = { modalty = "CT" }\n')
    result = invoke("routes", "status", "--config", str(config))
    assert result.exit_code == 2
    assert f"{config} line 4: [[route]] rule 1 ('x'), when.modalty: unknown key 'modalty'" in \
        result.output.replace("\n", "")
