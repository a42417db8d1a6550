"""``dicomvault index migrate``: an archive's SQLite index copied into PostgreSQL serves the same answers."""

from __future__ import annotations

import io
from pathlib import Path

from pydicom.uid import generate_uid
from typer.testing import CliRunner

from dicomvault.bootstrap import build_archive
from dicomvault.cli.index_migrate import app as index_app
from dicomvault.domain.records import DuplicatePolicy
from dicomvault.domain.tags import Level
from dicomvault.settings import Settings
from tests.helpers import make_ct


def test_sqlite_index_moves_to_postgresql(tmp_path: Path, pg_url: str) -> None:
    data_dir = tmp_path / "vault"
    src = build_archive(Settings.load(data_dir=data_dir, duplicate_policy=DuplicatePolicy.KEEP_BOTH))
    study, series = generate_uid(), generate_uid()
    sop = generate_uid()
    for i in range(5):
        src.ingest.ingest(io.BytesIO(make_ct(study=study, series=series, InstanceNumber=i + 1, seed=i,
                                             PatientName="Müller^Jörg")))
    src.ingest.ingest(io.BytesIO(make_ct(study=study, series=series, sop=sop, seed=100)))
    src.ingest.ingest(io.BytesIO(make_ct(study=study, series=series, sop=sop, seed=101)))  # a prior version
    assert src.jobs is not None
    job = src.jobs.enqueue("fixity", {"study_uid": study})
    before = src.query.search(src.query.build_spec(Level.STUDY, {}))
    refs_before = sorted((s, b.key) for s, b in src.index.iter_blob_refs())
    src.close()

    runner = CliRunner()
    res = runner.invoke(index_app, ["migrate", "--to", pg_url, "--data-dir", str(data_dir)])
    assert res.exit_code == 0, res.output
    assert "instances\t6" in res.stdout and "instance_versions\t1" in res.stdout and "jobs\t1" in res.stdout

    dst = build_archive(Settings.load(data_dir=data_dir, index_url=pg_url))
    try:
        assert dst.query.search(dst.query.build_spec(Level.STUDY, {})) == before
        assert len(dst.query.search(dst.query.build_spec(Level.STUDY, {"PatientName": "muller*"}))) == 1
        assert sorted((s, b.key) for s, b in dst.index.iter_blob_refs()) == refs_before
        assert dst.jobs is not None and dst.jobs.get(job).payload == {"study_uid": study}
        # New rows get fresh ids after the copied ones (sequences were advanced).
        dst.ingest.ingest(io.BytesIO(make_ct(study=study, series=series, InstanceNumber=9, seed=9)))
        assert dst.index.stats().instances == 7
        assert dst.jobs.enqueue("fixity", {"sop_uid": sop}) > job
    finally:
        dst.close()
    res = runner.invoke(index_app, ["migrate", "--to", pg_url, "--data-dir", str(data_dir)])
    assert res.exit_code == 1 and "not empty" in res.output
