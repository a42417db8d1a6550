"""The fixity report as a document: JSON for scripts and auditors (``dicomvault verify --report FILE``, the
scheduled ``fixity-scan`` job) and a short readable summary. Blob keys (content hashes) and store names only, plus
the SOP Instance UIDs of damaged objects — an auditor needs them to act, and the file is the operator's, not a log.
"""

from __future__ import annotations

import json
import os
import tempfile
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from dicomvault.services.fixity import Damaged, FixityReport, RepairResult


def _damage(d: Damaged) -> dict[str, Any]:
    return {"sop_uid": d.sop_uid, "key": d.blob.key, "store": d.store, "problem": d.problem, "detail": d.detail}


def report_document(report: FixityReport, result: RepairResult | None, *, started: datetime | None = None,
                    finished: datetime | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {
        "started": started.isoformat(timespec="seconds") if started else None,
        "finished": (finished or datetime.now(UTC)).isoformat(timespec="seconds"),
        "checked": report.checked,
        "checked_by_store": report.checked_by_store,
        "bytes_read": report.bytes_read,
        "verify_seconds": round(report.verify_seconds, 3),
        "listing_seconds": round(report.listing_seconds, 3),
        "missing": [_damage(d) for d in report.missing],
        "corrupt": [_damage(d) for d in report.corrupt],
        "data_loss": [_damage(d) for d in report.data_loss],
        "untracked_copies": [{"key": u.key, "store": u.store} for u in report.untracked],
        "orphans": report.orphans,
        "orphans_by_store": report.orphans_by_store,
        "recent_unreferenced": report.recent_unreferenced,
        "temporary": report.temporary,
        "clean": report.clean,
    }
    if result is not None:
        out["repair"] = {
            "copies_repaired": result.copies_repaired,
            "copies_adopted": result.copies_adopted,
            "orphans_removed": result.orphans_removed,
            "temporary_removed": result.temporary_removed,
            "rows_dropped": result.rows_dropped,
            "not_repaired": [{**_damage(d), "reason": why} for d, why in result.not_repaired],
            "not_dropped": [{"sop_uid": d.sop_uid, "reason": why} for d, why in result.not_dropped],
        }
    return out


def summary(document: dict[str, Any]) -> str:
    """A few lines a person reads first."""
    lines = [f"fixity check finished {document['finished']}: {document['checked']} copies checked "
             f"({', '.join(f'{k}: {v}' for k, v in document['checked_by_store'].items()) or 'no store'}), "
             f"{document['bytes_read']} bytes read"]
    lines.append(f"missing: {len(document['missing'])}, corrupt: {len(document['corrupt'])}, "
                 f"DATA LOSS (no intact copy anywhere): {len(document['data_loss'])}")
    lines.append(f"orphans: {len(document['orphans'])}, untracked copies: {len(document['untracked_copies'])}, "
                 f"temporary files: {len(document['temporary'] or [])}")
    repair = document.get("repair")
    if repair is not None:
        lines.append(f"repaired: {repair['copies_repaired']} copies rewritten, {repair['copies_adopted']} adopted, "
                     f"{repair['orphans_removed']} orphans and {repair['temporary_removed']} temporary files "
                     f"removed, {repair['rows_dropped']} index rows dropped; {len(repair['not_repaired'])} not "
                     "repaired")
    lines.append("clean" if document["clean"] else "NOT clean")
    return "\n".join(lines)


def write_report(path: Path, document: dict[str, Any]) -> None:
    """Write the JSON document and, beside it, the summary (``<path>.txt``), each replaced atomically."""
    path.parent.mkdir(parents=True, exist_ok=True)
    for target, text in ((path, json.dumps(document, indent=2)), (path.with_suffix(path.suffix + ".txt"),
                                                                   summary(document) + "\n")):
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".report-")
        with os.fdopen(fd, "w") as f:
            f.write(text)
        os.replace(tmp, target)
