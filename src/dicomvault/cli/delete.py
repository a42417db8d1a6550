"""``dicomvault delete STUDY_UID [--series UID] [--instance UID] [--yes]``: the DICOMweb DELETE, from the shell.

Why through the trash service, like ``DELETE /dicom-web/studies/…``: one behaviour whoever deletes — the retention
minimum (``retention_min_days``) refuses young studies, ``delete_grace_days`` keeps what is deleted in the trash,
restorable (``dicomvault trash restore``), and the deletion log names the operator (``cli:<user>``). It asks before
deleting, showing what would go (instances, series, patient and study date), unless ``--yes``.

Exit codes: 0 deleted; 1 nothing matched, the retention minimum refused, or the operator said no; 2 no archive or
a configuration problem.
"""

from __future__ import annotations

from typing import Annotated

import typer

from dicomvault.cli.common import (
    ConfigFile,
    DataDir,
    IndexUrl,
    StorageUrl,
    console,
    fail,
    load_settings,
    open_archive,
    operator,
)
from dicomvault.domain.errors import DicomVaultError, NotFound
from dicomvault.domain.tags import Level
from dicomvault.services.archive import Archive


def _describe(archive: Archive, study: str, series: str | None, sop: str | None) -> str:
    """What the UIDs address, for the confirmation: counts, and the study's patient and date."""
    found = archive.retrieve.locate(study_uid=study, series_uid=series, sop_uids=[sop] if sop else None)
    if not found:
        fail(f"nothing to delete: no instances match study {study}"
             + (f" series {series}" if series else "") + (f" instance {sop}" if sop else ""), 1)
    what = "instance" if sop else "series" if series else "study"
    n_series = len({r.series_uid for r in found})
    label = ""
    try:
        spec = archive.query.build_spec(Level.STUDY, {"StudyInstanceUID": study},
                                        return_keys=["PatientName", "PatientID", "StudyDate"], limit=1)
        rows, _ = archive.query.search_page(spec)
        if rows:
            row = rows[0]
            name = ((row.get("00100010") or {}).get("Value") or [{}])[0].get("Alphabetic", "")
            pid = ((row.get("00100020") or {}).get("Value") or [""])[0]
            date = ((row.get("00080020") or {}).get("Value") or [""])[0]
            label = f" — patient {name or '?'} ({pid or 'no ID'}), study date {date or 'unknown'}"
    except DicomVaultError:
        label = ""
    return (f"{what} {sop or series or study}: {len(found)} instance(s) in {n_series} series{label}")


def delete_command(
    study: Annotated[str, typer.Argument(help="Study Instance UID.")],
    series: Annotated[str | None, typer.Option("--series", help="Only this Series Instance UID.")] = None,
    instance: Annotated[str | None, typer.Option("--instance", help="Only this SOP Instance UID.")] = None,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation.")] = False,
    reason: Annotated[str, typer.Option("--reason", help="Why, for the deletion log.")] = "dicomvault delete",
    data_dir: DataDir = None,
    config: ConfigFile = None,
    index_url: IndexUrl = None,
    storage_url: StorageUrl = None,
) -> None:
    """Delete a study, a series or an instance, as DICOMweb DELETE does (into the trash when the grace period
    delete_grace_days is on; refused under retention_min_days). Asks first unless --yes."""
    settings = load_settings(config, data_dir=data_dir, index_url=index_url, storage_url=storage_url)
    archive = open_archive(settings, create=False)
    try:
        summary = _describe(archive, study.strip(), series, instance)
        if not yes and not typer.confirm(f"Delete {summary}?", default=False, err=True):
            fail("nothing deleted", 1)
        who = operator(reason)
        if archive.trash is not None:
            outcome = archive.trash.delete(study.strip(), series, instance, deletion=who)
            if outcome.soft:
                assert outcome.purge_after is not None
                console.print(f"deleted {summary}; {outcome.trashed} object(s) in the trash until "
                              f"{outcome.purge_after:%Y-%m-%d %H:%M} UTC (dicomvault trash restore {study.strip()})",
                              highlight=False, soft_wrap=True)
                return
            removed = outcome.removed
        else:
            removed = archive.lifecycle.delete(study.strip(), series, instance, deletion=who)
        left = f", {removed.blobs_left} left to the sweep" if removed and removed.blobs_left else ""
        console.print(f"deleted {summary}; {removed.blobs_removed if removed else 0} stored object(s) removed"
                      f"{left} (no grace period: not restorable)", highlight=False, soft_wrap=True)
    except NotFound as exc:
        fail(f"nothing to delete: {exc.message}", 1)
    except DicomVaultError as exc:
        fail(f"not deleted: {exc.message}", 1)
    finally:
        archive.close()
