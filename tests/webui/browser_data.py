"""Studies for the study browser's tests: small CT and MR objects with chosen patients, dates and descriptions."""

from __future__ import annotations

import io
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from pydicom.uid import generate_uid

from dicomvault.bootstrap import Archive
from dicomvault.services.auth import Principal
from tests.helpers import make_ct


@dataclass(frozen=True)
class Stored:
    study: str
    series: list[str]
    sops: list[str]


def store_study(archive: Archive, *, name: str = "Doe^John", pid: str = "PID-1", date: str = "20240102",
                accession: str = "ACC1", description: str = "CHEST", modality: str = "CT", series: int = 1,
                per_series: int = 1, source: str = "test") -> Stored:
    study = generate_uid()
    series_uids, sops = [], []
    for s in range(series):
        se = generate_uid()
        series_uids.append(se)
        for i in range(per_series):
            sop = generate_uid()
            blob = make_ct(study=study, series=se, sop=sop, seed=s * 100 + i, PatientName=name, PatientID=pid,
                           StudyDate=date, AccessionNumber=accession, StudyDescription=description,
                           Modality=modality, SeriesNumber=s + 1, InstanceNumber=i + 1)
            archive.ingest.ingest(io.BytesIO(blob), source=source)
            sops.append(sop)
    return Stored(study, series_uids, sops)


def token(archive: Archive, *scopes: str, name: str = "alice") -> str:
    assert archive.tokens is not None
    return archive.tokens.create(name, list(scopes))[1]


def share_session(archive: Archive, study: str) -> str:
    """The cookie value of a share link's session on ``study`` (read-only, that study alone)."""
    assert archive.sessions is not None
    principal = Principal(name="share:test", scopes=frozenset({"read"}), kind="share", study=study)
    return archive.sessions.open(principal, expires_at=datetime.now(UTC) + timedelta(hours=1)).secret
