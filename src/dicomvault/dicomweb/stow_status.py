"""STOW-RS Failure and Warning Reasons (PS3.18 Table I.2-2, values in the ranges PS3.4 B.2.3 gives C-STORE), and
the one mapping from domain errors to Failure Reasons.

The counterpart of ``dimse/status.py``'s ``STORE_STATUS``, row for row: an object refused by ingest gets the same
code as FailureReason that a C-STORE of it gets as status (a truncated object 0xC000 both ways, a missing Series
Instance UID 0xA900), chosen from the error's type, never its message. The two differ where the transports do: a
duplicate is 0x0111 here (the DIMSE-N "Duplicate SOP Instance" status, a Failure Reason value PS3.18 lists) and
0xC111 over DIMSE, where 0x0111 is no C-STORE status; anything unexpected is 0x0110 "Processing failure" here and
0xC001 over DIMSE.
"""

from __future__ import annotations

from dicomvault.domain import errors as e

OUT_OF_RESOURCES = 0xA700
REFUSED_TOO_LARGE = 0xA701
INVALID_DATASET = 0xA900
STUDY_MISMATCH = 0xA901
CANNOT_UNDERSTAND = 0xC000
DUPLICATE_REJECTED = 0x0111
PROCESSING_FAILURE = 0x0110
WARNING_COERCION = 0xB000
WARNING_DATASET_MISMATCH = 0xB007

#: Domain error → FailureReason, most specific class first (the ``InvalidDicom`` subclasses before it).
FAILURE_REASON: tuple[tuple[type[e.DicomVaultError], int], ...] = (
    (e.TooLarge, REFUSED_TOO_LARGE),
    (e.Conflict, DUPLICATE_REJECTED),
    (e.MalformedDicom, CANNOT_UNDERSTAND),
    (e.WrongStudy, STUDY_MISMATCH),
    (e.InvalidIdentity, INVALID_DATASET),
    (e.DamagedPixelData, INVALID_DATASET),
    (e.InvalidDicom, INVALID_DATASET),
    (e.Unsupported, CANNOT_UNDERSTAND),
    (e.Unavailable, OUT_OF_RESOURCES),
)
#: Failure reasons that mean "try again later": a request whose every part failed so is answered 503.
RETRY_LATER = frozenset({OUT_OF_RESOURCES})


def failure_reason(exc: BaseException) -> int:
    """The FailureReason of a part whose ingest raised ``exc``."""
    for kind, code in FAILURE_REASON:
        if isinstance(exc, kind):
            return code
    return PROCESSING_FAILURE
