"""``dicomvault send STUDY --to AE|URL`` (issue #13 item 8): C-STORE to a known peer (a pynetdicom storage SCP on
loopback), STOW-RS to a DICOMweb URL (a second archive run by ``dicomvault serve``), a failure summary and exit 1."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path

from pydicom.uid import generate_uid

from tests.cli.cli_helpers import Invoke, ServeProcess, cli_free_port
from tests.helpers import make_ct
from tests.routing_support import destination


def _seed(invoke: Invoke, tmp_path: Path, instances: int = 3) -> tuple[str, str]:
    """One study of ``instances`` instances in two series (and another study); returns (study, first series)."""
    study, first, second = generate_uid(), generate_uid(), generate_uid()
    src = tmp_path / "seed"
    src.mkdir()
    for n in range(instances):
        (src / f"{n}.dcm").write_bytes(make_ct(study=study, series=first if n == 0 else second, rows=2, columns=2,
                                               InstanceNumber=n + 1))
    (src / "other.dcm").write_bytes(make_ct(rows=2, columns=2))
    assert invoke("import", str(src)).exit_code == 0
    return study, first


def test_send_to_a_known_peer_by_c_store(invoke: Invoke, tmp_path: Path) -> None:
    study, series = _seed(invoke, tmp_path)
    with destination("STORESCP") as dest:
        assert invoke("peers", "add", "STORESCP", "--host", "127.0.0.1", "--port", str(dest.port)).exit_code == 0
        result = invoke("send", study, "--to", "STORESCP")
        assert result.exit_code == 0, result.output
        assert "3 of 3 instance(s) sent to STORESCP" in result.stdout
        assert "sending to STORESCP (C-STORE)" in result.stderr and "3/3" in result.stderr
        assert len(dest.stores) == 3 and set(dest.stores.values()) == {1}
        one = invoke("send", study, "--series", series, "--to", "STORESCP")
        assert one.exit_code == 0 and "1 of 1 instance(s) sent" in one.stdout


def test_send_failures_are_summed_up_and_exit_1(invoke: Invoke, tmp_path: Path) -> None:
    study, _ = _seed(invoke, tmp_path)
    down = cli_free_port()  # nothing listens there
    assert invoke("peers", "add", "DOWN", "--host", "127.0.0.1", "--port", str(down)).exit_code == 0
    result = invoke("send", study, "--to", "DOWN")
    assert result.exit_code == 1
    assert "0 of 3 instance(s) sent to DOWN, 3 failed" in result.stdout
    assert re.search(r"3 failed: .*not established", result.stderr.replace("\n", " ")), result.stderr
    unknown = invoke("send", study, "--to", "NOBODY")
    assert unknown.exit_code == 2 and "unknown peer 'NOBODY' (known: DOWN;" in unknown.stderr
    nothing = invoke("send", "1.2.3", "--to", "DOWN")
    assert nothing.exit_code == 1 and "nothing to send" in nothing.stderr


def test_send_to_a_dicomweb_url_by_stow(invoke: Invoke, tmp_path: Path,
                                        serve_factory: Callable[..., ServeProcess]) -> None:
    study, _ = _seed(invoke, tmp_path)
    other = tmp_path / "other-archive"
    created = invoke("token", "create", "sender", "--scope", "write", "--data-dir", str(other), data=False)
    assert created.exit_code == 0, created.output
    token = created.stdout.strip()  # the secret, alone on stdout
    server = serve_factory(other)
    server.wait_ready()
    url = f"{server.base_url}/dicom-web"
    refused = invoke("send", study, "--to", url)  # no token: the other archive refuses anonymous writes
    assert refused.exit_code == 1 and "3 failed" in refused.stdout
    result = invoke("send", study, "--to", url + "/", "--token", token)
    assert result.exit_code == 0, result.output
    assert f"3 of 3 instance(s) sent to {url}" in result.stdout
    found = invoke("find", "--json", "--data-dir", str(other), data=False)
    assert [row["0020000D"]["Value"][0] for row in json.loads(found.stdout)] == [study]
