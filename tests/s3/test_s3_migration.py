"""Storage migration filesystem → S3: dry run, interruption and resume, verification, cut-over, clean-up."""

from __future__ import annotations

import io
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from dicomvault.bootstrap import Archive, build_archive, build_blob_store
from dicomvault.cli.storage import app
from dicomvault.domain.records import DuplicatePolicy
from dicomvault.services.storage_migration import MigrationEvent, Outcome, StorageMigration, store_usage
from dicomvault.settings import Settings
from tests.helpers import make_ct

runner = CliRunner()


class Interrupted(Exception):
    """Stands in for Ctrl-C / a killed process part-way through a migration."""


@pytest.fixture
def fs_archive(tmp_path: Path) -> Iterator[Archive]:
    """A filesystem-backed archive with 10 instances plus one prior version (keep-both): 11 blobs."""
    settings = Settings.load(data_dir=tmp_path / "vault", duplicate_policy=DuplicatePolicy.KEEP_BOTH)
    archive = build_archive(settings)
    study = "1.2.826.0.1.3680043.8.498.1"
    sops = [f"{study}.{i}" for i in range(10)]
    for i, sop in enumerate(sops):
        archive.ingest.ingest(io.BytesIO(make_ct(study=study, sop=sop, rows=32, columns=32, seed=i)), source="t")
    archive.ingest.ingest(io.BytesIO(make_ct(study=study, sop=sops[0], rows=32, columns=32, seed=99)), source="t")
    yield archive
    archive.close()


def _cli_args(archive: Archive) -> list[str]:
    args = ["--data-dir", str(archive.settings.data_dir)]
    if archive.settings.index_url:
        args += ["--index-url", archive.settings.index_url]
    return args


def _blob_bytes(archive: Archive) -> tuple[int, int]:
    blobs = {b.key: b.size for _, b in archive.index.iter_blob_refs()}
    return len(blobs), sum(blobs.values())


def test_s3_migration_dry_run_changes_nothing(fs_archive: Archive, s3_bucket_url: str, moto_server: Any) -> None:
    count, nbytes = _blob_bytes(fs_archive)
    assert count == 11
    result = runner.invoke(app, ["migrate", "--to", s3_bucket_url, "--dry-run", *_cli_args(fs_archive)])
    assert result.exit_code == 0, result.output
    assert result.output.count("would copy ") == 11
    assert f"11 blobs ({nbytes} bytes" in result.output
    bucket = s3_bucket_url.split("/")[2]
    assert moto_server.object_names(bucket) == []
    assert _blob_bytes(fs_archive) == (count, nbytes)


def test_s3_migration_interrupted_then_resumed(fs_archive: Archive, s3_bucket_url: str, tmp_path: Path) -> None:
    count, nbytes = _blob_bytes(fs_archive)
    target = build_blob_store(s3_bucket_url, fs_archive.settings)
    migration = StorageMigration(fs_archive.index, fs_archive.blobs, target, workers=2)

    def stop_after_four(event: MigrationEvent) -> None:
        if event.outcome is Outcome.COPIED and sum(1 for _ in target.iter_keys()) >= 4:
            raise Interrupted

    with pytest.raises(Interrupted):
        migration.run(on_event=stop_after_four)
    copied_before = sum(1 for _ in target.iter_keys())
    assert 4 <= copied_before < count

    plan = migration.plan()
    assert plan.present == copied_before and len(plan.missing) == count - copied_before

    report = migration.run()
    assert report.complete
    assert report.present == copied_before and report.copied == count - copied_before
    assert report.copied_bytes + report.present_bytes == nbytes
    assert store_usage(target) == (count, nbytes)
    for _, blob in fs_archive.index.iter_blob_refs():
        with fs_archive.blobs.open(blob.key) as src, target.open(blob.key) as dst:
            assert src.read() == dst.read()

    # Cut-over: the same index, now configured on S3, serves every instance byte-exact.
    switched = build_archive(Settings.load(data_dir=fs_archive.settings.data_dir,
                                           index_url=fs_archive.settings.index_url, storage_url=s3_bucket_url))
    try:
        records = switched.retrieve.locate(study_uid="1.2.826.0.1.3680043.8.498.1")
        assert len(records) == 10
        for rec in records:
            assert sum(len(c) for c in switched.retrieve.iter_bytes(rec, verify=True)) == rec.blob.size
    finally:
        switched.close()


def test_s3_migration_cli_copies_then_deletes_source_only_after_switch(
    fs_archive: Archive, s3_bucket_url: str
) -> None:
    count, nbytes = _blob_bytes(fs_archive)
    source_url = fs_archive.blobs.describe()
    result = runner.invoke(app, ["migrate", "--to", s3_bucket_url, *_cli_args(fs_archive)])
    assert result.exit_code == 0, result.output
    assert "copied 11" in result.output and "storage_url" in result.output

    again = runner.invoke(app, ["migrate", "--to", s3_bucket_url, *_cli_args(fs_archive)])
    assert again.exit_code == 0 and "copied 0" in again.output and "already present 11" in again.output

    refused = runner.invoke(app, ["migrate", "--to", s3_bucket_url, "--delete-source", *_cli_args(fs_archive)])
    assert refused.exit_code == 2 and "refusing" in refused.output
    assert sum(1 for _ in fs_archive.blobs.iter_keys()) == count

    info = runner.invoke(app, ["info", "--storage-url", s3_bucket_url, *_cli_args(fs_archive)])
    assert info.exit_code == 0 and f"{nbytes}" in info.output and "s3://" in info.output

    done = runner.invoke(app, ["migrate", "--from", source_url, "--to", s3_bucket_url, "--delete-source",
                               "--storage-url", s3_bucket_url, *_cli_args(fs_archive)])
    assert done.exit_code == 0, done.output
    assert "deleted 11 source blobs" in done.output
    assert list(fs_archive.blobs.iter_keys()) == []


def test_s3_migration_reports_a_corrupt_source_blob_and_does_not_advise_switching(
    fs_archive: Archive, s3_bucket_url: str
) -> None:
    _, victim = next(iter(fs_archive.index.iter_blob_refs()))
    path = fs_archive.blobs.local_path(victim.key)
    assert path is not None
    path.chmod(0o644)
    path.write_bytes(path.read_bytes()[:-1] + b"\x00")  # bit rot in the source store

    result = runner.invoke(app, ["migrate", "--to", s3_bucket_url, *_cli_args(fs_archive)])
    assert result.exit_code == 1
    assert "IntegrityFailure" in result.output and "not complete" in result.output
    target = build_blob_store(s3_bucket_url, fs_archive.settings)
    keys = set(target.iter_keys())
    assert victim.key not in keys and len(keys) == 10  # no stray object under the corrupt bytes' hash
