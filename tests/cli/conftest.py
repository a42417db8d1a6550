"""Fixtures for the CLI tests: an invoker for in-process runs, ``serve`` subprocesses, a zip of the corpus."""

from __future__ import annotations

import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from click.testing import Result
from typer.testing import CliRunner

from dicomvault.cli import common
from dicomvault.cli.main import app
from tests.cli.cli_helpers import Invoke, ServeProcess, corpus_root


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    return tmp_path / "vault"


@pytest.fixture
def invoke(data_dir: Path) -> Invoke:
    """Run ``dicomvault <args> --data-dir <tmp>`` in-process; returns the click ``Result``."""
    runner = CliRunner()
    # The CLI's rich consoles size themselves once from the terminal; give tables a fixed, roomy width.
    common.console.width = common.err.width = 200

    def run(*args: str, data: bool = True) -> Result:
        argv = [*args, "--data-dir", str(data_dir)] if data else list(args)
        return runner.invoke(app, argv, env={"COLUMNS": "200"})

    return run


@pytest.fixture
def serve_factory(tmp_path: Path) -> Iterator[Callable[..., ServeProcess]]:
    """Start ``dicomvault serve`` subprocesses (stopped at teardown); output goes to tmp_path/serve-N.log."""
    started: list[ServeProcess] = []

    def start(data_dir: Path, *extra: str, env: dict[str, str] | None = None) -> ServeProcess:
        proc = ServeProcess(data_dir, tmp_path / f"serve-{len(started)}.log", *extra, env=env)
        started.append(proc)
        return proc

    yield start
    for proc in started:
        proc.stop()


@pytest.fixture
def corpus_zip(tmp_path: Path, corpus: list[Path]) -> Path:
    """The whole pydicom corpus folder (non-DICOM files included) as one zip archive."""
    root = corpus_root()
    out = tmp_path / "corpus.zip"
    with zipfile.ZipFile(out, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for p in sorted(root.rglob("*")):
            if p.is_file():
                zf.write(p, p.relative_to(root).as_posix())
    return out
