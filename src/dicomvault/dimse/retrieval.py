"""Which instances a C-GET/C-MOVE sends and in which transfer syntax.

The stored bytes are sent unchanged whenever the peer accepted the stored transfer syntax (pydicom writes
unconverted raw elements back byte for byte); otherwise the object is transcoded to an uncompressed syntax the
peer accepted, and if there is none the sub-operation fails with a reason in the log.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import pydicom
from pydicom.dataset import Dataset
from pydicom.uid import UID, ExplicitVRLittleEndian, ImplicitVRLittleEndian
from pynetdicom.presentation import PresentationContext, build_context

from dicomvault.domain.errors import DicomVaultError
from dicomvault.domain.records import InstanceRecord
from dicomvault.domain.tags import Level
from dicomvault.services import transcode
from dicomvault.services.archive import Archive

log = logging.getLogger(__name__)

UNCOMPRESSED = (ExplicitVRLittleEndian, ImplicitVRLittleEndian)
MAX_CONTEXTS = 128


@dataclass
class RetrievePlan:
    archive: Archive
    records: list[InstanceRecord]

    @classmethod
    def locate(cls, archive: Archive, level: Level, keys: dict[str, str]) -> RetrievePlan:
        """Instances under the identifier's unique keys (UID lists allowed) or, for other keys, the instances
        the shared query engine finds at IMAGE level."""
        unique = {Level.PATIENT: "PatientID", Level.STUDY: "StudyInstanceUID",
                  Level.SERIES: "SeriesInstanceUID", Level.IMAGE: "SOPInstanceUID"}[level]
        values = [v for v in keys.get(unique, "").split("\\") if v.strip()]
        others = {k: v for k, v in keys.items() if v.strip() not in ("", "*") and k != unique}
        records: list[InstanceRecord] = []
        if values and not others and level != Level.IMAGE:
            for value in values:
                if level == Level.PATIENT:
                    records += archive.retrieve.locate(patient_id=value)
                elif level == Level.STUDY:
                    records += archive.retrieve.locate(study_uid=value)
                else:
                    records += archive.retrieve.locate(series_uid=value)
        else:
            spec = archive.query.build_spec(Level.IMAGE, {k: v for k, v in keys.items() if v.strip()})
            uids = [r["00080018"]["Value"][0] for r in archive.query.search(spec) if r["00080018"].get("Value")]
            for i in range(0, len(uids), 500):
                records += archive.retrieve.locate(sop_uids=uids[i : i + 500])
        return cls(archive, records)

    def proposed_contexts(self) -> list[PresentationContext]:
        """For a C-MOVE sub-association: each SOP class with each stored syntax in a context of its own (so the
        stored bytes can go unchanged), plus one with the uncompressed syntaxes as a fallback for a peer that
        refuses a compressed one."""
        pairs: dict[str, set[str]] = {}
        for r in self.records:
            pairs.setdefault(r.sop_class_uid, set()).add(r.transfer_syntax_uid)
        contexts: list[PresentationContext] = []
        for sop_class, syntaxes in pairs.items():
            for ts in sorted(syntaxes):  # the stored syntax on its own: the peer cannot pick another one
                contexts.append(build_context(sop_class, [ts]))
            contexts.append(build_context(sop_class, list(UNCOMPRESSED)))
        if len(contexts) > MAX_CONTEXTS:
            contexts = [build_context(sc, [*sorted(ts), *UNCOMPRESSED]) for sc, ts in pairs.items()][:MAX_CONTEXTS]
        return contexts

    @staticmethod
    def accepted_from(assoc: Any) -> dict[str, set[str]]:
        """SOP class → transfer syntaxes the peer accepted on ``assoc`` (for storage sub-operations)."""
        out: dict[str, set[str]] = {}
        if assoc is None:
            return out
        for cx in assoc.accepted_contexts:
            if cx.transfer_syntax:
                out.setdefault(str(cx.abstract_syntax), set()).add(str(cx.transfer_syntax[0]))
        return out

    def dataset_for(self, record: InstanceRecord, accepted: dict[str, set[str]]) -> Dataset | None:
        """The object to send: as stored when possible, else transcoded; None (a failed sub-operation) when the
        blob cannot be read."""
        try:
            with self.archive.retrieve.open(record) as f:
                ds = pydicom.dcmread(f)
        except (DicomVaultError, OSError, Exception):
            log.exception("cannot read a stored instance for C-GET/C-MOVE")
            return None
        syntaxes = accepted.get(record.sop_class_uid, set())
        stored = UID(record.transfer_syntax_uid)
        if not syntaxes or stored in syntaxes:
            return ds
        if not stored.is_compressed and syntaxes & {str(u) for u in UNCOMPRESSED}:
            return ds  # pynetdicom converts between the uncompressed little-endian syntaxes
        for target in UNCOMPRESSED:
            if str(target) in syntaxes:
                try:
                    return transcode.to_syntax(ds, target)
                except DicomVaultError:
                    log.warning("cannot transcode an instance for a retrieve peer", exc_info=True)
                    return ds
        return ds
