"""The bundle of services a front end receives (built by ``bootstrap``; front ends never see adapters).

Why every service is built here and not where it is used: one archive has one metadata cache, one renderer and one
set of limits, whichever front end (DICOMweb, DIMSE, the command line) reaches it; a front end that built its own
would hold a second cache and could be wired with other limits. ``index`` and ``blobs`` stay on the bundle for the
background jobs and for tests; front ends use the services.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from dicomvault.ports.blobs import BlobStore
from dicomvault.ports.index import IndexRepository
from dicomvault.ports.jobs import JobQueue
from dicomvault.ports.migration import MigrationState
from dicomvault.services.blob_copier import BlobCopier
from dicomvault.services.blob_tiers import TieredBlobs
from dicomvault.services.compression import CompressionService
from dicomvault.services.dashboard import DashboardService
from dicomvault.services.fixity import FixityService
from dicomvault.services.ingest import IngestService
from dicomvault.services.lifecycle import BlobRemover, LifecycleService
from dicomvault.services.metadata import MetadataService
from dicomvault.services.peers import PeerService
from dicomvault.services.prefetch import Prefetcher
from dicomvault.services.query import QueryService
from dicomvault.services.read_tracker import ReadTracker
from dicomvault.services.recall import RecallService
from dicomvault.services.render import RenderService
from dicomvault.services.retrieve import RetrieveService
from dicomvault.services.routing import RoutingService
from dicomvault.services.sessions import SessionService
from dicomvault.services.shares import ShareService
from dicomvault.services.status import StatusService
from dicomvault.services.tiering import TierService
from dicomvault.services.tokens import TokenService
from dicomvault.services.trash import TrashService
from dicomvault.services.warmup import warm_up
from dicomvault.settings import Settings


@dataclass
class Archive:
    """The services a front end may use, built from one ``Settings``."""

    settings: Settings
    index: IndexRepository
    blobs: BlobStore
    ingest: IngestService
    query: QueryService
    retrieve: RetrieveService
    #: DICOM JSON metadata (WADO-RS …/metadata), with its document cache
    metadata: MetadataService
    #: rendered images and thumbnails (WADO-RS …/rendered, …/thumbnail, WADO-URI)
    render: RenderService
    #: fixity check and repair (``dicomvault verify``)
    fixity: FixityService
    #: readiness probe, counts, blob store description and usage
    status: StatusService
    #: deleting studies, series, instances (DICOMweb DELETE)
    lifecycle: LifecycleService
    #: the only way blobs leave the store (claim → delete → finish), and its periodic sweep
    remover: BlobRemover
    #: every named store as one (``blobs`` is the same object); the tier services below work on it
    tiers: TieredBlobs | None = None
    #: lifecycle rules: plan, schedule and apply tier moves and replication (``dicomvault lifecycle``)
    tiering: TierService | None = None
    #: copies between stores with read-back proof (tier moves, repair)
    copier: BlobCopier | None = None
    #: fetches the next objects of a multi-object retrieval from remote stores while one is sent
    prefetch: Prefetcher | None = None
    #: last-read times of studies, written in batches (and promotion requests)
    reads: ReadTracker | None = None
    #: the remote systems the archive knows: configuration file and index registry (``dicomvault peers``)
    peers: PeerService | None = None
    #: lossless compression at rest (compress rules, ``compress_on_ingest``, the deep proof of ``verify``)
    compression: CompressionService | None = None
    #: soft delete with a grace period, restore, purge, the deletion log, the retention minimum (DICOMweb DELETE,
    #: delete rules, ``dicomvault trash`` and ``dicomvault deletions``); None only in archives built without it
    trash: TrashService | None = None
    #: API tokens (None when the archive is built without an index database that stores them)
    tokens: TokenService | None = None
    #: browser sessions of the web pages and the viewer (login, share links); None: cookies are not accepted
    sessions: SessionService | None = None
    #: share links to one study (``dicomvault share``, ``/ui/shares``, ``/share/<secret>``); None: no links
    shares: ShareService | None = None
    #: durable background jobs on the index database (``jobs.worker.start_worker(archive)`` runs them)
    jobs: JobQueue | None = None
    #: recall of studies on archive storage classes (``dicomvault recall``, the admin API, the ``recall`` job);
    #: None when the archive was built without it (the command and the route then say so)
    recall: RecallService | None = None
    #: where each study of a legacy-PACS migration stands (``dicomvault migrate``; ``bootstrap.build_migration``)
    migration_state: MigrationState | None = None
    #: routing rules, their durable deliveries and storage commitment (``dicomvault routes``, the ``route-deliver``
    #: job, the DIMSE storage commitment SCP); None when the archive was built without it
    routing: RoutingService | None = None
    #: the storage dashboard's figures (``/ui/dashboard``, ``/metrics``), cached per process
    dashboard: DashboardService | None = None
    extras: dict[str, object] = field(default_factory=dict)
    #: called by ``close`` (the composition root registers engine disposal here)
    closers: list[Callable[[], None]] = field(default_factory=list)

    def warm_up(self) -> None:
        """Run the hot read paths once before serving (see ``services.warmup``)."""
        warm_up(self.index, self.query)

    def close(self) -> None:
        for closer in self.closers:
            closer()
        self.closers.clear()
