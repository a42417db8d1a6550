"""Job kind → handler. A handler takes the claimed ``Job`` and returns a small JSON-able result (or None).

Every handler is idempotent — running it twice has the effect of running it once — because the queue delivers
at least once (a worker that dies mid-job is replaced after its lease expires). A handler raises
``PermanentJobError`` for a job that can never succeed (bad payload), any other exception to be retried.

Kinds:

* ``fixity`` — re-read stored objects and compare their SHA-256 with the index. Payload: ``{"sop_uid": …}``,
  ``{"sop_uids": […]}`` or ``{"study_uid": …[, "series_uid": …]}``. A mismatch or a missing blob fails the
  job permanently (``IntegrityFailure``) naming the instances, so it shows in ``dicomvault jobs list --state
  failed``; repair is ``dicomvault verify --repair``'s business.
* ``tier-study`` — payload ``{"study_uid": …[, "promote": true]}``: bring one study's blobs to the placement its
  lifecycle rules ask for now (``services.tiering``): copies with read-back proof first, then drops, never the
  last copy; compress rules first (``services.compression``). Queued by the lifecycle schedule, by promotion and
  (``compress_on_ingest``) shortly after a study's first store, deduplicated per study.
* ``fixity-scan`` — no payload: every copy on every store re-read (throttled, ``fixity_max_bytes_per_second``),
  damaged copies rewritten from intact ones, untracked copies recorded, orphans older than a day removed; data
  loss logged at ERROR; the report goes to ``data_dir/fixity/last-report.json``. Queued every
  ``fixity_interval_days`` by the worker's schedule, one at a time across the cluster.
* ``delete-blob`` — payload ``{"key": …}``: delete a blob the index does not reference, through the blob
  removal claim protocol (``services.lifecycle.BlobRemover``). A blob that became referenced again is kept.
* ``recall`` — payload ``{"study_uid": …}``: follow the restores of a study on an archive storage class
  (``services.recall``): request what is still archived (again, if a restore expired), and while restores are in
  progress raise ``RecallPending`` so that the worker retries later; done once every blob is readable. Registered
  when the archive has a ``RecallService``.
* ``route-deliver`` — payload ``{"destination": AET, "study_uid": …}``: send the study's queued routing deliveries
  to the destination (``services.routing``: claimed rows, so a job run twice never sends an instance twice; a
  failure puts them back and the job is retried with backoff; the last attempt marks them failed). Registered when
  the archive has a ``RoutingService``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

from dicomvault.domain.errors import IntegrityFailure, NotFound
from dicomvault.domain.records import InstanceRecord
from dicomvault.ports.blobs import BlobStore
from dicomvault.ports.index import IndexRepository
from dicomvault.ports.jobs import Job
from dicomvault.services.blob_copier import Throttle
from dicomvault.services.fixity import FixityService, RepairResult
from dicomvault.services.fixity_report import report_document, summary, write_report
from dicomvault.services.lifecycle import BlobRemover
from dicomvault.services.recall import RECALL_JOB, RecallService
from dicomvault.services.retrieve import RetrieveService
from dicomvault.services.routing import ROUTE_DELIVER, RoutingService
from dicomvault.services.tiering import TIER_STUDY, TierService
from dicomvault.settings import Settings

log = logging.getLogger(__name__)

Handler = Callable[[Job], "dict[str, Any] | None"]

#: Instances listed by name in a failure message (the full count is always given).
_NAMED = 20


class PermanentJobError(Exception):
    """The job cannot succeed however often it is retried (e.g. a malformed payload)."""


class HandlerServices(Protocol):
    index: IndexRepository
    blobs: BlobStore
    retrieve: RetrieveService
    remover: BlobRemover
    tiering: TierService | None
    fixity: FixityService
    settings: Settings


def _str_field(payload: dict[str, Any], name: str) -> str | None:
    value = payload.get(name)
    if value is None:
        return None
    if not isinstance(value, str) or not value:
        raise PermanentJobError(f"payload field {name!r} must be a non-empty string")
    return value


def fixity_handler(retrieve: RetrieveService) -> Handler:
    def run(job: Job) -> dict[str, Any]:
        p = job.payload
        sop_uids = p.get("sop_uids")
        if sop_uids is not None and not (isinstance(sop_uids, list) and all(isinstance(u, str) for u in sop_uids)):
            raise PermanentJobError("payload field 'sop_uids' must be a list of strings")
        single = _str_field(p, "sop_uid")
        if single is not None:
            sop_uids = [*(sop_uids or []), single]
        study_uid, series_uid = _str_field(p, "study_uid"), _str_field(p, "series_uid")
        if not sop_uids and study_uid is None:
            raise PermanentJobError("fixity needs 'sop_uid', 'sop_uids' or 'study_uid' in its payload")
        records = retrieve.locate(study_uid=study_uid, series_uid=series_uid, sop_uids=sop_uids)
        missing_index = sorted(set(sop_uids or ()) - {r.sop_uid for r in records})
        corrupt: list[str] = []
        missing_blob: list[str] = []
        for record in records:
            outcome = _verify(retrieve, record)
            if outcome == "corrupt":
                corrupt.append(record.sop_uid)
            elif outcome == "missing":
                missing_blob.append(record.sop_uid)
        result = {"checked": len(records), "corrupt": corrupt, "missing_blob": missing_blob,
                  "not_indexed": missing_index}
        if corrupt or missing_blob:
            bad = corrupt + missing_blob
            raise IntegrityFailure(
                f"{len(corrupt)} corrupt and {len(missing_blob)} missing of {len(records)} checked: "
                + ", ".join(bad[:_NAMED]) + (" …" if len(bad) > _NAMED else "")
            )
        return result

    return run


def _verify(retrieve: RetrieveService, record: InstanceRecord) -> str:
    try:
        for _ in retrieve.iter_bytes(record, verify=True):
            pass
    except IntegrityFailure:
        # The blob key (a SHA-256 of the content) identifies the damage without patient data; the UID only at DEBUG.
        log.error("fixity: blob %s does not match its recorded SHA-256", record.blob.key)
        log.debug("fixity: corrupt blob %s holds instance %s", record.blob.key, record.sop_uid)
        return "corrupt"
    except NotFound:
        log.error("fixity: blob %s is missing", record.blob.key)
        log.debug("fixity: missing blob %s held instance %s", record.blob.key, record.sop_uid)
        return "missing"
    return "ok"


def delete_blob_handler(remover: BlobRemover, blobs: BlobStore) -> Handler:
    def run(job: Job) -> dict[str, Any]:
        key = _str_field(job.payload, "key")
        if key is None:
            raise PermanentJobError("delete-blob needs 'key' in its payload")
        existed = blobs.exists(key)
        report = remover.remove([key], unreferenced_found=True)
        if report.referenced:
            return {"deleted": False, "reason": "referenced"}
        if report.left:
            raise RuntimeError("the blob's removal is claimed elsewhere or failed; retried later")
        return {"deleted": existed}

    return run


def tier_study_handler(tiering: TierService) -> Handler:
    def run(job: Job) -> dict[str, Any]:
        study_uid = _str_field(job.payload, "study_uid")
        if study_uid is None:
            raise PermanentJobError("tier-study needs 'study_uid' in its payload")
        return tiering.apply_study(study_uid, promote=bool(job.payload.get("promote"))).as_dict()

    return run


def fixity_scan_handler(fixity: FixityService, report_path: Path, throttle: Throttle) -> Handler:
    """The scheduled fixity scan: every copy on every store, repaired where an intact copy exists, data loss
    logged at ERROR; the report is written to ``report_path`` (JSON and a summary beside it)."""

    def run(job: Job) -> dict[str, Any]:
        started = datetime.now(UTC)
        report = fixity.check(grace=SCAN_GRACE, throttle=throttle)
        result = RepairResult()
        fixity.repair_copies(report, result)
        result.orphans_removed = fixity.remove_orphans(report)
        result.temporary_removed = fixity.sweep_temporary(SCAN_GRACE)
        document = report_document(report, result, started=started)
        write_report(report_path, document)
        log.info("fixity scan: %s", summary(document).replace("\n", "; "))
        return {k: document[k] for k in ("checked", "bytes_read", "clean")} | {
            "data_loss": len(document["data_loss"]), "repaired": result.copies_repaired}

    return run


def recall_handler(recall: RecallService) -> Handler:
    def run(job: Job) -> dict[str, Any]:
        study_uid = _str_field(job.payload, "study_uid")
        if study_uid is None:
            raise PermanentJobError("recall needs 'study_uid' in its payload")
        return recall.follow_up(study_uid)

    return run


def route_deliver_handler(routing: RoutingService) -> Handler:
    def run(job: Job) -> dict[str, Any]:
        destination, study_uid = _str_field(job.payload, "destination"), _str_field(job.payload, "study_uid")
        if destination is None or study_uid is None:
            raise PermanentJobError("route-deliver needs 'destination' and 'study_uid' in its payload")
        return routing.deliver(destination, study_uid, job_id=job.id, attempt=job.attempts,
                               max_attempts=job.max_attempts)

    return run


#: Orphans and staged files younger than this are left to the next scan (ingests in progress look alike).
SCAN_GRACE = 86400.0

#: The job kind of the scheduled fixity scan (deduplicated: one scan at a time across the cluster).
FIXITY_SCAN = "fixity-scan"

#: Long job kinds — moving bytes between stores, scanning every copy — run by their own worker threads
#: (``tier_max_concurrent_jobs``), so that they never delay a fixity check of one study or a removal.
TIER_KINDS = (TIER_STUDY, FIXITY_SCAN)


def default_handlers(services: HandlerServices) -> dict[str, Handler]:
    """The handlers every node registers; later features (forwarding) add their kinds here."""
    handlers = {
        "fixity": fixity_handler(services.retrieve),
        "delete-blob": delete_blob_handler(services.remover, services.blobs),
    }
    if services.tiering is not None:
        handlers[TIER_STUDY] = tier_study_handler(services.tiering)
    handlers[FIXITY_SCAN] = fixity_scan_handler(
        services.fixity, services.settings.data_dir / "fixity" / "last-report.json",
        Throttle(services.settings.fixity_max_bytes_per_second))
    # Optional on the host (``Archive.recall``), so hosts built without one keep satisfying ``HandlerServices``.
    recall: RecallService | None = getattr(services, "recall", None)
    if recall is not None:
        handlers[RECALL_JOB] = recall_handler(recall)
    routing: RoutingService | None = getattr(services, "routing", None)
    if routing is not None:
        handlers[ROUTE_DELIVER] = route_deliver_handler(routing)
    return handlers
