"""Domain errors, free of transport codes.

Each front end maps these once (``dimse/status.py`` to DIMSE statuses, ``dicomweb/errors.py`` to HTTP), so a
service never needs to know who called it.
"""

from __future__ import annotations


class DicomVaultError(Exception):
    """Base of every error the core raises on purpose.

    ``message`` is the full text a front end shows (Error Comment, FailureReason text, HTTP error); ``reason`` is
    a short, stable category of it (the message without the details that vary from object to object) that a
    report can group by, e.g. ``dicomvault import``'s summary. Neither holds patient data or UIDs."""

    def __init__(self, message: str, *, reason: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.reason = reason or message


class NotFound(DicomVaultError):
    """The study, series, instance, frame or blob does not exist."""


class InvalidDicom(DicomVaultError):
    """The object cannot be stored as it is: it is not DICOM, is truncated or malformed (``MalformedDicom``), lacks
    a required identifying attribute (``InvalidIdentity``), or its pixel data is short (``DamagedPixelData``).

    Front ends choose their status from the subclass (``dimse/status.py``, ``dicomweb/stow_status.py``), never from
    the message. ``sop_class_uid`` and ``sop_instance_uid`` are the object's UIDs when they could be read (empty
    otherwise), so that a front end can name the refused instance (STOW-RS FailedSOPSequence) without reading the
    object again; they are attributes, never part of the message or the reason, which go to logs above DEBUG."""

    def __init__(self, message: str, *, reason: str = "", sop_class_uid: str = "",
                 sop_instance_uid: str = "") -> None:
        super().__init__(message, reason=reason)
        self.sop_class_uid = sop_class_uid
        self.sop_instance_uid = sop_instance_uid

    def naming(self, sop_class_uid: str | None, sop_instance_uid: str | None) -> None:
        """Record the object's UIDs where the raiser did not know them (a check deep in header parsing: its
        caller holds the data set read so far)."""
        self.sop_class_uid = self.sop_class_uid or sop_class_uid or ""
        self.sop_instance_uid = self.sop_instance_uid or sop_instance_uid or ""


class MalformedDicom(InvalidDicom):
    """The bytes cannot be parsed as DICOM (truncated, garbage, a damaged element, a corrupt deflate stream):
    'cannot understand' (C-STORE 0xC000, STOW-RS FailureReason 0xC000) rather than 'does not match the SOP
    class'."""


class NotDicom(MalformedDicom):
    """The object is not a DICOM object at all (no DICM prefix and not a data set either), or is empty. A
    ``MalformedDicom`` for the senders (they cannot tell a file that is not DICOM from one too damaged to read:
    both are 'cannot understand'); ``dicomvault import`` skips such files instead of counting them as rejected
    objects (a folder of studies often holds reports, thumbnails, DICOMDIRs)."""


class InvalidIdentity(InvalidDicom):
    """A required identifying attribute (SOP Class, SOP Instance, Study or Series Instance UID) is missing or not a
    valid UID, or the C-STORE command names another instance or class than the data set: the object can be read
    but not indexed, 'data set does not match SOP class' (C-STORE 0xA900, STOW-RS FailureReason 0xA900).
    ``keyword`` names the attribute (empty for the command mismatch)."""

    def __init__(self, message: str, *, keyword: str = "", reason: str = "", sop_class_uid: str = "",
                 sop_instance_uid: str = "") -> None:
        super().__init__(message, reason=reason, sop_class_uid=sop_class_uid, sop_instance_uid=sop_instance_uid)
        self.keyword = keyword


class WrongStudy(InvalidIdentity):
    """The data set belongs to another study than the request names (STOW-RS to ``/studies/{uid}``, PS3.18
    10.5.3: FailureReason 0xA901 in the STOW-RS response). Found on ingest's own parse, before anything is
    written; ``study_uid`` is the data set's study (the response names it)."""

    def __init__(self, message: str, *, study_uid: str = "", sop_class_uid: str = "",
                 sop_instance_uid: str = "") -> None:
        super().__init__(message, keyword="StudyInstanceUID", sop_class_uid=sop_class_uid,
                         sop_instance_uid=sop_instance_uid)
        self.study_uid = study_uid


#: ``MalformedDicom.reason`` of an object cut short (the messages say where).
TRUNCATED = "the object is truncated"

#: ``DamagedPixelData.reason``: the messages say how short, which varies from object to object.
SHORT_PIXEL_DATA = "pixel data shorter than its header describes"


class DamagedPixelData(InvalidDicom):
    """The native pixel data is shorter than its header describes (Rows × Columns × Samples per Pixel × Bits
    Allocated × Number of Frames): refused at ingest, or, for an object stored before that check (or accepted by
    the ``accept-and-flag`` policy), the reason frames and rendered images of it cannot be produced."""

    def __init__(self, message: str, *, sop_class_uid: str = "", sop_instance_uid: str = "") -> None:
        super().__init__(message, reason=SHORT_PIXEL_DATA, sop_class_uid=sop_class_uid,
                         sop_instance_uid=sop_instance_uid)


class TooLarge(DicomVaultError):
    """Serving or storing the object would exceed a configured limit (``max_inflated_bytes``,
    ``max_inflate_ratio``, ``max_decoded_bytes``); the message names the limit. Permanent for this object
    until an administrator raises the limit: not a reason to retry."""

    def __init__(self, message: str, setting: str) -> None:
        super().__init__(message)
        self.setting = setting


class InvalidQuery(DicomVaultError):
    """A query key or value cannot be understood (bad date range, unknown keyword, bad UID list)."""


class QueryTooComplex(InvalidQuery):
    """A query is valid DICOM but exceeds a configured bound on its keys (pattern length, wildcards, number of
    values or keys): refused before any matching is done."""


class ResultLimitExceeded(DicomVaultError):
    """A query or retrieve reached a configured bound on its result (matches, candidate records examined,
    instances addressed); nothing beyond the bound is processed."""


class Conflict(DicomVaultError):
    """A different object with the same SOP Instance UID exists and the duplicate policy is ``reject``.

    From the index, "different" means other bytes; ``stored_key``, ``stored_size`` and ``stored_sha256`` describe
    the stored blob so that ingest can compare the data sets (``services.content_identity``) before calling it a
    conflict."""

    def __init__(self, message: str, sop_instance_uid: str = "", *, sop_class_uid: str = "", stored_key: str = "",
                 stored_size: int = 0, stored_sha256: str = "", stored_original_sha256: str = "") -> None:
        super().__init__(message)
        self.sop_instance_uid = sop_instance_uid
        #: set by ingest (the index knows only the instance): names the refused object in a STOW-RS response
        self.sop_class_uid = sop_class_uid
        self.stored_key = stored_key
        self.stored_size = stored_size
        self.stored_sha256 = stored_sha256
        #: the stored blob holds a compressed form of an object received with this SHA-256 (``services.compression``)
        self.stored_original_sha256 = stored_original_sha256


class Unsupported(DicomVaultError):
    """The request is valid but the archive cannot satisfy it (e.g. a transfer syntax it cannot produce)."""


class Unavailable(DicomVaultError):
    """A backend (database, object store) is temporarily unreachable; the caller may retry."""


class BlobRemovalRace(Unavailable):
    """Internal to ingest: the content-addressed blob a store is about to reference is being removed, or was
    removed after the store's put may have found it present (see ``services.lifecycle``). The index refuses the
    store; ingest waits for the removal ``claim`` to finish, writes the bytes again and retries, accepting that
    finished claim. It never reaches a front end; if it did, it is an ``Unavailable`` (try again), the truth.
    """

    def __init__(self, message: str, *, key: str, claim: str, finished: bool) -> None:
        super().__init__(message)
        self.key = key
        self.claim = claim
        self.finished = finished


class NotRestored(Unavailable):
    """The object's only copies are on an archive storage class (S3 GLACIER, DEEP_ARCHIVE) and have not been
    restored: it becomes readable after a recall (``dicomvault recall``), typically within hours. Front ends answer
    with a failure naming the reason (DIMSE Error Comment; HTTP 503 with ``Retry-After`` of ``retry_after``)."""

    def __init__(self, message: str, *, retry_after: int = 3600, restoring: bool = False) -> None:
        super().__init__(message)
        self.retry_after = retry_after
        #: a restore was already requested and is in progress
        self.restoring = restoring


class IntegrityFailure(DicomVaultError):
    """Stored bytes no longer match their recorded SHA-256."""


class PermissionDenied(DicomVaultError):
    """The caller is authenticated but lacks the scope for this operation."""


class Unauthenticated(DicomVaultError):
    """No valid credential: none was given where one is needed, or it is invalid, expired or revoked."""


class ConfigurationError(DicomVaultError):
    """The settings are unsafe or inconsistent (e.g. anonymous access on a public address); refuse to start."""
