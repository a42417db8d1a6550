"""Sending stored instances to a peer: C-GET/C-MOVE sub-operations and outbound storage associations.

The stored bytes go out unchanged whenever the peer accepted the stored transfer syntax: pynetdicom streams the
data set straight from the blob file (``_config.STORE_SEND_CHUNKED_DATASET``), so nothing is decoded, re-encoded
or held in memory. Only when the peer accepted no context in the stored syntax is the object transcoded (through
``RetrieveService.transcoded_file``: a spool file, streamed the same way) to one it did accept; a deflated object
sent as Explicit VR Little Endian is inflated chunk by chunk into that file, within ``max_inflated_bytes``.

pynetdicom's C-GET/C-MOVE service classes only take ``Dataset`` objects from a handler, so a stored file travels
as an ``Outgoing`` placeholder (a ``Dataset`` carrying the file path); ``install_sender`` lets the association's
``send_c_store`` recognise it.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pydicom
from pydicom.dataset import Dataset
from pydicom.uid import UID, ExplicitVRLittleEndian, ImplicitVRLittleEndian
from pynetdicom import AE, _config
from pynetdicom.association import Association
from pynetdicom.presentation import PresentationContext, build_context

from dicomvault.dimse.tls import outbound_tls
from dicomvault.domain.errors import DicomVaultError, NotFound, Unavailable, Unsupported
from dicomvault.domain.records import InstanceRecord
from dicomvault.services.archive import Archive

log = logging.getLogger(__name__)

UNCOMPRESSED = (ExplicitVRLittleEndian, ImplicitVRLittleEndian)
#: PS3.8: at most 128 presentation contexts in one association request.
MAX_CONTEXTS = 128
#: Attribute set on ``send_c_store`` wrappers that already send ``Outgoing`` placeholders.
SENDER_MARK = "_dicomvault_sender"


class Outgoing(Dataset):
    """What a retrieve handler yields for one sub-operation when the bytes are not a decoded ``Dataset``: the path
    of the stored file (sent unchanged), or the reason it cannot be sent (the sub-operation fails, counted by
    pynetdicom with the SOP Instance UID in the Failed SOP Instance UID List). ``error`` is the domain error behind
    the failure, when there is one, for a retrieve that answers some failures with a status of their own
    (``status.subop_comment``)."""

    def __init__(self, record: InstanceRecord, *, path: Path | None = None, failure: str | None = None,
                 error: DicomVaultError | None = None) -> None:
        super().__init__()
        self.SOPClassUID = record.sop_class_uid
        self.SOPInstanceUID = record.sop_uid
        self._dv_path = path
        self._dv_failure = failure
        self._dv_error = error


def install_sender(assoc: Association) -> None:
    """Let ``assoc.send_c_store`` send ``Outgoing`` placeholders (idempotent; patches this association only)."""
    original = assoc.send_c_store
    if getattr(original, SENDER_MARK, False):
        return

    def send_c_store(dataset: Any, *args: Any, **kwargs: Any) -> Dataset:
        if isinstance(dataset, Outgoing):
            if dataset._dv_path is None:
                raise Unsupported(dataset._dv_failure or "instance cannot be sent")
            # Stream the data set from the file, exactly as stored (set per call: the flag is process-wide and
            # only affects sending from a path, which is what every DicomVault caller means by it).
            _config.STORE_SEND_CHUNKED_DATASET = True
            return original(dataset._dv_path, *args, **kwargs)
        return original(dataset, *args, **kwargs)

    setattr(send_c_store, SENDER_MARK, True)
    assoc.send_c_store = send_c_store  # type: ignore[method-assign]


def accepted_syntaxes(assoc: Association | None) -> dict[str, set[str]]:
    """SOP class → transfer syntaxes in which we may send C-STORE requests on ``assoc``."""
    out: dict[str, set[str]] = {}
    if assoc is None:
        return out
    for cx in assoc.accepted_contexts:
        if cx.transfer_syntax and cx.as_scu:
            out.setdefault(str(cx.abstract_syntax), set()).add(str(cx.transfer_syntax[0]))
    return out


def proposed_contexts(records: Iterable[InstanceRecord]) -> list[PresentationContext]:
    """Contexts for an outbound storage association: each SOP class with each stored syntax in a context of its
    own (the peer cannot answer with another syntax, so the stored bytes can go unchanged), plus one context with
    the uncompressed syntaxes as a fallback for a peer that refuses a compressed one. Above 128 contexts, one
    context per SOP class with all its syntaxes."""
    pairs: dict[str, set[str]] = {}
    for r in records:
        pairs.setdefault(r.sop_class_uid, set()).add(r.transfer_syntax_uid)
        if r.original is not None:  # compressed at rest: the syntax it was received in, sent as received
            pairs[r.sop_class_uid].add(r.original.syntax)
    contexts: list[PresentationContext] = []
    for sop_class, syntaxes in pairs.items():
        for ts in sorted(syntaxes):
            contexts.append(build_context(sop_class, [ts]))
        contexts.append(build_context(sop_class, list(UNCOMPRESSED)))
    if len(contexts) > MAX_CONTEXTS:
        contexts = []
        for sop_class, syntaxes in pairs.items():
            extra = [ts for ts in UNCOMPRESSED if ts not in syntaxes]
            contexts.append(build_context(sop_class, [*sorted(syntaxes), *extra]))
        contexts = contexts[:MAX_CONTEXTS]
    return contexts


def _target_syntax(archive: Archive, record: InstanceRecord, accepted: set[str]) -> str | None:
    """The syntax to send in: as stored, else (compressed at rest) as received, else uncompressed, else any."""
    stored = record.transfer_syntax_uid
    original = [record.original.syntax] if record.original is not None else []
    preferred = [stored, *original, *(str(ts) for ts in UNCOMPRESSED), *sorted(accepted)]
    for ts in preferred:
        if ts in accepted and archive.retrieve.can_transcode(stored, ts):
            return ts
    return None


def _is_part10(archive: Archive, record: InstanceRecord) -> bool:
    """Whether the stored object has a File Meta Information header (objects imported without one are sent as a
    decoded data set instead, since streaming from a file needs the header's transfer syntax)."""
    try:
        with archive.retrieve.open(record) as f:
            head = f.read(132)
    except (DicomVaultError, OSError):
        return True  # let the send report the unreadable blob as a failed sub-operation
    return len(head) == 132 and head[128:] == b"DICM"


def _file_is_part10(path: Path) -> bool:
    with path.open("rb") as f:
        head = f.read(132)
    return len(head) == 132 and head[128:] == b"DICM"


@contextlib.contextmanager
def outgoing(archive: Archive, record: InstanceRecord, accepted: dict[str, set[str]],
             staged: Path | None = None) -> Iterator[Dataset]:
    """The object to send for ``record`` to a peer that accepted ``accepted``; valid inside the ``with``.
    ``staged``: the object already downloaded to a spool file (``services.prefetch``: a remote store).

    An instance switched to another blob after ``record`` was read (compressed at rest while the retrieve runs:
    ``compress_on_ingest`` works on studies minutes old, likely being read; or replaced), whose previous blob is
    then removed, is sent as it is now rather than failed."""
    with contextlib.ExitStack() as files:
        ds = _prepare(archive, record, accepted, staged, files)
        if isinstance(ds, Outgoing) and isinstance(ds._dv_error, NotFound):
            current = archive.retrieve.refreshed(record)
            if current is not None:
                log.info("an instance changed blob while being retrieved (compressed or replaced): sent as it is now")
                ds = _prepare(archive, current, accepted, None, files)
            if isinstance(ds, Outgoing) and isinstance(ds._dv_error, NotFound):
                log.warning("cannot read a stored instance for sending: %s", ds._dv_error.message)
        yield ds


def _prepare(archive: Archive, record: InstanceRecord, accepted: dict[str, set[str]], staged: Path | None,
             files: contextlib.ExitStack) -> Dataset:
    """``outgoing``'s object for ``record``; the files it needs stay open until ``files`` closes."""
    syntaxes = accepted.get(record.sop_class_uid, set())
    stored = record.transfer_syntax_uid
    if staged is not None and stored in syntaxes and _file_is_part10(staged):
        return Outgoing(record, path=staged)
    if stored in syntaxes and _is_part10(archive, record):
        try:
            path = files.enter_context(archive.retrieve.as_file(record))
        except DicomVaultError as exc:
            if not isinstance(exc, NotFound):  # a missing blob: ``outgoing`` looks again first
                log.warning("cannot read a stored instance for sending: %s", exc.message)
            return Outgoing(record, failure=exc.message, error=exc)
        return Outgoing(record, path=path)
    target = _target_syntax(archive, record, syntaxes)
    if target is None:
        reason = f"peer accepted no transfer syntax for {UID(record.sop_class_uid).name or record.sop_class_uid}"
        log.info("sub-operation fails: %s (stored as %s)", reason, UID(stored).name or stored)
        return Outgoing(record, failure=reason)
    if target == stored:  # stored without a file meta header: decode, pynetdicom re-encodes as stored
        try:
            with archive.retrieve.open(record) as f:
                ds = pydicom.dcmread(f, force=True)
            ds.ensure_file_meta()
            ds.file_meta.TransferSyntaxUID = UID(stored)
        except Exception as exc:
            log.warning("cannot read a stored instance for sending: %s", type(exc).__name__)
            return Outgoing(record, failure="the stored object cannot be read",
                            error=exc if isinstance(exc, DicomVaultError) else None)
        return ds
    # Another syntax: written to a spool file (a deflated object inflated chunk by chunk, anything else converted
    # within max_decoded_bytes) that pynetdicom streams like a stored file.
    try:
        path = files.enter_context(archive.retrieve.transcoded_file(record, target, staged))
    except DicomVaultError as exc:  # too large, damaged pixel data, no decoder: this sub-operation fails
        log.info("sub-operation fails: %s", exc.message)
        return Outgoing(record, failure=exc.message, error=exc)
    except Exception as exc:  # any decoder error: this sub-operation fails, the others go on
        log.warning("cannot transcode an instance for sending: %s", type(exc).__name__)
        log.debug("transcoding failure detail", exc_info=True)
        return Outgoing(record, failure=f"cannot transcode to {UID(target).name or target}")
    return Outgoing(record, path=path)


@dataclass
class SendReport:
    """Outcome of ``send_instances``: counts as C-MOVE reports them, plus the failed SOP Instance UIDs."""

    completed: int = 0
    warning: int = 0
    failed: int = 0
    failed_uids: list[str] = field(default_factory=list)


def send_instances(
    archive: Archive,
    records: list[InstanceRecord],
    *,
    aet: str,
    host: str,
    port: int,
    is_cancelled: Callable[[], bool] = lambda: False,
) -> SendReport:
    """Open one storage association to ``aet`` at host:port and send ``records`` (exact bytes when possible).

    For forwarding and any other push that is not a C-MOVE sub-operation. Raises ``Unavailable`` when the peer
    cannot be reached or refuses the association."""
    s = archive.settings
    ae = AE(ae_title=s.aet)
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = s.dimse_timeout
    ae.connection_timeout = s.dimse_artim_timeout  # a host that drops packets: not the OS's two minutes
    ae.maximum_pdu_size = s.max_pdu
    try:
        tls = outbound_tls(s, aet, host)  # DICOM TLS when the peer's rule says so (tls.py)
    except OSError as exc:
        raise Unavailable(f"cannot load the TLS files for {aet}: {type(exc).__name__}") from None
    assoc = ae.associate(host, port, contexts=proposed_contexts(records), ae_title=aet, **tls)
    if not assoc.is_established:
        raise Unavailable(f"storage association to {aet} at {host}:{port} was not established")
    install_sender(assoc)
    report = SendReport()
    accepted = accepted_syntaxes(assoc)
    try:
        for record in records:
            if is_cancelled() or not assoc.is_established:
                break
            try:
                with outgoing(archive, record, accepted) as ds:
                    status = assoc.send_c_store(ds)
                code = int(status.get("Status", 0xC000)) if status else 0xC000
            except Exception as exc:
                log.warning("C-STORE to %s failed: %s", aet, type(exc).__name__)
                code = 0xC000
            if code == 0x0000:
                report.completed += 1
            elif 0xB000 <= code <= 0xBFFF or code in (0x0107, 0x0116):  # PS3.4 B.2.3 warnings
                report.warning += 1
            else:
                report.failed += 1
                report.failed_uids.append(record.sop_uid)
    finally:
        if assoc.is_established:
            assoc.release()
    return report
