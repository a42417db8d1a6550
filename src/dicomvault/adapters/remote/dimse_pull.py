"""Reading a legacy PACS over DIMSE (``ports.migration.LegacySource``): C-FIND (Study Root) at STUDY and IMAGE
level, and each study pulled by C-MOVE (to the archive's storage SCP, ``store_scp``) or C-GET.

Why one association per request: a migration runs several studies in flight on threads, and a legacy PACS copes
better with a few short associations than with long-lived ones it may time out. Every association is bounded in
time (``timeout``), so a peer that stops answering fails the study (with the reason) instead of holding a thread.

C-GET: the archive takes the storage SCP role on the same association, for the SOP classes the study holds (from
the IMAGE-level answer), each proposed in its own presentation context per transfer syntax the peer may have
stored (``GET_SYNTAXES``): the peer then finds a context in the syntax it stored the object in and sends it as it
is, never transcoded. At most 128 contexts fit an association: with many SOP classes, fewer syntaxes per class.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from typing import Any

from pydicom.dataset import Dataset
from pynetdicom import AE, build_role, evt
from pynetdicom.association import Association
from pynetdicom.sop_class import (  # type: ignore[attr-defined]
    StudyRootQueryRetrieveInformationModelFind,
    StudyRootQueryRetrieveInformationModelGet,
    StudyRootQueryRetrieveInformationModelMove,
)

from dicomvault.adapters.remote.received import store_event, tune_association
from dicomvault.domain.migration import PullOutcome, RemoteInstance, RemoteStudy, StudyFilter
from dicomvault.domain.peers import RemotePeer
from dicomvault.ports.migration import PeerUnreachable, Sink

log = logging.getLogger(__name__)

#: Syntaxes a legacy PACS may have stored an object in, most frequent first (one C-GET context each).
GET_SYNTAXES = (
    "1.2.840.10008.1.2.1",  # Explicit VR Little Endian
    "1.2.840.10008.1.2",  # Implicit VR Little Endian
    "1.2.840.10008.1.2.4.70",  # JPEG Lossless SV1
    "1.2.840.10008.1.2.4.50",  # JPEG Baseline
    "1.2.840.10008.1.2.4.90",  # JPEG 2000 Lossless
    "1.2.840.10008.1.2.4.91",  # JPEG 2000
    "1.2.840.10008.1.2.4.80",  # JPEG-LS Lossless
    "1.2.840.10008.1.2.5",  # RLE Lossless
    "1.2.840.10008.1.2.4.51",  # JPEG Extended
    "1.2.840.10008.1.2.4.57",  # JPEG Lossless
    "1.2.840.10008.1.2.4.81",  # JPEG-LS Near-Lossless
    "1.2.840.10008.1.2.1.99",  # Deflated Explicit VR Little Endian
    "1.2.840.10008.1.2.2",  # Explicit VR Big Endian
)
#: When the peer did not say which SOP classes a study holds: the usual image classes, uncompressed only.
FALLBACK_CLASSES = (
    "1.2.840.10008.5.1.4.1.1.2",  # CT
    "1.2.840.10008.5.1.4.1.1.4",  # MR
    "1.2.840.10008.5.1.4.1.1.1",  # CR
    "1.2.840.10008.5.1.4.1.1.1.1",  # DX for presentation
    "1.2.840.10008.5.1.4.1.1.6.1",  # US
    "1.2.840.10008.5.1.4.1.1.7",  # Secondary Capture
    "1.2.840.10008.5.1.4.1.1.88.22",  # Enhanced SR
    "1.2.840.10008.5.1.4.1.1.11.1",  # Grayscale Softcopy Presentation State
)
MAX_CONTEXTS = 128
#: SOP Instance UIDs in one IMAGE-level C-MOVE / C-GET identifier (a UI element of at most 64 KiB in explicit VR)
UIDS_PER_REQUEST = 500

#: C-MOVE / C-GET final statuses worth a sentence of their own.
MOVE_STATUS = {
    0xA801: "the peer does not know the move destination AE title {dest!r}: add it to the peer's configuration "
            "(AE title {dest}, this host, the --listen-port)",
    0xA701: "the peer is out of resources (could not compute the number of matches)",
    0xA702: "the peer is out of resources (could not perform the sub-operations)",
    0xA900: "the peer says the identifier does not match the SOP class",
    0xC000: "the peer failed the request (unable to process)",
}


class PynetdicomPull:
    """Implements ``ports.migration.LegacySource`` over DIMSE. ``via``: ``move`` (to ``move_destination``) or
    ``get``."""

    def __init__(self, aet: str, *, via: str, move_destination: str = "", timeout: float = 30.0,
                 max_pdu: int = 0) -> None:
        if via not in ("move", "get"):
            raise ValueError(f"via {via!r}: move or get")
        self.aet, self.via, self.move_destination = aet, via, move_destination or aet
        self.timeout = timeout
        self.max_pdu = max_pdu

    # -- associations -------------------------------------------------------------------------------------

    def _ae(self) -> AE:
        ae = AE(ae_title=self.aet)
        ae.acse_timeout = ae.network_timeout = ae.connection_timeout = self.timeout
        ae.dimse_timeout = self.timeout
        ae.maximum_pdu_size = self.max_pdu
        return ae

    def _associate(self, ae: AE, peer: RemotePeer, **kwargs: Any) -> Association:
        if not peer.reachable:
            raise PeerUnreachable(f"peer {peer.aet} has no host and port (dicomvault peers add {peer.aet} "
                                  "--host HOST --port PORT)")
        assoc = ae.associate(peer.host, peer.port, ae_title=peer.aet, **kwargs)
        if not assoc.is_established:
            what = "rejected the association (does it know our AE title " \
                   f"{self.aet!r}?)" if assoc.is_rejected else "did not answer (connection refused, timed out or " \
                   "aborted)"
            raise PeerUnreachable(f"peer {peer.aet} at {peer.host}:{peer.port} {what}")
        tune_association(assoc)
        return assoc

    def _find(self, peer: RemotePeer, query: Dataset) -> Iterator[Dataset]:
        ae = self._ae()
        ae.add_requested_context(StudyRootQueryRetrieveInformationModelFind)
        assoc = self._associate(ae, peer)
        try:
            for status, ident in assoc.send_c_find(query, StudyRootQueryRetrieveInformationModelFind):
                code = getattr(status, "Status", None)
                if code is None:
                    raise PeerUnreachable(f"peer {peer.aet}: no C-FIND response (timed out or aborted)")
                if code in (0xFF00, 0xFF01):
                    if ident is not None:
                        yield ident
                elif code != 0x0000:
                    raise PeerUnreachable(f"peer {peer.aet}: C-FIND failed with status 0x{code:04X}")
        finally:
            if assoc.is_established:
                assoc.release()

    # -- queries ------------------------------------------------------------------------------------------

    def find_studies(self, peer: RemotePeer, flt: StudyFilter) -> list[RemoteStudy]:
        def query(uid: str) -> Dataset:
            q = Dataset()
            q.QueryRetrieveLevel = "STUDY"
            q.StudyInstanceUID = uid
            q.StudyDate = flt.date_range() or ""
            q.PatientID = ""
            q.ModalitiesInStudy = flt.modality or ""
            q.NumberOfStudyRelatedInstances = ""
            return q

        # one query per listed study: list matching on UIDs is optional for an SCP
        queries = [query(uid) for uid in flt.study_uids] or [query("")]
        found: dict[str, RemoteStudy] = {}
        for q in queries:
            for ident in self._find(peer, q):
                uid = str(ident.get("StudyInstanceUID", "") or "").strip()
                if not uid:
                    continue
                modalities = ident.get("ModalitiesInStudy", "")
                mods = tuple(str(m) for m in modalities) if isinstance(modalities, Sequence) and not isinstance(
                    modalities, str) else tuple(m for m in str(modalities or "").split("\\") if m)
                count = ident.get("NumberOfStudyRelatedInstances", None)
                found[uid] = RemoteStudy(study_uid=uid, study_date=str(ident.get("StudyDate", "") or ""),
                                         patient_id=str(ident.get("PatientID", "") or ""), modalities=mods,
                                         expected=int(count) if count not in (None, "") else None)
        return list(found.values())

    def find_instances(self, peer: RemotePeer, study_uid: str) -> list[RemoteInstance]:
        q = Dataset()
        q.QueryRetrieveLevel = "IMAGE"
        q.StudyInstanceUID = study_uid
        q.SeriesInstanceUID = ""
        q.SOPInstanceUID = ""
        q.SOPClassUID = ""
        out: dict[str, RemoteInstance] = {}
        try:
            for ident in self._find(peer, q):
                uid = str(ident.get("SOPInstanceUID", "") or "").strip()
                if uid:
                    out[uid] = _instance(ident, uid)
            return list(out.values())
        except PeerUnreachable as exc:
            if "status" not in str(exc):
                raise
        # A strictly hierarchical SCP refuses IMAGE level without a series: series first, then each series.
        q = Dataset()
        q.QueryRetrieveLevel = "SERIES"
        q.StudyInstanceUID = study_uid
        q.SeriesInstanceUID = ""
        series = [str(s.SeriesInstanceUID) for s in self._find(peer, q) if s.get("SeriesInstanceUID")]
        for uid in series:
            q = Dataset()
            q.QueryRetrieveLevel = "IMAGE"
            q.StudyInstanceUID, q.SeriesInstanceUID = study_uid, uid
            q.SOPInstanceUID = ""
            q.SOPClassUID = ""
            for ident in self._find(peer, q):
                sop = str(ident.get("SOPInstanceUID", "") or "").strip()
                if sop:
                    out[sop] = _instance(ident, sop, uid)
        return list(out.values())

    # -- retrieval ----------------------------------------------------------------------------------------

    def pull(self, peer: RemotePeer, study_uid: str, instances: Sequence[RemoteInstance], sink: Sink, *,
             only: bool = False) -> PullOutcome:
        queries = _image_queries(study_uid, instances) if only else None
        if not queries:
            q = Dataset()
            q.QueryRetrieveLevel = "STUDY"
            q.StudyInstanceUID = study_uid
            queries = [q]
        if self.via == "move":
            ae = self._ae()
            ae.add_requested_context(StudyRootQueryRetrieveInformationModelMove)
            try:
                assoc = self._associate(ae, peer)
            except PeerUnreachable as exc:
                return PullOutcome(error=str(exc))
            return _outcome(assoc, (assoc.send_c_move(q, self.move_destination,
                                                      StudyRootQueryRetrieveInformationModelMove) for q in queries),
                            peer, self.move_destination)
        ae = self._ae()
        ae.add_requested_context(StudyRootQueryRetrieveInformationModelGet)
        classes = sorted({i.sop_class_uid for i in instances if i.sop_class_uid}) or list(FALLBACK_CLASSES)
        per_class = max(1, min(len(GET_SYNTAXES), (MAX_CONTEXTS - 1) // len(classes)))
        if not instances or not any(i.sop_class_uid for i in instances):
            per_class = min(per_class, 2)
        for sop_class in classes[:MAX_CONTEXTS - 1]:
            for ts in GET_SYNTAXES[:per_class]:
                ae.add_requested_context(sop_class, ts)
        roles = [build_role(c, scp_role=True) for c in classes[:MAX_CONTEXTS - 1]]
        handlers: list[Any] = [(evt.EVT_C_STORE, store_event, [sink])]
        try:
            assoc = self._associate(ae, peer, ext_neg=roles, evt_handlers=handlers)
        except PeerUnreachable as exc:
            return PullOutcome(error=str(exc))
        return _outcome(assoc, (assoc.send_c_get(q, StudyRootQueryRetrieveInformationModelGet) for q in queries),
                        peer, "")


def _instance(ident: Dataset, sop_uid: str, series_uid: str = "") -> RemoteInstance:
    return RemoteInstance(sop_uid, str(ident.get("SOPClassUID", "") or "").strip(),
                          str(ident.get("SeriesInstanceUID", "") or "").strip() or series_uid)


def _image_queries(study_uid: str, instances: Sequence[RemoteInstance]) -> list[Dataset]:
    """IMAGE-level identifiers asking for exactly ``instances``: one per series (Study Root retrieval is
    hierarchical below the study), at most ``UIDS_PER_REQUEST`` SOP Instance UIDs each (a UID list: PS3.4
    C.4.2.2.1); none when an instance's series is unknown (then the whole study is asked for)."""
    by_series: dict[str, list[str]] = {}
    for i in instances:
        if not i.series_uid:
            return []
        by_series.setdefault(i.series_uid, []).append(i.sop_uid)
    out = []
    for series, uids in by_series.items():
        for start in range(0, len(uids), UIDS_PER_REQUEST):
            q = Dataset()
            q.QueryRetrieveLevel = "IMAGE"
            q.StudyInstanceUID, q.SeriesInstanceUID = study_uid, series
            q.SOPInstanceUID = uids[start:start + UIDS_PER_REQUEST]
            out.append(q)
    return out


def _outcome(assoc: Association, requests: Iterator[Iterator[tuple[Dataset, Dataset | None]]], peer: RemotePeer,
             destination: str) -> PullOutcome:
    """Walk the response streams of the C-MOVE / C-GET requests, one after the other on ``assoc``, to their final
    statuses: sub-operation counts add up; the first failure stops the walk and is the outcome's error."""
    out = PullOutcome()
    final: int | None = None
    try:
        for responses in requests:
            final = None
            for status, _ in responses:
                code = getattr(status, "Status", None)
                if code is None:
                    out.error = f"peer {peer.aet}: no response (timed out or aborted)"
                    return out
                if code in (0xFF00, 0xFF01):
                    continue
                final = int(code)
                out.failed += int(getattr(status, "NumberOfFailedSuboperations", 0) or 0)
                out.received += int(getattr(status, "NumberOfCompletedSuboperations", 0) or 0) + int(
                    getattr(status, "NumberOfWarningSuboperations", 0) or 0)
            if final != 0x0000:
                break
    finally:
        if assoc.is_established:
            assoc.release()
    if final is None:
        out.error = f"peer {peer.aet}: no final status"
    elif final == 0xB000:
        out.error = f"peer {peer.aet}: {out.failed} sub-operation(s) failed (status 0xB000)"
    elif final != 0x0000:
        text = MOVE_STATUS.get(final, "").format(dest=destination)
        if destination and final != 0xA801 and not out.received:
            # several PACS (Orthanc among them) answer an unknown destination with a general failure
            text += f"; does the peer know the move destination AE title {destination!r} (this host, the port " \
                    "it should send to)?"
        out.error = f"peer {peer.aet}: status 0x{final:04X}" + (f": {text}" if text else "")
    return out
