"""Storage commitment as SCP (issue #12 item 4, PS3.4 J): which of the instances a modality asks about the archive
commits to keep.

Why verify and not only look up: a modality deletes its copy once the archive commits, so "committed" must mean
"durably stored, and the bytes are intact now". An instance qualifies when the index holds it (ingest acknowledges
nothing before the object is durable and indexed; an instance in the trash or never received is not found) under
the SOP class the request names, and its blob reads back with the SHA-256 the index recorded. Failure reasons:
0x0112 no such object instance, 0x0119 class/instance conflict, 0x0110 processing failure (unreadable or damaged
bytes: the modality should keep its copy).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from dicomvault.dicom.commitment import CLASS_INSTANCE_CONFLICT, NO_SUCH_OBJECT, PROCESSING_FAILURE
from dicomvault.domain.errors import DicomVaultError
from dicomvault.domain.records import InstanceRecord
from dicomvault.services.retrieve import RetrieveService

log = logging.getLogger(__name__)

#: SOP Instance UIDs looked up in one index query.
LOOKUP_CHUNK = 500

Reference = tuple[str, str]  # (SOP Class UID, SOP Instance UID)


class CommitmentService:
    def __init__(self, retrieve: RetrieveService) -> None:
        self.retrieve = retrieve

    def check(self, references: Sequence[Reference]) -> tuple[list[Reference], dict[Reference, int]]:
        """(committed, failed with their Failure Reason) for the references of one request, in request order."""
        uids = list(dict.fromkeys(uid for _, uid in references if uid))
        records: dict[str, InstanceRecord] = {}
        for start in range(0, len(uids), LOOKUP_CHUNK):
            for found in self.retrieve.locate(sop_uids=uids[start:start + LOOKUP_CHUNK]):
                records[found.sop_uid] = found
        verified: dict[str, bool] = {}
        committed: list[Reference] = []
        failed: dict[Reference, int] = {}
        for ref in references:
            sop_class, uid = ref
            record = records.get(uid)
            if record is None:
                failed[ref] = NO_SUCH_OBJECT
            elif sop_class and sop_class != record.sop_class_uid:
                failed[ref] = CLASS_INSTANCE_CONFLICT
            else:
                if uid not in verified:
                    verified[uid] = self._intact(record)
                if verified[uid]:
                    committed.append(ref)
                else:
                    failed[ref] = PROCESSING_FAILURE
        return committed, failed

    def _intact(self, record: InstanceRecord) -> bool:
        try:
            for _ in self.retrieve.iter_bytes(record, verify=True):
                pass
        except (DicomVaultError, OSError) as exc:
            log.error("storage commitment: blob %s cannot be verified (%s): not committed", record.blob.key,
                      type(exc).__name__)
            return False
        return True
