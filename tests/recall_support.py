"""Shared by the recall tests: an archive whose ingest store is an S3 GLACIER bucket (moto), and moto's slow
restores (its restore state machine steps every ``STEP`` seconds instead of at once)."""

from __future__ import annotations

import io
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import requests
from pydicom.uid import generate_uid

from dicomvault.settings import Settings
from tests.conftest import free_port
from tests.helpers import make_ct

STEP = 1.5


def cold_settings(tmp_path: Path, s3_bucket_url: str, **overrides: Any) -> Settings:
    """A hot folder (``default``) and a cold GLACIER bucket that new objects land on."""
    return Settings.load(data_dir=tmp_path / "vault", dimse_port=free_port(), http_port=free_port(),
                         stores={"cold": {"url": f"{s3_bucket_url}&storage_class=GLACIER", "recall_days": 2}},
                         ingest_store="cold", **overrides)


def store_study(archive: Any, count: int = 2) -> tuple[str, dict[str, bytes]]:
    """A study of ``count`` CT instances; returns its UID and SOP Instance UID → bytes."""
    study, series = generate_uid(), generate_uid()
    objects = {}
    for i in range(count):
        data = make_ct(study=study, series=series, InstanceNumber=i + 1, seed=i)
        objects[archive.ingest.ingest(io.BytesIO(data)).sop_instance_uid] = data
    return study, objects


@contextmanager
def slow_restores(endpoint: str) -> Iterator[None]:
    base = f"{endpoint}/moto-api/state-manager"
    requests.post(f"{base}/set-transition", json={
        "model_name": "s3::keyrestore", "transition": {"progression": "time", "seconds": STEP}}, timeout=5,
    ).raise_for_status()
    try:
        yield
    finally:
        requests.post(f"{base}/unset-transition", json={"model_name": "s3::keyrestore"},
                      timeout=5).raise_for_status()
