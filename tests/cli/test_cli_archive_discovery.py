"""Which archive a command opens (cli/discovery.py, issue #13 item 8): options, environment, ./dicomvault.toml, the
last server's record, ./vault-data only if it exists; read-only commands never create an archive."""

from __future__ import annotations

import json
import os
import socket
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from dicomvault.cli import discovery
from tests.cli.cli_helpers import Invoke, ServeProcess, dv_command, dv_env
from tests.helpers import make_ct

READ_ONLY = [
    ("stats",), ("find",), ("verify",), ("jobs", "list"), ("tier", "status"), ("routes", "status"),
    ("peers", "list"), ("trash", "list"), ("deletions",), ("token", "list"), ("storage", "info"),
    ("lifecycle", "plan"), ("delete", "1.2.3", "--yes"), ("send", "1.2.3", "--to", "http://127.0.0.1:9/dicom-web"),
]


@pytest.fixture
def elsewhere(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty current folder, no DICOMVAULT_* location in the environment, an empty state folder."""
    cwd = tmp_path / "elsewhere"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    for name in discovery.LOCATION_ENV:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("DICOMVAULT_STATE_DIR", str(tmp_path / "state"))
    return cwd


def _seed(invoke: Invoke, tmp_path: Path, data_dir: Path, studies: int = 1) -> None:
    for n in range(studies):
        (tmp_path / f"ct{n}.dcm").write_bytes(make_ct(rows=2, columns=2, PatientID=f"DISC-{n}"))
        assert invoke("import", str(tmp_path / f"ct{n}.dcm"), "--data-dir", str(data_dir), data=False).exit_code == 0


@pytest.mark.parametrize("command", READ_ONLY, ids=lambda c: " ".join(c[:2]))
def test_read_only_commands_never_create_an_archive(invoke: Invoke, data_dir: Path, command: tuple[str, ...]) -> None:
    result = invoke(*command)
    assert result.exit_code == 2, result.output
    assert f"no archive at {data_dir} (start one with `dicomvault serve`, or pass --data-dir/--config)" \
        in result.stderr.replace("\n", "")
    assert not data_dir.exists()


def test_without_options_nothing_is_created_in_the_current_folder(invoke: Invoke, elsewhere: Path) -> None:
    result = invoke("stats", data=False)
    assert result.exit_code == 2 and "no archive at vault-data" in result.stderr
    assert list(elsewhere.iterdir()) == []
    # an existing ./vault-data is still used (the last place looked at)
    assert invoke("import", str(elsewhere), data=False).exit_code == 0  # a write command may create it
    assert (elsewhere / "vault-data" / "index.sqlite").is_file()
    assert json.loads(invoke("stats", "--json", data=False).stdout)["instances"] == 0


def _record(data_dir: Path, **fields: object) -> discovery.ServerRecord:
    base: dict[str, object] = {"pid": os.getpid(), "hostname": socket.gethostname(),
                               "started_at": "2026-01-01T00:00:00+00:00", "data_dir": str(data_dir),
                               "index_url": f"sqlite:///{data_dir / 'index.sqlite'}"}
    return discovery.ServerRecord(**{**base, **fields})  # type: ignore[arg-type]


def test_the_record_of_the_last_server_is_used_and_named(invoke: Invoke, tmp_path: Path, elsewhere: Path) -> None:
    served = tmp_path / "served"
    _seed(invoke, tmp_path, served, studies=2)
    assert discovery.write_record(_record(served, stopped_at="2026-01-02T00:00:00+00:00")) is not None
    result = invoke("stats", data=False)
    assert result.exit_code == 0, result.output
    line = result.stderr.replace("\n", "")
    assert "using the archive of the last `dicomvault serve`" in line and "stopped 2026-01-02" in line
    assert f"data dir {served}" in line and "pass --config or --data-dir for another" in line
    as_json = invoke("stats", "--json", data=False)
    assert json.loads(as_json.stdout)["studies"] == 2 and as_json.stderr == ""  # --json: no note
    # ./dicomvault.toml in the current folder comes before the record; the environment before both
    local = tmp_path / "local"
    (elsewhere / "dicomvault.toml").write_text(f'data_dir = "{local}"\n')
    assert "no archive at " + str(local) in invoke("stats", data=False).stderr.replace("\n", "")
    env_dir = tmp_path / "from-env"
    _seed(invoke, tmp_path, env_dir)
    os.environ["DICOMVAULT_DATA_DIR"] = str(env_dir)
    try:
        result = invoke("stats", "--json", data=False)
    finally:
        del os.environ["DICOMVAULT_DATA_DIR"]
    assert json.loads(result.stdout)["studies"] == 1
    # an option comes before everything
    assert json.loads(invoke("stats", "--json", "--data-dir", str(served), data=False).stdout)["studies"] == 2


def test_a_password_is_never_recorded(invoke: Invoke, tmp_path: Path, elsewhere: Path) -> None:
    record = _record(tmp_path, index_url="postgresql://dv:***@127.0.0.1:1/dv", index_password=True)
    discovery.write_record(record)
    text = discovery.record_path().read_text()
    assert "***" in text and (discovery.record_path().stat().st_mode & 0o777) == 0o600
    result = invoke("stats", data=False)
    assert result.exit_code == 2
    assert "used the index postgresql://dv:***@127.0.0.1:1/dv, whose password is in neither its configuration " \
           "file nor the environment" in result.stderr.replace("\n", "")


def test_serve_leaves_a_record_that_other_commands_follow(
    invoke: Invoke, tmp_path: Path, elsewhere: Path, serve_factory: Callable[..., ServeProcess]
) -> None:
    served = tmp_path / "served"
    _seed(invoke, tmp_path, served)
    env = {"DICOMVAULT_STATE_DIR": str(tmp_path / "state")}
    server = serve_factory(served, env=env)
    server.wait_ready()
    record = discovery.read_record()
    assert record is not None and record.pid == server.proc.pid and record.running
    assert record.data_dir == str(served) and record.http_port == server.http_port
    run_env = {**dv_env(), **env}
    for name in discovery.LOCATION_ENV:
        run_env.pop(name, None)
    stats = subprocess.run(dv_command("stats"), capture_output=True, text=True, timeout=60, env=run_env,
                           cwd=elsewhere)
    assert stats.returncode == 0, stats.stderr
    assert f"(pid {server.proc.pid}, running" in stats.stderr.replace("\n", "")
    assert not (elsewhere / "vault-data").exists()
    server.stop()
    record = discovery.read_record()
    assert record is not None and record.stopped_at is not None and not record.running


def test_serve_reads_the_local_configuration_but_never_the_record(tmp_path: Path, elsewhere: Path) -> None:
    discovery.write_record(_record(tmp_path / "served"))
    assert discovery.resolve(None, {"host": "127.0.0.1"}, use_record=False) == \
        discovery.Location(None, {"host": "127.0.0.1"})
    (elsewhere / "dicomvault.toml").write_text('aet = "LOCAL"\n')
    assert discovery.resolve(None, {}, use_record=False).config == discovery.LOCAL_CONFIG
