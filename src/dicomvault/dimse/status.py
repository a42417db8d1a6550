"""DIMSE status codes DicomVault returns, by name, and the one mapping from domain errors to statuses.

References: PS3.4 B.2.3 (Storage), C.4.1.1.4 / C.4.2.1.5 / C.4.3.1.4 (Query/Retrieve), PS3.7 Annex C.
"""

from __future__ import annotations

from dicomvault.domain import errors as e

SUCCESS = 0x0000
PENDING = 0xFF00
CANCEL = 0xFE00

# C-STORE (PS3.4 B.2.3)
STORE_OUT_OF_RESOURCES = 0xA700
STORE_DATASET_DOES_NOT_MATCH_SOP_CLASS = 0xA900
STORE_CANNOT_UNDERSTAND = 0xC000
#: The default duplicate policy keeps the stored object and discards the new one: a warning, not a failure,
#: so that a modality does not retry forever something the archive will never take.
STORE_WARNING_ELEMENTS_DISCARDED = 0xB006
PROCESSING_FAILURE = 0x0110

# C-FIND / C-GET / C-MOVE (PS3.4 C.4)
QR_OUT_OF_RESOURCES = 0xA700
QR_IDENTIFIER_DOES_NOT_MATCH_SOP_CLASS = 0xA900
QR_UNABLE_TO_PROCESS = 0xC000
MOVE_DESTINATION_UNKNOWN = 0xA801
RETRIEVE_SUBOPS_OUT_OF_RESOURCES = 0xA702

#: ErrorComment is LO: at most 64 characters.
MAX_COMMENT = 64


def store_status(exc: BaseException) -> int:
    """The C-STORE status for a failure raised by ingest."""
    if isinstance(exc, e.Conflict):
        return STORE_WARNING_ELEMENTS_DISCARDED
    if isinstance(exc, e.MalformedDicom):
        return STORE_CANNOT_UNDERSTAND
    if isinstance(exc, e.InvalidDicom):
        return STORE_DATASET_DOES_NOT_MATCH_SOP_CLASS
    if isinstance(exc, e.Unavailable):
        return STORE_OUT_OF_RESOURCES
    return PROCESSING_FAILURE


def comment(text: str) -> str:
    """Fit a message into ErrorComment (LO, 64 characters, no backslash)."""
    text = text.replace("\\", "/").replace("\n", " ")
    return text if len(text) <= MAX_COMMENT else text[: MAX_COMMENT - 1] + "…"
