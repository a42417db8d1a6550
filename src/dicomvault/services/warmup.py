"""Start-up warm-up of the hot read paths.

Why: SQLAlchemy compiles a statement the first time its shape is used, and the metadata, instance and study
search statements together cost ~5 ms to compile. A server should pay that when it starts, not the first
radiologist who opens a study after a restart. The queries run against a UID that cannot exist (``2.25.0`` is a
valid UID no object carries), so they read nothing and change nothing.
"""

from __future__ import annotations

import logging

from dicomvault.domain.errors import DicomVaultError
from dicomvault.domain.tags import Level
from dicomvault.ports.index import IndexRepository
from dicomvault.services.query import QueryService

log = logging.getLogger(__name__)

ABSENT_UID = "2.25.0"


def warm_up(index: IndexRepository, query: QueryService) -> None:
    """Run each hot read once (never raises: a database that is not reachable yet is reported by /readyz)."""
    try:
        for series in (None, ABSENT_UID):
            index.metadata_version(study_uid=ABSENT_UID, series_uid=series)
            index.metadata_documents(study_uid=ABSENT_UID, series_uid=series)
            index.instances(study_uid=ABSENT_UID, series_uid=series)
        index.instances(study_uid=ABSENT_UID, series_uid=ABSENT_UID, sop_uids=[ABSENT_UID])
        for level, keys in ((Level.STUDY, {"PatientID": ABSENT_UID}), (Level.STUDY, {"PatientName": "ABSENT*"}),
                            (Level.SERIES, {"StudyInstanceUID": ABSENT_UID})):
            spec = query.build_spec(level, keys, limit=1)
            if query.search_page_encoded(spec) is None:
                query.search_page(spec)
    except DicomVaultError as exc:
        log.warning("warm-up skipped: %s", exc.message)
