"""Storage Commitment Push Model data sets (PS3.4 J.3): the N-ACTION request and the N-EVENT-REPORT, built and
read in one place for both sides (the archive's SCP in ``dimse.commitment``, its SCU in ``adapters.remote``)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from pydicom.dataset import Dataset

from dicomvault.domain.routing import CommitmentResult

#: Storage Commitment Push Model SOP Class and its well-known SOP Instance.
PUSH_MODEL = "1.2.840.10008.1.20.1"
PUSH_MODEL_INSTANCE = "1.2.840.10008.1.20.1.1"
#: N-ACTION Action Type ID "Request Storage Commitment"; N-EVENT-REPORT Event Type IDs.
REQUEST_COMMITMENT = 1
ALL_SUCCEEDED = 1
SOME_FAILED = 2
#: Failure Reasons (PS3.4 J.3.3.1.1 / C.14): processing failure, no such object instance, class/instance conflict.
PROCESSING_FAILURE = 0x0110
NO_SUCH_OBJECT = 0x0112
CLASS_INSTANCE_CONFLICT = 0x0119


def _reference(sop_class: str, sop_uid: str, reason: int | None = None) -> Dataset:
    item = Dataset()
    item.ReferencedSOPClassUID = sop_class
    item.ReferencedSOPInstanceUID = sop_uid
    if reason is not None:
        item.FailureReason = reason
    return item


def request(transaction_uid: str, references: Iterable[tuple[str, str]]) -> Dataset:
    """The N-ACTION Action Information: Transaction UID and the Referenced SOP Sequence."""
    ds = Dataset()
    ds.TransactionUID = transaction_uid
    ds.ReferencedSOPSequence = [_reference(c, i) for c, i in references]
    return ds


def read_request(ds: Dataset | None) -> tuple[str, list[tuple[str, str]]] | None:
    """(Transaction UID, [(SOP Class, SOP Instance)]) of an N-ACTION, or None when it lacks them."""
    if ds is None or not str(ds.get("TransactionUID", "") or "").strip():
        return None
    refs = [(str(i.get("ReferencedSOPClassUID", "") or ""), str(i.get("ReferencedSOPInstanceUID", "") or ""))
            for i in ds.get("ReferencedSOPSequence", []) or []]
    return str(ds.TransactionUID), refs


def report(transaction_uid: str, committed: Iterable[tuple[str, str]],
           failed: Mapping[tuple[str, str], int]) -> tuple[int, Dataset]:
    """(Event Type ID, Event Information) of the N-EVENT-REPORT answering a commitment request."""
    ds = Dataset()
    ds.TransactionUID = transaction_uid
    done = [_reference(c, i) for c, i in committed]
    if done:
        ds.ReferencedSOPSequence = done
    if failed:
        ds.FailedSOPSequence = [_reference(c, i, reason) for (c, i), reason in failed.items()]
    return (SOME_FAILED if failed else ALL_SUCCEEDED), ds


def read_report(ds: Dataset | None) -> CommitmentResult | None:
    """What an N-EVENT-REPORT says was committed and what failed, or None without a Transaction UID."""
    if ds is None or "TransactionUID" not in ds:
        return None
    committed = tuple(str(i.ReferencedSOPInstanceUID) for i in ds.get("ReferencedSOPSequence", []) or []
                      if "ReferencedSOPInstanceUID" in i)
    failed = {str(i.ReferencedSOPInstanceUID): int(i.get("FailureReason", PROCESSING_FAILURE) or PROCESSING_FAILURE)
              for i in ds.get("FailedSOPSequence", []) or [] if "ReferencedSOPInstanceUID" in i}
    return CommitmentResult(str(ds.TransactionUID), committed, failed)
