"""Composition root: Settings → adapters → services. The only module that imports adapters.

Front ends receive an ``Archive`` (a plain bundle of services), never a repository or a blob store.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from sqlalchemy import inspect
from sqlalchemy.engine import make_url

from dicomvault.adapters.blobs.filesystem import FilesystemBlobStore
from dicomvault.adapters.blobs.memory import MemoryBlobStore
from dicomvault.adapters.blobs.s3 import S3BlobStore
from dicomvault.adapters.index.dashboard import SqlStorageFigures
from dicomvault.adapters.index.engine import create_index_engine, migrate
from dicomvault.adapters.index.job_queue import SqlJobQueue
from dicomvault.adapters.index.migration_state import SqlMigrationState
from dicomvault.adapters.index.peers import SqlPeerRegistry
from dicomvault.adapters.index.repository import SqlIndexRepository
from dicomvault.adapters.index.route_deliveries import SqlDeliveryLedger
from dicomvault.adapters.index.sessions import SqlSessionStore
from dicomvault.adapters.index.shares import SqlShareStore
from dicomvault.adapters.index.tokens import SqlTokenStore
from dicomvault.adapters.index.transfer import copy_index as _copy_index
from dicomvault.adapters.remote.dicomweb import HttpxDicomweb
from dicomvault.adapters.remote.dicomweb_pull import HttpxPull
from dicomvault.adapters.remote.dimse import PynetdicomRemote
from dicomvault.adapters.remote.dimse_pull import PynetdicomPull
from dicomvault.adapters.remote.dimse_store import PynetdicomStore
from dicomvault.adapters.remote.store_listener import LeanStoreScp
from dicomvault.adapters.remote.store_scp import PynetdicomStoreScp
from dicomvault.adapters.remote.stow import HttpxStow
from dicomvault.domain.errors import ConfigurationError, DicomVaultError
from dicomvault.domain.migration import Via
from dicomvault.domain.query import QueryLimits
from dicomvault.domain.tiers import DEFAULT_STORE
from dicomvault.ports.blobs import BlobStore
from dicomvault.services.archive import Archive
from dicomvault.services.auth import OidcVerifier
from dicomvault.services.blob_copier import BlobCopier, Throttle
from dicomvault.services.blob_tiers import TieredBlobs
from dicomvault.services.coercion import Coercion
from dicomvault.services.compression import CompressionService
from dicomvault.services.dashboard import DashboardService
from dicomvault.services.fixity import FixityService
from dicomvault.services.inflate import Limits
from dicomvault.services.ingest import IngestService
from dicomvault.services.iocm import RejectionNotes
from dicomvault.services.lifecycle import BlobRemover, LifecycleService
from dicomvault.services.metadata import MetadataService
from dicomvault.services.migration import MigrationService
from dicomvault.services.peers import PeerService
from dicomvault.services.prefetch import Prefetcher
from dicomvault.services.query import QueryService
from dicomvault.services.read_tracker import ReadTracker
from dicomvault.services.recall import build_recall
from dicomvault.services.render import RenderService
from dicomvault.services.retrieve import RetrieveService
from dicomvault.services.routing import ConfiguredRoute, RoutingService
from dicomvault.services.sessions import SessionService
from dicomvault.services.shares import ShareService
from dicomvault.services.status import StatusService
from dicomvault.services.storage_migration import StorageMigration
from dicomvault.services.tiering import TierService
from dicomvault.services.tokens import TokenService
from dicomvault.services.trash import TrashService
from dicomvault.settings import Settings


def build_blob_store(url: str, settings: Settings) -> BlobStore:
    parsed = urlparse(url)
    if parsed.scheme == "file":
        return FilesystemBlobStore(Path(parsed.path), fsync=settings.fsync)
    if parsed.scheme == "memory":
        return MemoryBlobStore()
    if parsed.scheme == "s3":
        return S3BlobStore.from_url(url, default_spool_dir=settings.data_dir / "spool")
    raise ValueError(f"unsupported storage URL scheme {parsed.scheme!r} (expected file://, s3:// or memory://)")


#: Read priority of a store by kind when its configuration gives none: local disks, then object storage, then
#: archive storage classes (objects that may need a recall).
_ARCHIVE_CLASSES = ("GLACIER", "DEEP_ARCHIVE")


def default_read_priority(url: str) -> int:
    scheme = urlparse(url).scheme
    if scheme in ("file", "memory"):
        return 0
    query = urlparse(url).query.upper()
    return 20 if any(f"STORAGE_CLASS={c}" in query and f"STORAGE_CLASS={c}_" not in query
                     for c in _ARCHIVE_CLASSES) else 10


def build_tiers(settings: Settings) -> TieredBlobs:
    """Every named store of ``settings`` as one ``TieredBlobs``, read in ascending read priority (then in the
    order declared), new objects going to ``ingest_store``."""
    configs = settings.resolved_stores()
    stores = {name: build_blob_store(cfg.url, settings) for name, cfg in configs.items()}
    order = sorted(configs, key=lambda n: (
        configs[n].read_priority if configs[n].read_priority is not None else default_read_priority(configs[n].url),
        list(configs).index(n)))
    return TieredBlobs(stores, ingest=settings.ingest_store, read_order=order)


def query_limits(settings: Settings) -> QueryLimits:
    return QueryLimits(
        max_pattern_length=settings.query_max_pattern_length, max_wildcards=settings.query_max_wildcards,
        max_values=settings.query_max_values, max_keys=settings.query_max_keys,
        max_results=settings.query_max_results, max_scanned=settings.query_max_scanned,
    )


def pixel_limits(settings: Settings) -> Limits:
    """Inflation and decoding limits; spool files go to the data folder (``data_dir/spool``), not /tmp."""
    return Limits(max_inflated_bytes=settings.max_inflated_bytes, max_inflate_ratio=settings.max_inflate_ratio,
                  max_decoded_bytes=settings.max_decoded_bytes, spool_dir=settings.data_dir / "spool")


def build_sessions(settings: Settings, store: SqlSessionStore, tokens: TokenService) -> SessionService:
    """Browser sessions; logins with an OIDC token need a valid OIDC configuration (an invalid one is refused by
    the HTTP app at start-up, ``services.access``: here it only means no OIDC login)."""
    try:
        oidc = OidcVerifier.from_settings(settings)
    except ConfigurationError:
        oidc = None
    return SessionService(store, tokens, oidc, max_age=timedelta(hours=settings.web_session_hours))


def build_shares(settings: Settings, store: SqlShareStore, sessions: SessionService,
                 index: SqlIndexRepository) -> ShareService:
    """Share links; their sessions go on only while the link is usable (the session service's ``share_check``)."""
    shares = ShareService(store, sessions, index, scope=settings.share_links_scope,
                          default_life=timedelta(days=settings.share_default_days),
                          max_life=timedelta(days=settings.share_max_days),
                          max_attempts=settings.share_password_attempts,
                          lock_for=timedelta(minutes=settings.share_lock_minutes))
    sessions.share_check = shares.usable
    return shares


class ArchiveNotFound(DicomVaultError):
    """``build_archive(create=False)`` found no archive where ``settings`` point (``where`` says which place)."""

    def __init__(self, where: str) -> None:
        super().__init__(f"no archive at {where}")
        self.where = where


def check_archive_exists(settings: Settings) -> None:
    """Raise ``ArchiveNotFound`` unless an archive exists where ``settings`` point, creating nothing: the SQLite
    index file exists (or, for a server database, its schema does), and the data folder exists when the default
    store lives in it. Read-only commands call this so that a wrong folder is an error, not a new empty archive."""
    url = settings.resolved_index_url
    if url.startswith("sqlite"):
        database = make_url(url).database or ""
        if database in ("", ":memory:"):
            return
        if not Path(database).is_file():
            where = settings.data_dir if settings.index_url is None else Path(database)
            raise ArchiveNotFound(str(where))
    else:
        engine = create_index_engine(url, pool_size=1)
        try:
            if not inspect(engine).has_table("alembic_version"):
                raise ArchiveNotFound(f"{make_url(url).render_as_string(hide_password=True)} (an empty database)")
        finally:
            engine.dispose()
    if settings.storage_url is None and DEFAULT_STORE not in settings.stores and not settings.data_dir.is_dir():
        raise ArchiveNotFound(str(settings.data_dir))


def build_archive(settings: Settings, *, run_migrations: bool = True, create: bool = True) -> Archive:
    """Every service over the adapters ``settings`` name. ``create=False``: an archive must already exist there
    (``check_archive_exists``); no folder or database is created."""
    if create:
        settings.data_dir.mkdir(parents=True, exist_ok=True)
    else:
        check_archive_exists(settings)
    engine = create_index_engine(settings.resolved_index_url, pool_size=settings.index_pool_size)
    if run_migrations:
        migrate(engine)
    index = SqlIndexRepository(engine)
    blobs = build_tiers(settings)
    for _, store in blobs.items():
        if isinstance(store, FilesystemBlobStore):
            store.sweep_temporary()
    limits = pixel_limits(settings)
    remover = BlobRemover(index, blobs, stale_after=settings.blob_removal_stale_after)
    jobs = SqlJobQueue(engine)
    copier = BlobCopier(index, blobs, Throttle(settings.tier_max_bytes_per_second))
    ingest = IngestService(index, blobs, remover, policy=settings.duplicate_policy,
                           precheck_duplicates=not isinstance(blobs.ingest_store, FilesystemBlobStore),
                           limits=limits, pixel_policy=settings.pixel_length_policy,
                           store_name=blobs.ingest_name, ingest_store=blobs.ingest_store)
    lifecycle = LifecycleService(index, remover)
    trash = TrashService(index, blobs, ingest, lifecycle, remover, grace_days=settings.delete_grace_days,
                         retention_min_days=settings.retention_min_days)
    reads = ReadTracker(index, promote_from=frozenset(
        name for name, cfg in settings.resolved_stores().items() if cfg.promote_on_read))
    retrieve = RetrieveService(index, blobs, limits, on_read=reads.note)
    compression = CompressionService(index, blobs, copier, retrieve, remover, limits,
                                     max_object_bytes=settings.compression_max_object_bytes,
                                     processes=settings.compression_processes)
    tiering = TierService(index, copier, settings.lifecycle, ingest_store=settings.ingest_store, jobs=jobs,
                          trash=trash, compression=compression, compress_on_ingest=settings.compress_on_ingest)
    reads.tiers = tiering
    # set after both exist: the trash restores through ingest, and ingest hands rejection notes to the trash
    # (and, with compress_on_ingest, new studies to the tier jobs)
    notes = RejectionNotes(index, trash, grace_days=settings.iocm_grace_days).on_stored
    ingest.after_store = notes if not settings.compress_on_ingest else _also_note_study(notes, tiering)
    peers = PeerService(SqlPeerRegistry(engine), settings, dimse=PynetdicomRemote(settings.aet),
                        dicomweb=HttpxDicomweb())
    if settings.coercion:
        _check_rule_peers(settings, peers)
        ingest.coercion = Coercion([r for r in settings.coercion if r.ingest], spool_dir=limits.spool_dir)
    prefetch = Prefetcher(retrieve)
    tokens = TokenService(SqlTokenStore(engine))
    sessions = build_sessions(settings, SqlSessionStore(engine), tokens)
    routing = build_routing(settings, SqlDeliveryLedger(engine), jobs, peers, retrieve)
    if routing.active:
        ingest.after_store = _also_route(ingest.after_store, routing)
    return Archive(
        settings=settings,
        index=index,
        blobs=blobs,
        ingest=ingest,
        query=QueryService(index, query_limits(settings)),
        retrieve=retrieve,
        metadata=MetadataService(index),
        render=RenderService(retrieve),
        fixity=FixityService(index, blobs, remover, copier),
        status=StatusService(index, blobs),
        lifecycle=lifecycle,
        trash=trash,
        remover=remover,
        tiers=blobs,
        tiering=tiering,
        copier=copier,
        reads=reads,
        compression=compression,
        peers=peers,
        prefetch=prefetch,
        recall=build_recall(index, blobs, blobs, settings.resolved_stores(), jobs),
        routing=routing,
        closers=[routing.close, prefetch.close, reads.close, compression.close, index.close, engine.dispose],
        tokens=tokens,
        sessions=sessions,
        shares=build_shares(settings, SqlShareStore(engine), sessions, index),
        jobs=jobs,
        migration_state=SqlMigrationState(engine),
        # the scheduled fixity scan's report (``jobs.handlers``: data_dir/fixity/last-report.json)
        dashboard=DashboardService(SqlStorageFigures(engine), jobs,
                                   settings.data_dir / "fixity" / "last-report.json"),
    )


def _check_rule_peers(settings: Settings, peers: PeerService) -> None:
    """A coercion rule naming a peer the archive does not know (configuration file or registry) is refused at
    start-up: it would silently never apply."""
    known = {p.aet for p in peers.all()}
    for n, rule in enumerate(settings.coercion, start=1):
        if rule.when.peer is not None and rule.when.peer.strip() not in known:
            raise ConfigurationError(
                f"[[coercion]] rule {n} ({rule.name!r}), when.peer: {rule.when.peer!r} is not a known peer "
                "(dicomvault peers list; dimse_peers or move_destinations in the configuration file)")


def _also_note_study(notes: Callable[[str, str, dict[str, Any], str], None],
                     tiering: TierService) -> Callable[[str, str, dict[str, Any], str], None]:
    """The after-store hook with ``compress_on_ingest``: rejection notes, then the study noted for compression."""

    def after_store(sop_class: str, sop_uid: str, data: dict[str, Any], source: str) -> None:
        notes(sop_class, sop_uid, data, source)
        study = (data.get("0020000D") or {}).get("Value") or []
        if study:
            tiering.note_ingested(str(study[0]))

    return after_store


def build_migration(
    archive: Archive, *, via: Via, listen_port: int | None = None, listen_host: str = "0.0.0.0",
    move_aet: str | None = None, bytes_per_second: int = 0, timeout: float = 30.0,
) -> MigrationService:
    """A migration from a legacy PACS (``dicomvault migrate``). ``via`` move: the peer sends to ``move_aet``
    (default: the archive's AE title); with ``listen_port`` a storage SCP in this process receives on that port
    (and is throttled), without it the running archive (``dicomvault serve``) must receive."""
    if archive.peers is None or archive.migration_state is None:
        raise ValueError("this archive has no peer registry or migration state")
    s = archive.settings
    receiver = None
    if via == Via.DICOMWEB:
        source: HttpxPull | PynetdicomPull = HttpxPull(timeout=max(timeout, 60.0))
    else:
        destination = (move_aet or s.aet).strip()
        source = PynetdicomPull(s.aet, via=via.value, move_destination=destination, timeout=timeout,
                                max_pdu=s.max_pdu)
        if via == Via.MOVE and listen_port is not None:
            scp = LeanStoreScp if s.dimse_fast_store else PynetdicomStoreScp  # the lean path, as the DIMSE server
            receiver = scp(destination, listen_host, listen_port, timeout=timeout, max_pdu=s.max_pdu)
    return MigrationService(archive.peers, archive.ingest, archive.index, archive.migration_state, source, via=via,
                            receiver=receiver, bytes_per_second=bytes_per_second)
def build_routing(settings: Settings, ledger: SqlDeliveryLedger, jobs: SqlJobQueue, peers: PeerService,
                  retrieve: RetrieveService) -> RoutingService:
    """The ``[[route]]`` rules as a ``RoutingService`` sending by pynetdicom (DICOM TLS to peers whose rule says
    so) and httpx; its start-up check names the configuration file's line of a route at fault."""
    from dicomvault.dimse.tls import outbound_tls  # the DIMSE stack only when a route sends by DIMSE

    routes = [ConfiguredRoute(n, rule.route()) for n, rule in enumerate(settings.route) if rule.enabled]
    return RoutingService(
        routes, ledger, jobs, peers, retrieve,
        dimse=PynetdicomStore(settings.aet, timeout=settings.dimse_timeout, max_pdu=settings.max_pdu,
                              tls=lambda aet, host: outbound_tls(settings, aet, host), lean=settings.dimse_fast_store),
        dicomweb=HttpxStow(), where=_route_location(settings), reconcile_window=settings.route_reconcile_window,
        coercion=Coercion(settings.coercion, spool_dir=retrieve.limits.spool_dir) if settings.coercion else None,
        holder=settings.aet)


def _route_location(settings: Settings) -> Callable[[int, str], str]:
    """``config.toml line 12: [[route]] rule 2 ('CT to PACS'), to`` for a route's key (no line when the routes
    did not come from a file)."""
    from dicomvault.config_errors import key_lines

    lines: dict[tuple[str | int, ...], int] = {}
    if settings.config_file is not None:
        try:
            lines = key_lines(settings.config_file.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            lines = {}

    def where(position: int, key: str) -> str:
        name = settings.route[position].name if position < len(settings.route) else "?"
        line = lines.get(("route", position, key)) or lines.get(("route", position))
        prefix = f"{settings.config_file} line {line}: " if line else ""
        return f"{prefix}[[route]] rule {position + 1} ({name!r}), {key}"

    return where


def _also_route(previous: Callable[[str, str, dict[str, Any], str], None] | None,
                routing: RoutingService) -> Callable[[str, str, dict[str, Any], str], None]:
    """The after-store hook with routes: what was there (rejection notes, compression), then routing's selection
    (in memory: ``RoutingService.on_stored`` never raises and writes nothing on the store's path)."""

    def after_store(sop_class: str, sop_uid: str, data: dict[str, Any], source: str) -> None:
        if previous is not None:
            previous(sop_class, sop_uid, data, source)
        routing.on_stored(sop_class, sop_uid, data, source)

    return after_store


def build_storage_migration(
    archive: Archive, target: BlobStore, source: BlobStore | None = None, *, workers: int = 4,
    deep_verify: bool = False,
) -> StorageMigration:
    """A migration of the blobs ``archive``'s index references from ``source`` (default: its store named
    ``default``, which ``storage_url`` describes) to ``target`` (``dicomvault storage migrate``: switch
    ``storage_url`` to the target afterwards and the index's copies of ``default`` stay true); raises
    ``ValueError`` when both are the same store. With several stores, move data with lifecycle rules instead."""
    if source is None:
        source = archive.tiers.store(DEFAULT_STORE) if archive.tiers is not None else archive.blobs
    return StorageMigration(archive.index, source, target,
                            workers=workers, deep_verify=deep_verify)


def copy_index(
    settings: Settings, target_url: str, progress: Callable[[str, int], None] | None = None
) -> dict[str, int]:
    """Copy the index of ``settings`` into the empty database at ``target_url`` (``dicomvault index migrate``);
    both are migrated to the newest schema first. Returns rows copied per table."""
    source = create_index_engine(settings.resolved_index_url, pool_size=1)
    target = create_index_engine(target_url, pool_size=1)
    try:
        migrate(source)
        migrate(target)
        return _copy_index(source, target, progress=progress)
    finally:
        source.dispose()
        target.dispose()
