"""The log of a real ``dicomvault serve`` while a STOW-RS brings objects that make pydicom warn (issue #9, defect 9):
at INFO a few scrubbed summary lines, none of the values, no raw ``warnings.warn`` output on stderr; at DEBUG the
values are there."""

from __future__ import annotations

import signal
import uuid
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from tests.cli.cli_helpers import ServeProcess
from tests.helpers import make_ct

PARTS = 100


def _stow_body(marker: str) -> tuple[bytes, str]:
    """PARTS objects: every other one with an invalid SOP Instance UID (refused, so STOW-RS reads its UIDs again
    to name it in the response) and all with an invalid IS value and an over-long person name."""
    boundary = uuid.uuid4().hex
    chunks = []
    for i in range(PARTS):
        sop = f"1.2.826.0.1.3680043.99.{i}.{marker}" if i % 2 else None
        data = make_ct(sop=sop, seed=i, SeriesNumber=f"{i}.5", ReferringPhysicianName=f"{marker}{i}^" + "X" * 64)
        chunks.append(f"--{boundary}\r\nContent-Type: application/dicom\r\n\r\n".encode() + data + b"\r\n")
    chunks.append(f"--{boundary}--\r\n".encode())
    return b"".join(chunks), f'multipart/related; type="application/dicom"; boundary={boundary}'


def _run(tmp_path: Path, serve_factory: Callable[..., ServeProcess], level: str) -> tuple[str, str]:
    marker = "MARKER" + uuid.uuid4().hex[:8].upper()
    body, ctype = _stow_body(marker)
    # anonymous loopback clients may only read by default; this test is about the log, not about access
    server = serve_factory(tmp_path / "vault", "--log-level", level,
                           env={"DICOMVAULT_ANONYMOUS_SCOPES": '["read", "write"]'})
    server.wait_ready()
    r = httpx.post(f"{server.base_url}/dicom-web/studies", content=body, headers={"Content-Type": ctype},
                   timeout=120)
    assert r.status_code == 202, r.text  # half stored, half refused
    server.proc.send_signal(signal.SIGTERM)
    assert server.proc.wait(30) == 0
    server.log.flush()
    return server.log_path.read_text(errors="replace"), marker


@pytest.mark.filterwarnings("ignore::UserWarning")  # building the objects warns in this process
@pytest.mark.parametrize("level", ["INFO", "DEBUG"])
def test_stow_of_objects_pydicom_warns_about(tmp_path: Path, serve_factory: Callable[..., ServeProcess],
                                            level: str) -> None:
    log, marker = _run(tmp_path, serve_factory, level)
    lines = log.splitlines()
    assert "UserWarning" not in log and "warn_and_log" not in log  # no raw warnings.warn output on stderr
    above_debug = [ln for ln in lines if " DEBUG " not in ln]
    assert not [ln for ln in above_debug if marker in ln]
    summaries = [ln for ln in above_debug if "pydicom warning:" in ln]
    assert 1 <= len(summaries) <= 6, summaries  # one per kind (invalid UI, invalid IS, long PN), plus exit counts
    if level == "DEBUG":
        details = [ln for ln in lines if " DEBUG " in ln and "pydicom warning detail" in ln]
        assert any(marker in ln for ln in details)
    else:
        assert not any("pydicom warning detail" in ln for ln in lines)
