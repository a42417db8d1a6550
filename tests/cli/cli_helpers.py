"""Helpers for the CLI tests (importable by test modules, unlike conftest): subprocess runners, free ports."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import pydicom.data
from click.testing import Result

Invoke = Callable[..., Result]


def cli_free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def corpus_root() -> Path:
    """pydicom's test corpus folder (DICOM objects, broken objects and non-DICOM files)."""
    return Path(str(pydicom.data.get_testdata_file("CT_small.dcm"))).parent

def dv_command(*args: str) -> list[str]:
    """The argv of a real ``dicomvault`` process (same interpreter as the tests)."""
    return [sys.executable, "-m", "dicomvault", *args]


def dv_env() -> dict[str, str]:
    env = dict(os.environ)
    env["COLUMNS"] = "200"
    env.pop("DICOMVAULT_CONFIG", None)
    return env


def run_dv(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(dv_command(*args), capture_output=True, text=True, timeout=timeout, env=dv_env())


class ServeProcess:
    """``dicomvault serve`` as a real subprocess on free loopback ports."""

    def __init__(self, data_dir: Path, log_path: Path, *extra: str, env: dict[str, str] | None = None) -> None:
        self.data_dir = data_dir
        self.dimse_port = cli_free_port()
        self.http_port = cli_free_port()
        self.log_path = log_path
        self.log = open(log_path, "ab")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            dv_command("serve", "--data-dir", str(data_dir), "--host", "127.0.0.1",
                       "--dimse-port", str(self.dimse_port), "--http-port", str(self.http_port),
                       "--aet", "DVTEST", "--log-level", "WARNING", *extra),
            stdout=self.log, stderr=subprocess.STDOUT, env={**dv_env(), **(env or {})},
        )

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    def wait_ready(self, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"serve exited with {self.proc.returncode}")
            try:
                if httpx.get(f"{self.base_url}/readyz", timeout=1).status_code == 200 and self._dimse_open():
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        raise TimeoutError("serve did not become ready")

    def _dimse_open(self) -> bool:
        with socket.socket() as s:
            s.settimeout(1)
            return s.connect_ex(("127.0.0.1", self.dimse_port)) == 0

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self.log.close()
