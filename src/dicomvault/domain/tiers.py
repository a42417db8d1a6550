"""The vocabulary of storage tiers: named stores, verified copies of a blob, lifecycle conditions and their answers.

An archive has one or more named blob stores (``[stores.<name>]``; the store called ``default`` is ``storage_url``,
so a single-store archive keeps working unchanged). Every blob the index references has one or more *copies*,
each on one named store and recorded only after its SHA-256 was verified there (ingest computes it while
writing; a tier move re-reads the target). These records travel between the index, the tier services and the
command line.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta

from dicomvault.domain.records import BlobInfo

#: The name of the store ``storage_url`` (or ``data_dir/blobs``) describes, present in every archive.
DEFAULT_STORE = "default"


@dataclass(frozen=True)
class BlobCopy:
    """A verified copy of one blob on one named store."""

    store: str
    verified_at: datetime | None


@dataclass(frozen=True)
class StudyBlob:
    """One blob a study references (a current instance or a prior version) and where its verified copies are."""

    sop_uid: str
    blob: BlobInfo
    stores: tuple[str, ...]


@dataclass(frozen=True)
class StudyCondition:
    """The ``when`` of a lifecycle rule, in index terms; an unset field does not restrict.

    ``not_read_days`` counts from the study's last read, or from its last change when it was never read.
    Modalities match ModalitiesInStudy; sources and SOP classes match when any instance of the study has one.
    """

    study_age_days: int | None = None
    not_read_days: int | None = None
    modalities: tuple[str, ...] = ()
    sources: tuple[str, ...] = ()
    sop_classes: tuple[str, ...] = ()
    min_bytes: int | None = None
    max_bytes: int | None = None


@dataclass(frozen=True)
class CopyTarget:
    """What a rule wants of every blob of a study: a verified copy on each of ``stores``; with ``exclusive`` (a
    move) no copy anywhere else. A study "needs work" when one of its blobs does not look like that yet."""

    stores: tuple[str, ...]
    exclusive: bool
    #: stores whose copies an exclusive target leaves alone (replicas other rules keep: a move never drops them)
    keep: tuple[str, ...] = ()


@dataclass(frozen=True)
class StudyCandidate:
    """A study a rule selects that still needs work, with its size (for plans and throttling)."""

    study_uid: str
    instances: int
    bytes: int


@dataclass(frozen=True)
class StoreUsage:
    """What one store holds according to the index: studies with at least one copy there, copies, bytes."""

    store: str
    studies: int
    copies: int
    bytes: int
    #: modality → (copies, bytes)
    by_modality: dict[str, tuple[int, int]] = field(default_factory=dict)


@dataclass(frozen=True)
class StudyFacts:
    """What lifecycle conditions look at, for one study (``IndexRepository.study_facts``)."""

    study_uid: str
    study_date: str | None
    #: the last read, else the last change of the study
    last_activity: datetime | None
    modalities: frozenset[str]
    sources: frozenset[str]
    sop_classes: frozenset[str]
    bytes: int


def study_date_cutoff(now: datetime, days: int) -> str:
    """The StudyDate (YYYYMMDD) a study must be older than to be ``days`` days old at ``now``."""
    return (now - timedelta(days=days)).strftime("%Y%m%d")


def matches(condition: StudyCondition, facts: StudyFacts, now: datetime) -> bool:
    """Whether ``facts`` satisfy ``condition`` at ``now``, exactly as ``IndexRepository.studies_needing`` selects
    (a study without a StudyDate is never old enough; one never read counts from its last change)."""
    c = condition
    if c.study_age_days is not None:
        date = (facts.study_date or "").strip()
        if len(date) != 8 or not date.isdigit() or date >= study_date_cutoff(now, c.study_age_days):
            return False
    if c.not_read_days is not None and (
            facts.last_activity is None or facts.last_activity >= now - timedelta(days=c.not_read_days)):
        return False
    if c.modalities and not facts.modalities.intersection(c.modalities):
        return False
    if c.sources and not facts.sources.intersection(c.sources):
        return False
    if c.sop_classes and not facts.sop_classes.intersection(c.sop_classes):
        return False
    if c.min_bytes is not None and facts.bytes < c.min_bytes:
        return False
    return c.max_bytes is None or facts.bytes <= c.max_bytes


#: How the front ends record who sent an instance: ``dimse:<calling AE title>`` (``dimse.handlers``) and
#: ``stow:<client>`` (``dicomweb.stow``: the token name or OIDC subject, ``anonymous``); ``cli-import`` alone.
DIMSE = "dimse:"
STOW = "stow:"
PREFIXES = (DIMSE, STOW)


def source_names(stored: str) -> tuple[str, ...]:
    """The names a rule's ``source`` may give for an instance received from ``stored``: the stored source
    ("cli-import", "dimse:<AE>", "stow:<client>"), the bare sender ("<AE>", "<client>") and the protocol alone
    ("dimse", "stow": every sender of that protocol)."""
    for prefix in PREFIXES:
        if stored.startswith(prefix) and len(stored) > len(prefix):
            return stored, stored[len(prefix):], prefix[:-1]
    return (stored,)
