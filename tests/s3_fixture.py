"""Moto S3 server fixtures (pytest plugin, registered by the root conftest).

moto runs in server mode (``ThreadedMotoServer``) on a free loopback port, so the code under test talks real
HTTP through botocore exactly as it would to MinIO or AWS. moto keeps its state in process-wide backends, so a
server stopped and started again on the same port still has its buckets (the fault tests rely on that).

* ``moto_server`` (session): one ``moto_server`` subprocess per test process (xdist workers each get their own);
  a separate process keeps the emulator's memory and CPU out of the test's measurements.
* ``s3_bucket_url`` (function): a fresh bucket on it, emptied and removed after the test; yields the
  ``s3://`` storage URL. ``DV_TEST_STORAGE_URL=s3`` makes the root ``settings`` fixture use it.
* ``fresh_moto`` (function): a server of the test's own, which the test may stop and restart.
"""

from __future__ import annotations

import logging
import os
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3
import pytest
from moto.server import ThreadedMotoServer

logging.getLogger("werkzeug").setLevel(logging.ERROR)

_AWS_ENV = {
    "AWS_ACCESS_KEY_ID": "dicomvault-test",
    "AWS_SECRET_ACCESS_KEY": "dicomvault-test-secret",
    "AWS_DEFAULT_REGION": "us-east-1",
}


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class MotoEndpoint:
    """What tests need from any moto server: its endpoint, buckets, and storage URLs for it."""

    port: int

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def client(self) -> Any:
        return boto3.client("s3", endpoint_url=self.endpoint, region_name="us-east-1")

    def create_bucket(self) -> str:
        name = f"dv-{uuid.uuid4().hex[:20]}"
        self.client().create_bucket(Bucket=name)
        return name

    def remove_bucket(self, name: str) -> None:
        c = self.client()
        for page in c.get_paginator("list_objects_v2").paginate(Bucket=name):
            objs = [{"Key": o["Key"]} for o in page.get("Contents", ())]
            if objs:
                c.delete_objects(Bucket=name, Delete={"Objects": objs})
        c.delete_bucket(Bucket=name)

    def object_names(self, bucket: str) -> list[str]:
        c = self.client()
        return [o["Key"] for page in c.get_paginator("list_objects_v2").paginate(Bucket=bucket)
                for o in page.get("Contents", ())]

    def url(self, bucket: str, prefix: str = "vault", **params: object) -> str:
        query = "&".join([f"endpoint={self.endpoint}", "region=us-east-1", "max_attempts=2", "connect_timeout=2",
                          *(f"{k}={v}" for k, v in params.items())])
        return f"s3://{bucket}/{prefix}?{query}"


def _wait_listening(port: int, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise RuntimeError(f"moto did not listen on port {port}")


class MotoProcess(MotoEndpoint):
    """``moto_server`` (the console script installed with moto[server]) as a child process."""

    def __init__(self, port: int) -> None:
        self.port = port
        script = Path(sys.executable).with_name("moto_server")
        self.proc = subprocess.Popen([str(script), "-H", "127.0.0.1", "-p", str(port)],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        _wait_listening(port)

    def terminate(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


@dataclass
class MotoServer(MotoEndpoint):
    """A moto S3 endpoint that can be stopped and started again on the same port (state is kept)."""

    port: int
    server: ThreadedMotoServer | None = None

    def start(self) -> None:
        if self.server is None:
            self.server = ThreadedMotoServer(ip_address="127.0.0.1", port=self.port, verbose=False)
            self.server.start()
            _wait_listening(self.port)

    def stop(self) -> None:
        if self.server is not None:
            self.server.stop()
            self.server = None


@pytest.fixture(scope="session")
def aws_test_env() -> Iterator[None]:
    """Dummy credentials for the emulator (real ones in the environment are set aside for the session)."""
    saved = {k: os.environ.get(k) for k in (*_AWS_ENV, "AWS_PROFILE", "AWS_SESSION_TOKEN")}
    os.environ.update(_AWS_ENV)
    os.environ.pop("AWS_PROFILE", None)
    os.environ.pop("AWS_SESSION_TOKEN", None)
    yield
    for k, v in saved.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v


@pytest.fixture(scope="session")
def moto_server(aws_test_env: None) -> Iterator[MotoProcess]:
    server = MotoProcess(_free_port())
    yield server
    server.terminate()


@pytest.fixture
def s3_bucket_url(moto_server: MotoProcess) -> Iterator[str]:
    bucket = moto_server.create_bucket()
    yield moto_server.url(bucket)
    moto_server.remove_bucket(bucket)


@pytest.fixture
def fresh_moto(aws_test_env: None) -> Iterator[MotoServer]:
    server = MotoServer(_free_port())
    server.start()
    yield server
    server.stop()
