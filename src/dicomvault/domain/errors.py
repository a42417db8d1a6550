"""Domain errors, free of transport codes.

Each front end maps these once (``dimse/status.py`` to DIMSE statuses, ``dicomweb/errors.py`` to HTTP), so a
service never needs to know who called it.
"""

from __future__ import annotations


class DicomVaultError(Exception):
    """Base of every error the core raises on purpose."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class NotFound(DicomVaultError):
    """The study, series, instance, frame or blob does not exist."""


class InvalidDicom(DicomVaultError):
    """The object is not DICOM, is truncated, or lacks a required identifying attribute."""


class MalformedDicom(InvalidDicom):
    """The bytes cannot be parsed as DICOM at all (truncated, garbage): 'cannot understand' rather than
    'does not match the SOP class'."""


class DamagedPixelData(InvalidDicom):
    """The native pixel data is shorter than its header describes (Rows × Columns × Samples per Pixel × Bits
    Allocated × Number of Frames): refused at ingest, or, for an object stored before that check (or accepted by
    the ``accept-and-flag`` policy), the reason frames and rendered images of it cannot be produced."""


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

    def __init__(self, message: str, sop_instance_uid: str = "", *, stored_key: str = "", stored_size: int = 0,
                 stored_sha256: str = "") -> None:
        super().__init__(message)
        self.sop_instance_uid = sop_instance_uid
        self.stored_key = stored_key
        self.stored_size = stored_size
        self.stored_sha256 = stored_sha256


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


class IntegrityFailure(DicomVaultError):
    """Stored bytes no longer match their recorded SHA-256."""


class PermissionDenied(DicomVaultError):
    """The caller is authenticated but lacks the scope for this operation."""


class ConfigurationError(DicomVaultError):
    """The settings are unsafe or inconsistent (e.g. anonymous access on a public address); refuse to start."""
