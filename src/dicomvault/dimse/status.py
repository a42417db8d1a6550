"""DIMSE status codes DicomVault returns, by name, and the one mapping from domain errors to statuses.

References: PS3.4 B.2.3 (Storage), C.4.1.1.4 / C.4.2.1.5 / C.4.3.1.4 (Query/Retrieve), PS3.7 Annex C. Services
raise domain errors (``domain.errors``); only this module knows which status each one becomes, so C-STORE,
C-FIND, C-GET and C-MOVE answer the same failure the same way.
"""

from __future__ import annotations

from pydicom.dataset import Dataset

from dicomvault.domain import errors as e

SUCCESS = 0x0000
PENDING = 0xFF00
CANCEL = 0xFE00
#: Any DIMSE request the association may not make (general status, PS3.7 Annex C): ``dimse/access.py``.
NOT_AUTHORIZED = 0x0124

# C-STORE (PS3.4 B.2.3)
STORE_OUT_OF_RESOURCES = 0xA700
#: Refused: Out of Resources, permanent for this object: it exceeds a configured limit (``max_inflated_bytes``,
#: ``max_inflate_ratio``); the ErrorComment names the limit. Distinct from 0xA700 (a backend is down: retry).
STORE_REFUSED_TOO_LARGE = 0xA701
STORE_DATASET_DOES_NOT_MATCH_SOP_CLASS = 0xA900
STORE_CANNOT_UNDERSTAND = 0xC000
#: Anything unexpected: still in the "cannot understand" failure range, with a generic comment (details only in
#: the server log, never patient data in the response).
STORE_UNEXPECTED_FAILURE = 0xC001
#: Refused: a different data set is already stored under this SOP Instance UID (duplicate policy ``reject``), or
#: the stored copy cannot be read to compare. A failure in the "Cannot understand" range (PS3.4 B.2.3: Cxxx is
#: the SCP's own failure range; A900 would claim the data set does not match its SOP class, which is not the
#: problem), echoing the general status 0111H "Duplicate SOP Instance" (PS3.7 C.5), which is not a C-STORE
#: status. Never a warning: a modality treats warnings (0xB006 "Elements Discarded", answered here before issue
#: #10) as "stored" and may delete its only copy. The same data set in another encoding is not refused at all
#: (``services.content_identity``).
STORE_REFUSED_DUPLICATE = 0xC111
#: Stored, but the data set does not match its SOP class: native pixel data shorter than its header describes,
#: kept under ``pixel_length_policy = accept-and-flag`` (the ErrorComment says how short).
STORE_WARNING_DATASET_MISMATCH = 0xB007

# C-FIND / C-GET / C-MOVE (PS3.4 C.4)
QR_OUT_OF_RESOURCES = 0xA700
QR_IDENTIFIER_DOES_NOT_MATCH_SOP_CLASS = 0xA900
QR_UNABLE_TO_PROCESS = 0xC000
MOVE_DESTINATION_UNKNOWN = 0xA801
RETRIEVE_OUT_OF_RESOURCES_MATCHES = 0xA701
RETRIEVE_SUBOPS_OUT_OF_RESOURCES = 0xA702
RETRIEVE_SUBOPS_SOME_FAILED = 0xB000

#: ErrorComment is LO: at most 64 characters.
MAX_COMMENT = 64

#: Domain error → C-STORE status, most specific class first (the ``InvalidDicom`` subclasses before it). STOW-RS
#: answers the same errors with the same codes as FailureReason (``dicomweb/stow_status.py``), so an object gets
#: the same verdict whichever way it arrives: not DICOM, empty, truncated or unreadable (``NotDicom``,
#: ``MalformedDicom``) 0xC000; a required UID missing or invalid (``InvalidIdentity``) or short native pixel data
#: (``DamagedPixelData``) 0xA900.
STORE_STATUS: tuple[tuple[type[e.DicomVaultError], int], ...] = (
    (e.TooLarge, STORE_REFUSED_TOO_LARGE),
    (e.Conflict, STORE_REFUSED_DUPLICATE),
    (e.MalformedDicom, STORE_CANNOT_UNDERSTAND),
    (e.InvalidIdentity, STORE_DATASET_DOES_NOT_MATCH_SOP_CLASS),
    (e.DamagedPixelData, STORE_DATASET_DOES_NOT_MATCH_SOP_CLASS),
    (e.InvalidDicom, STORE_DATASET_DOES_NOT_MATCH_SOP_CLASS),
    (e.Unsupported, STORE_CANNOT_UNDERSTAND),
    (e.Unavailable, STORE_OUT_OF_RESOURCES),
)

#: Domain error → C-FIND/C-GET/C-MOVE failure status, most specific class first.
#: A query beyond the configured bounds (pattern length, wildcards, values, keys) is valid against the information
#: model, so not 0xA900 "Identifier does not match SOP Class": this SCP is unable to process it (0xC000, PS3.4
#: C.4.1.1.4 / C.4.2.1.5 / C.4.3.1.4). A retrieve addressing more instances than allowed is refused with 0xA701
#: "Out of Resources - Unable to calculate number of matches": the selection stops at the bound without counting
#: the rest.
QR_STATUS: tuple[tuple[type[e.DicomVaultError], int], ...] = (
    (e.QueryTooComplex, QR_UNABLE_TO_PROCESS),
    (e.InvalidQuery, QR_IDENTIFIER_DOES_NOT_MATCH_SOP_CLASS),
    (e.ResultLimitExceeded, RETRIEVE_OUT_OF_RESOURCES_MATCHES),
    (e.Unavailable, QR_OUT_OF_RESOURCES),
)

#: C-FIND has no 0xA701: a query that reaches the maximum number of matches (or of records examined) ends, after
#: the responses already sent, with 0xA700 "Refused: Out of Resources" and an Error Comment saying so, rather than
#: a success that would pass a truncated list off as complete (Orthanc's silent truncation); dcm4chee-arc counts
#: first and refuses a C-FIND beyond its "Query Max Number of Results", which costs a COUNT over every match.
FIND_STATUS: tuple[tuple[type[e.DicomVaultError], int], ...] = (
    (e.ResultLimitExceeded, QR_OUT_OF_RESOURCES),
    *QR_STATUS,
)

#: Sub-operation failures that end a C-GET / C-MOVE with an Error Comment instead of only being counted: the
#: requestor must learn what to do, not merely that some sub-operations failed. Such objects are kept for the end
#: (``dimse/retrieval.py``): every readable object is sent first, then the retrieve ends with 0xB000 "Sub-operations
#: complete - one or more failures" when something was delivered, 0xA702 "Unable to perform sub-operations" when
#: nothing was, the comment, and every failed SOP Instance UID in the Failed SOP Instance UID List (PS3.4 C.4.2.1.5,
#: C.4.3.1.4). An object on an archive storage class that is not restored (``NotRestored``) is the case: the study
#: must be recalled (``dicomvault recall``), or its restore is under way.
SUBOP_COMMENTS: tuple[tuple[type[e.DicomVaultError], str, str], ...] = (
    # (error, comment, comment while a restore is in progress)
    (e.NotRestored, "On archive storage, not restored: recall the study",
     "Being restored from archive storage: retry later"),
)


def subop_comment(exc: BaseException | None) -> str | None:
    """The Error Comment that ends a retrieve for a sub-operation that failed with ``exc``; None when the failure
    is only counted (its comment is the job of the final status pynetdicom builds)."""
    for kind, text, in_progress in SUBOP_COMMENTS:
        if isinstance(exc, kind):
            return in_progress if getattr(exc, "restoring", False) else text
    return None


def retrieve_final_status(delivered: int) -> int:
    """The final C-GET / C-MOVE status of a retrieve ended by a ``subop_comment`` failure."""
    return RETRIEVE_SUBOPS_SOME_FAILED if delivered else RETRIEVE_SUBOPS_OUT_OF_RESOURCES


def _lookup(table: tuple[tuple[type[e.DicomVaultError], int], ...], exc: BaseException, default: int) -> int:
    for kind, code in table:
        if isinstance(exc, kind):
            return code
    return default


def store_status(exc: BaseException) -> int:
    """The C-STORE status for a failure raised while storing."""
    return _lookup(STORE_STATUS, exc, STORE_UNEXPECTED_FAILURE)


def qr_status(exc: BaseException) -> int:
    """The C-FIND/C-GET/C-MOVE failure status for an error raised while matching."""
    return _lookup(QR_STATUS, exc, QR_UNABLE_TO_PROCESS)


def find_status(exc: BaseException) -> int:
    """The C-FIND failure status for an error raised while matching or streaming the matches."""
    return _lookup(FIND_STATUS, exc, QR_UNABLE_TO_PROCESS)


def store_comment(exc: e.DicomVaultError) -> str:
    """The Error Comment of a refused C-STORE: the domain error's text, which names no attribute values (a
    ``Conflict``: "a different object with this SOP Instance UID is already stored")."""
    return exc.message


def comment(text: str) -> str:
    """Fit a message into ErrorComment (LO: 64 ASCII characters, no backslash, no control characters)."""
    text = "".join(" " if ch < " " else ch for ch in text.replace("\\", "/"))
    text = text.encode("ascii", "replace").decode("ascii")  # the response has no Specific Character Set
    return text if len(text) <= MAX_COMMENT else text[: MAX_COMMENT - 3] + "..."


def status_dataset(code: int, message: str | None = None) -> Dataset:
    """A status Dataset pynetdicom sends as is: Status plus, for anything but success, an ErrorComment."""
    ds = Dataset()
    ds.Status = code
    if message:
        ds.ErrorComment = comment(message)
    return ds
