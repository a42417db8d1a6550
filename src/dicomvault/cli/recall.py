"""``dicomvault recall STUDY_UID``: request the restore of a study whose blobs are on an archive storage class.

The restores are requested at once, by this process (``services.recall``); a ``recall`` job then follows them on
the server's worker (``dicomvault jobs show ID``). ``--wait`` stays until every blob is readable, looking again
every ``--poll`` seconds (re-requesting a restore that expired meanwhile), for an operator who wants to know when
the study can be read.
"""

from __future__ import annotations

import json
import time
from typing import Annotated

import typer

from dicomvault.cli.common import ConfigFile, DataDir, IndexUrl, StorageUrl, console, fail, load_settings, open_archive
from dicomvault.domain.errors import DicomVaultError
from dicomvault.services.recall import RecallResult


def _line(result: RecallResult) -> str:
    job = f"; job {result.job_id} follows the restores" if result.job_id is not None else ""
    missing = f", {result.missing} missing (run dicomvault verify)" if result.missing else ""
    return (f"{result.blobs} blob(s): {result.readable} readable, {result.restoring} being restored, "
            f"{result.requested} restore(s) requested{missing}{job}")


def recall_command(
    study_uid: Annotated[str, typer.Argument(help="Study Instance UID of the study to recall.")],
    wait: Annotated[bool, typer.Option("--wait", help="Wait until every blob is readable.")] = False,
    poll: Annotated[float, typer.Option("--poll", min=0.1, help="Seconds between looks with --wait.")] = 60.0,
    as_json: Annotated[bool, typer.Option("--json", help="Print the counts as one JSON object.")] = False,
    data_dir: DataDir = None,
    config: ConfigFile = None,
    index_url: IndexUrl = None,
    storage_url: StorageUrl = None,
) -> None:
    """Recall a study from archive storage (S3 GLACIER / DEEP_ARCHIVE): request its restores."""
    settings = load_settings(config, data_dir=data_dir, index_url=index_url, storage_url=storage_url)
    archive = open_archive(settings, create=False)
    try:
        recall = archive.recall
        if recall is None:
            fail("this archive has no recall service")
        result = recall.start(study_uid)
        console.print(json.dumps(result.as_dict()) if as_json else _line(result), highlight=False)
        while wait and not result.settled:
            time.sleep(poll)
            result = recall.recall(study_uid)
            if not as_json:
                console.print(_line(result), highlight=False)
        if as_json and wait:
            console.print(json.dumps(result.as_dict()), highlight=False)
        if wait and not result.readable_all:
            fail(f"{result.blobs - result.readable} blob(s) cannot be made readable", code=1)
    except DicomVaultError as exc:
        fail(f"error: {exc.message}", code=1)
    finally:
        archive.close()
