"""The README's store example works on pydicom's corpus as written (issue #13 item 8): the dcmtk command of the
Quick start, pointed at a running ``dicomvault serve``, stores every Part 10 object of the corpus — compressed ones
in their own transfer syntax — and does not stop at the first file it cannot send."""

from __future__ import annotations

import json
import shlex
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

import pydicom
import pytest

from tests.cli.cli_helpers import Invoke, ServeProcess, corpus_root

README = Path(__file__).resolve().parents[2] / "README.md"


def _readme_store_command() -> list[str]:
    """The first command of the README's Quick start that stores a folder over DIMSE."""
    for line in README.read_text(encoding="utf-8").splitlines():
        if line.startswith("dcmsend "):
            return shlex.split(line.partition("#")[0])
    raise AssertionError("no dcmsend example in README.md")


def _part10_uids(root: Path) -> set[str]:
    """SOP Instance UIDs of the corpus's Part 10 files (a sender needs the File Meta header)."""
    uids: set[str] = set()
    for p in root.rglob("*"):
        try:
            ds = pydicom.dcmread(p, stop_before_pixels=True)
        except Exception:
            continue
        if ds.file_meta.get("TransferSyntaxUID") and ds.get("SOPClassUID") and ds.get("SOPInstanceUID"):
            uids.add(str(ds.SOPInstanceUID))
    return uids


@pytest.mark.skipif(shutil.which("dcmsend") is None, reason="dcmtk's dcmsend is not installed")
def test_the_readme_store_example_stores_the_corpus(invoke: Invoke, tmp_path: Path, data_dir: Path,
                                                    serve_factory: Callable[..., ServeProcess]) -> None:
    server = serve_factory(data_dir, "--aet", "DICOMVAULT")
    server.wait_ready()
    argv = _readme_store_command()
    assert argv[-3:] == ["127.0.0.1", "11112", "path/to/dicom/"], argv
    argv[-2:] = [str(server.dimse_port), str(corpus_root())]
    sent = subprocess.run(argv, capture_output=True, text=True, timeout=300)
    assert sent.returncode == 0, sent.stderr[-2000:]
    found = invoke("find", "--level", "instance", "--limit", "10000", "--json")
    stored = {row["00080018"]["Value"][0] for row in json.loads(found.stdout)}
    # every Part 10 object the archive accepts (what `dicomvault import` of the same folder stores) arrived
    reference = tmp_path / "imported"
    assert invoke("import", str(corpus_root()), "--data-dir", str(reference), data=False).exit_code in (0, 1)
    found = invoke("find", "--level", "instance", "--limit", "10000", "--json", "--data-dir", str(reference),
                   data=False)
    accepted = {row["00080018"]["Value"][0] for row in json.loads(found.stdout)}
    expected = _part10_uids(corpus_root()) & accepted
    assert len(expected) > 100 and expected <= stored, sorted(expected - stored)
