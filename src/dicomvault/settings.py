"""Configuration: one ``Settings`` object built once at start-up and passed down (never a module global).

Sources, highest priority first: command-line flags, environment variables (``DICOMVAULT_<NAME>``), an optional
TOML file (``--config`` or ``DICOMVAULT_CONFIG``), defaults. Every field is documented in README's table.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, SecretStr, ValidationInfo, field_validator
from pydantic_core import PydanticCustomError
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from dicomvault.coercion_settings import CoercionRule
from dicomvault.domain.peers import Permission, check_ae_title, parse_network
from dicomvault.domain.records import DuplicatePolicy, PixelLengthPolicy
from dicomvault.domain.tiers import DEFAULT_STORE
from dicomvault.routing_settings import RouteRule
from dicomvault.storage_settings import STORE_NAME, LifecycleRule, StoreConfig

#: Most DIMSE worker processes (``dimse_workers``): beyond a few per core they only add memory (each holds its own
#: index connections and caches) and lock contention on an embedded index.
MAX_DIMSE_WORKERS = 32


#: Type of the errors whose place inside a field is in their context (``dv_at``), for config_errors.
LOCATED_ERROR = "dicomvault_config"


def located_error(message: str, at: tuple[str | int, ...], detail: str) -> PydanticCustomError:
    """A validation error of a field whose fault lies at ``at`` inside its value (``(1, "action", "move_to")``):
    pydantic reports the field only; config_errors appends ``at`` and shows ``detail`` after the located place."""
    return PydanticCustomError(LOCATED_ERROR, "{dv_message}", {"dv_message": message, "dv_at": at, "dv_detail": detail})


def _store_names(stores: dict[str, StoreConfig] | None) -> list[str] | None:
    """Every store name a setting may use (``default`` always exists), or None when ``stores`` did not validate."""
    return None if stores is None else list(dict.fromkeys([DEFAULT_STORE, *stores]))


class DimsePeer(BaseModel):
    """One known DIMSE peer, ``[dimse_peers.<AE title>]`` in TOML (docs/deployment.md, "DIMSE access control")."""

    model_config = ConfigDict(extra="forbid")  # a misspelt key is an error, not a silently open rule

    hosts: list[str] = Field(
        default_factory=list,
        description="Source addresses or networks it may connect from (10.1.2.3, 10.1.2.0/24, fd00::/64); empty: any.",
    )
    permissions: list[Permission] = Field(
        default_factory=list, description="What it may do: store, query, retrieve (empty: C-ECHO only)."
    )
    tls: bool = Field(
        False, description="Only over DICOM TLS: accepted on the TLS port only; the archive connects to it with TLS."
    )
    tls_names: list[str] = Field(
        default_factory=list,
        description="Names (subject CN or DNS SAN) its certificate must carry under mutual TLS; default: its AE title.",
    )
    tls_ca: Path | None = Field(
        None, description="CA file (PEM) that verifies its certificate when the archive connects to it over TLS.",
    )

    @field_validator("hosts")
    @classmethod
    def _check_hosts(cls, value: list[str]) -> list[str]:
        for host in value:
            parse_network(host)  # raises ValueError with the offending value
        return value


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="DICOMVAULT_", extra="ignore", env_nested_delimiter="__")
    _toml_file: ClassVar[Path | None] = None
    _config_file: Path | None = PrivateAttr(default=None)

    data_dir: Path = Field(Path("vault-data"), description="Folder for the embedded index and blob store.")
    index_url: str | None = Field(
        None,
        description="Index database URL: sqlite:///path or postgresql://user@host/db (default: SQLite in data_dir).",
    )
    storage_url: str | None = Field(
        None,
        description="Blob store URL: file:///path or s3://bucket/prefix?endpoint=…&region=… (default: data_dir/blobs).",
    )
    host: str = Field("127.0.0.1", description="Address the DIMSE and HTTP servers listen on.")
    dimse_port: int = Field(11112, description="DIMSE (DICOM upper layer) port.")
    http_port: int = Field(8080, description="HTTP port (DICOMweb, health probes).")
    aet: str = Field("DICOMVAULT", description="The archive's AE title.")
    move_destinations: dict[str, str] = Field(
        default_factory=dict, description="C-MOVE destinations: AE title → host:port."
    )
    allowed_calling_aets: list[str] = Field(
        default_factory=list,
        description="If not empty, only these calling AE titles (and dimse_peers) may associate, each with every "
        "permission.",
    )
    # -- DIMSE access control and DICOM TLS (issue #9; dimse/access.py, dimse/tls.py, docs/deployment.md) --------
    dimse_peers: dict[str, DimsePeer] = Field(
        default_factory=dict,
        description="Known DIMSE peers by AE title: allowed addresses, permissions (store, query, retrieve), TLS.",
    )
    dimse_allow_anonymous: bool = Field(
        False,
        description="Admit calling AE titles that are not known peers (with dimse_anonymous_permissions), also on "
        "a non-loopback address.",
    )
    dimse_anonymous_permissions: list[Permission] = Field(
        default_factory=lambda: ["store", "query", "retrieve"],
        description="What an admitted unknown calling AE title may do: store, query, retrieve.",
        validate_default=True,
    )
    dimse_check_called_aet: bool = Field(
        True,
        description="Refuse associations whose called AE title is not aet; false for devices that send a wrong one.",
    )
    dimse_tls_port: int | None = Field(
        None, description="DICOM TLS port (customarily 2762) beside dimse_port; unset: no TLS listener."
    )
    dimse_tls_cert: Path | None = Field(
        None, description="The archive's DICOM TLS certificate chain (PEM); also shown to TLS peers it connects to."
    )
    dimse_tls_key: Path | None = Field(None, description="Private key (PEM) of dimse_tls_cert.")
    dimse_tls_client_ca: Path | None = Field(
        None, description="CA certificates (PEM): when set, TLS clients must present a certificate they issued."
    )
    duplicate_policy: DuplicatePolicy = Field(
        DuplicatePolicy.REJECT,
        description="Same SOP Instance UID, different data set (File Meta and encoding aside): reject (failure), "
        "replace, keep-both.",
    )
    # -- Query limits (issue #9: wildcard matching, bounded result sets) --------------------------------------
    # Why these defaults: 64 characters is the longest LO value and PN component group, so a longer pattern could
    # only serve free-text attributes nobody queries; 16 wildcards leave room for a '?' per unsure letter of a
    # name. 1,000 values keep the SQL IN lists far below SQLite's 32,766 and PostgreSQL's 65,535 parameters.
    # 10,000 results per query is the former QIDO-RS maximum (and AWS HealthImaging's); 1,000 per QIDO-RS page
    # without limit keeps an unfiltered study list around 1 MB. 10,000 records examined for non-indexed keys cost
    # about 0.5 s of one core (benchmarks/query_abuse.py: 20,000 took 0.5-1.0 s on 2 shared cores). 20,000
    # instances per retrieve covers the largest single studies (a few thousand instances) several times over.
    query_max_pattern_length: int = Field(
        64, ge=1,
        description="Longest wildcard pattern (* or ?) a query key may carry, in characters; longer ones are refused.",
    )
    query_max_wildcards: int = Field(16, ge=1, description="Most * and ? wildcards in one query key.")
    query_max_values: int = Field(
        1000, ge=1, description="Most values one query may list (UID lists and multiple values, all keys together)."
    )
    query_max_keys: int = Field(64, ge=1, description="Most matching keys (keys with a value) in one query.")
    query_max_results: int = Field(
        10_000, ge=1,
        description="Most results of one query: the largest QIDO-RS page and the most C-FIND responses (then 0xA700).",
    )
    query_max_scanned: int = Field(
        10_000, ge=1,
        description="Most records one query examines to match attributes the index does not hold (then a warning).",
    )
    qido_default_limit: int = Field(
        1000, ge=1, description="Results per QIDO-RS response when the request sets no limit."
    )
    retrieve_max_instances: int = Field(
        20_000, ge=1, description="Most instances one C-GET or C-MOVE may address; above it the request is refused.",
    )
    max_pdu: int = Field(4 * 1024 * 1024, description="Maximum PDU length the DIMSE server receives (bytes).")
    max_associations: int = Field(64, description="Concurrent DIMSE associations accepted.")
    dimse_timeout: float = Field(
        60.0, gt=0,
        description="Seconds each DIMSE PDU may take to arrive (or be sent) completely; also the wait for a reply.",
    )
    dimse_fast_store: bool = Field(
        True,
        description="Serve storage-only associations (and migrate's C-MOVE storage SCP) with the lean receiver and "
        "send routing's C-STOREs with the lean sender; false: everything through pynetdicom.",
    )
    # -- DIMSE connection limits, timers and shutdown (issue #9: connection exhaustion, graceful stop) --
    dimse_max_connections: int | None = Field(
        None, gt=0,
        description="Open DIMSE connections accepted at once from all peers; more are closed at once "
        "(default: max_associations + 32).",
    )
    dimse_max_connections_per_address: int = Field(
        32, gt=0, description="Open DIMSE connections accepted at once from one IP address; more are closed at once."
    )
    dimse_artim_timeout: float = Field(
        10.0, gt=0,
        description="Seconds a new DIMSE connection has to complete association negotiation (ARTIM), else closed.",
    )
    dimse_idle_timeout: float = Field(
        60.0, gt=0, description="Seconds an association may go without any DIMSE message before it is aborted."
    )
    dimse_shutdown_grace: float = Field(
        10.0, ge=0,
        description="Seconds a stop waits for C-STORE and other operations in progress before aborting them.",
    )
    dimse_workers: int = Field(
        1, ge=0, le=MAX_DIMSE_WORKERS,
        description="Processes accepting DIMSE connections on dimse_port (the serve process and worker processes); "
        "0 = one per CPU core (at most 32). Connection and association caps are divided among them.",
    )
    index_pool_size: int = Field(10, description="Database connection pool size per process.")
    # -- pixel data limits (issue #9: deflate bombs, decoding amplification, short pixel data) ----------------------
    # Defaults: 1 GiB inflated holds the largest deflated objects seen in practice (deflate is used for SR, small
    # secondary captures and the odd single image) while bounding the CPU and spool space one object may cost
    # (measured: 512 MiB inflated into the spool in 0.7 s); memory no longer depends on it (inflation streams).
    # 256 MiB decoded holds an 8192 x 8192 16-bit frame (128 MiB; decoding peaks at about twice the decoded size,
    # measured on RLE), so one request costs at most ~0.5 GB; whole-object transcoding above it is refused (the
    # object stays retrievable as stored).
    max_inflated_bytes: int = Field(
        1 << 30, ge=1,
        description="Largest size in bytes a Deflated transfer syntax data set may inflate to; larger objects are "
                    "refused.",
    )
    max_inflate_ratio: int = Field(
        200, ge=0,
        description="Refuse a deflated data set that, past 64 MiB, inflates to more than this many times its "
                    "compressed size; 0 = no ratio check.",
    )
    max_decoded_bytes: int = Field(
        256 << 20, ge=1,
        description="Most decoded pixel bytes one request may need (a rendered or decoded frame, a transcoded "
                    "object); larger requests are refused with an error naming this limit.",
    )
    pixel_length_policy: PixelLengthPolicy = Field(
        PixelLengthPolicy.REJECT,
        description="Native pixel data shorter than its header describes: reject, or accept-and-flag (stored with a "
                    "warning; frames and rendered images then answer the problem).",
    )
    fsync: bool = Field(True, description="fsync blobs and directories before acknowledging (keep on).")
    # -- blob removal (issue #9: a delete racing a re-send; services.lifecycle) --
    blob_removal_stale_after: float = Field(
        300.0, gt=0,
        description="Seconds after which a blob removal left unfinished (its process crashed) is taken over by "
        "the sweep.",
    )
    blob_removal_sweep_interval: float = Field(
        60.0, ge=0,
        description="Seconds between sweeps that finish interrupted blob removals, in every serving node "
        "(0 = never).",
    )
    # -- soft delete, trash and retention (issue #11 item 6; services/trash.py, docs/storage-tiers.md) --
    delete_grace_days: float = Field(
        0.0, ge=0,
        description="Days a deleted study stays in the trash, restorable, before it is purged (DICOMweb DELETE and "
        "delete rules without grace_days); 0: deleted at once.",
    )
    iocm_grace_days: float = Field(
        30.0, ge=0,
        description="Days instances hidden by an IHE IOCM rejection note (113001, 113037, 113038) stay restorable "
        "before they are purged; 113039 (retention expired) is purged at once.",
    )
    retention_min_days: int = Field(
        0, ge=0,
        description="Refuse to delete any study whose StudyDate is younger than this many days, or that has no "
        "StudyDate (DICOMweb DELETE answers 409, delete rules skip it); 0: no minimum.",
    )
    allow_anonymous: bool | None = Field(
        None, description="Anonymous HTTP access; default: on only on loopback with no token or OIDC configured."
    )
    cors_origins: list[str] = Field(default_factory=list, description="Origins allowed cross-origin (CORS).")
    max_upload_bytes: int = Field(
        4 * 1024**3,
        description="Largest STOW-RS request body in bytes (413 above it; default 4 GiB, about the largest one "
        "uncompressed DICOM object can be); 0 = no limit.",
    )
    oidc_issuer: str | None = Field(None, description="OIDC issuer whose bearer JWTs are accepted.")
    oidc_audience: str | None = Field(None, description="Expected audience of OIDC JWTs.")
    oidc_jwks_url: str | None = Field(None, description="JWKS URL (default: discovered from the issuer).")
    oidc_client_id: str | None = Field(
        None, description="Client id of the web pages at the OIDC issuer: enables login with the organisation's "
        "account (authorization-code flow with PKCE) beside API tokens.",
    )
    oidc_client_secret: SecretStr | None = Field(
        None, description="Client secret of oidc_client_id, for an issuer that treats the pages as a confidential "
        "client (none for a public client).",
    )
    oidc_redirect_url: str | None = Field(
        None, description="Login callback URL registered at the issuer (default: <this server>/ui/login/oidc/callback "
        "as the browser reached it).",
    )
    # -- HTTP hardening (issue #9): request limits, anonymous access, Host check, proxies, OIDC scopes, HTTPS --
    http_max_header_bytes: int = Field(
        64 * 1024,
        description="Largest HTTP request line plus headers in bytes; a larger request gets 431 and is closed.",
    )
    http_header_timeout: float = Field(
        20.0,
        description="Seconds a client has, from connecting or from the end of its previous request, to send "
        "complete request headers (then 408 and the connection is closed).",
    )
    http_body_timeout: float = Field(
        60.0,
        description="Seconds the server waits for more bytes of a request body it is reading before it closes the "
        "connection.",
    )
    http_max_connections: int = Field(
        1000, description="Concurrent HTTP connections accepted in total; more are answered 503 and closed."
    )
    http_max_connections_per_client: int = Field(
        100,
        description="Concurrent HTTP connections accepted from one client address (reverse proxies listed in "
        "trusted_proxies are exempt); more are answered 503 and closed.",
    )
    anonymous_scopes: list[str] = Field(
        default_factory=lambda: ["read"],
        description="What anonymous HTTP requests may do when anonymous access is on: read, write, delete.",
    )
    allowed_hosts: list[str] = Field(
        default_factory=list,
        description="Host names clients may use in HTTP requests ('*.example.org' allowed; DNS-rebinding "
        "protection); empty: loopback names, IP addresses, the listen address and this machine's name.",
    )
    trusted_proxies: list[str] = Field(
        default_factory=list,
        description="Addresses or networks of reverse proxies whose X-Forwarded-For/-Proto headers are believed.",
    )
    oidc_scope_map: dict[str, str] = Field(
        default_factory=lambda: {"dicomvault.read": "read", "dicomvault.write": "write",
                                 "dicomvault.delete": "delete", "dicomvault.admin": "admin"},
        description="OIDC scope names (matched exactly) and the DicomVault scope (read, write, delete, admin) each "
        "grants.",
    )
    tls_cert: Path | None = Field(
        None, description="PEM certificate (with chain) for HTTPS; with tls_key set, the HTTP port speaks HTTPS only."
    )
    tls_key: Path | None = Field(None, description="PEM private key of tls_cert.")
    tls_client_ca: Path | None = Field(
        None, description="PEM CA certificates: when set, HTTPS clients must present a certificate they signed."
    )
    viewer_dir: Path = Field(
        Path(".viewer/ohif"),
        description="Folder of the OHIF web viewer build served at / (install: `make viewer`); no build, no viewer.",
    )
    web_session_hours: float = Field(
        12.0, gt=0, le=24 * 30,
        description="Longest life of a login to the web pages and the viewer (never past its API token's expiry).",
    )
    share_links_scope: str = Field(
        "write",
        description="Scope a user needs to create share links (read, write, delete, admin); share visitors and "
        "anonymous users never may.",
    )
    share_default_days: float = Field(7.0, gt=0, le=3650, description="Life of a new share link unless chosen.")
    share_max_days: float = Field(
        30.0, gt=0, le=3650, description="Longest life a share link may be given (longer is refused)."
    )
    share_password_attempts: int = Field(
        5, ge=1, le=1000, description="Wrong passwords in a row after which a share link is locked for a while."
    )
    share_lock_minutes: float = Field(
        15.0, gt=0, le=7 * 24 * 60, description="How long a share link stays locked after too many wrong passwords."
    )
    # -- Storage tiers and lifecycle (issue #11; storage_settings.py, services/tiering.py, docs/storage-tiers.md) -
    stores: dict[str, StoreConfig] = Field(
        default_factory=dict,
        description="Named blob stores ([stores.<name>] url = …); the store 'default' is storage_url unless declared.",
    )
    ingest_store: str = Field("default", description="The store new objects are written to.")
    lifecycle: list[LifecycleRule] = Field(
        default_factory=list, description="Lifecycle rules ([[lifecycle]] name, when = {…}, action = {…})."
    )
    lifecycle_interval: float = Field(
        3600.0, ge=0, description="Seconds between lifecycle evaluations by the job worker; 0: only on demand.")
    tier_max_bytes_per_second: int = Field(
        64 * 1024 * 1024, ge=0,
        description="Throttle of background copies (tier moves, replication, repair) per node, bytes/s; 0: none.",
    )
    fixity_interval_days: float = Field(
        7.0, ge=0, description="Days between scheduled fixity scans of every copy on every store (with automatic "
        "repair from intact copies; report in data_dir/fixity/); 0: only `dicomvault verify`.")
    fixity_max_bytes_per_second: int = Field(
        32 * 1024 * 1024, ge=0, description="Read throttle of the scheduled fixity scan per node, bytes/s; 0: none.")
    compress_on_ingest: str = Field(
        "", description="Compress native pixel data losslessly at rest shortly after it is stored: jpeg-ls or "
        "jpeg2000 (a tier job per study, ~30 s after its first instance; docs/storage-tiers.md); empty: only by "
        "lifecycle rules with action = { compress = … }.")
    compression_max_object_bytes: int = Field(
        1 << 30, ge=0, description="Objects larger than this are left uncompressed (compression holds the object, "
        "its frames and the compressed form in memory).")
    compression_processes: int = Field(
        1, ge=1, le=64, description="Processes that encode for compression at rest on each node (the codecs hold "
        "Python's GIL); 1: in the tier job's own thread. More: faster, and that many cores less for the rest.")
    tier_max_concurrent_jobs: int = Field(
        1, ge=1, le=64, description="Tier move / copy / recall jobs one node runs at once.")
    # -- VNA interoperability (issue #12; coercion_settings.py, services/coercion.py, docs/vna.md) ----------------
    coercion: list[CoercionRule] = Field(
        default_factory=list, description="Attribute coercion rules on ingest ([[coercion]] name, when = {…}, set, "
        "replace, remove, prefix, suffix, map, issuer_of_patient_id, character_set).")
    # -- Routing (issue #12 item 3; routing_settings.py, services/routing.py) --
    route: list[RouteRule] = Field(
        default_factory=list, description="Routing rules ([[route]] name, on, when = {…}, to, via, commitment): "
        "forward stored instances or stable studies to known peers.")
    route_reconcile_window: float = Field(
        3600.0, ge=0, description="Seconds of recently stored instances every node's job worker reads back (at "
        "start-up, then as they are stored) to route those a stopped process selected but never recorded; "
        "0 = never.")
    log_level: str = Field("INFO", description="Log level; patient data is logged only at DEBUG.")
    import_workers: int = Field(4, description="Parallel workers for `dicomvault import`.")

    @field_validator("aet")
    @classmethod
    def _check_aet(cls, value: str) -> str:
        value = value.strip()
        if not 0 < len(value) <= 16 or "\\" in value:
            raise ValueError("AE title must be 1-16 characters without backslash")
        return value

    @field_validator("anonymous_scopes")
    @classmethod
    def _check_anonymous_scopes(cls, value: list[str]) -> list[str]:
        scopes = [v.strip().lower() for v in value if v.strip()]
        bad = [s for s in scopes if s not in ("read", "write", "delete")]
        if bad:
            raise ValueError(f"anonymous_scopes: {', '.join(bad)} not allowed (only read, write, delete)")
        return scopes

    @field_validator("share_links_scope")
    @classmethod
    def _check_share_scope(cls, value: str) -> str:
        scope = value.strip().lower()
        if scope not in ("read", "write", "delete", "admin"):
            raise ValueError(f"share_links_scope: {value!r} is not one of read, write, delete, admin")
        return scope

    @field_validator("dimse_peers", mode="before")
    @classmethod
    def _check_peer_titles(cls, value: Any) -> Any:
        if isinstance(value, dict):
            return {check_ae_title(str(aet)): peer for aet, peer in value.items()}
        return value

    @field_validator("move_destinations")
    @classmethod
    def _check_destinations(cls, value: dict[str, str]) -> dict[str, str]:
        for aet, addr in value.items():
            host, _, port = addr.rpartition(":")
            if not host or not port.isdigit():
                raise ValueError(f"move destination {aet}: expected host:port, got {addr!r}")
        return value

    @field_validator("stores", mode="before")
    @classmethod
    def _check_store_names(cls, value: Any) -> Any:
        if isinstance(value, dict):
            for name in value:
                if not STORE_NAME.fullmatch(str(name)):
                    detail = f"store name {name!r}: use 1-32 letters, digits, '-' or '_'"
                    raise located_error(detail, (str(name),), detail)
        return value

    # The stores a rule or ingest_store names must exist: checked on those fields (not on the whole model) so a
    # fault has a location that config_errors can turn into a line of the TOML file. ``stores`` is declared before
    # them, so it is in ``info.data`` once valid (absent when invalid: that fault is reported on its own).
    @field_validator("ingest_store")
    @classmethod
    def _check_ingest_store(cls, value: str, info: ValidationInfo) -> str:
        known = _store_names(info.data.get("stores"))
        if known is not None and value not in known:
            raise ValueError(f"ingest_store {value!r} is not a declared store (declared: {', '.join(known)})")
        return value

    @field_validator("compress_on_ingest")
    @classmethod
    def _check_compress_on_ingest(cls, value: str) -> str:
        value = value.strip().lower()
        if value:
            from dicomvault.dicom.lossless import codec_syntax  # numpy and the codecs: only when configured

            codec_syntax(value)
        return value

    @field_validator("lifecycle")
    @classmethod
    def _check_lifecycle(cls, value: list[LifecycleRule], info: ValidationInfo) -> list[LifecycleRule]:
        known = _store_names(info.data.get("stores"))
        first_of: dict[str, int] = {}
        for index, rule in enumerate(value):
            where = f"lifecycle rule {index + 1} ({rule.name!r})"
            if rule.name in first_of:
                detail = f"another rule (rule {first_of[rule.name] + 1}) has the same name"
                raise located_error(f"{where}: {detail}", (index, "name"), detail)
            first_of[rule.name] = index
            if known is None:
                continue
            action = rule.action
            named = [(("move_to",), action.move_to)] if action.move_to is not None else (
                [(("copy_to",), action.copy_to)] if isinstance(action.copy_to, str)
                else [(("copy_to", n), s) for n, s in enumerate(action.copy_to or ())])
            for at, store in named:
                if store not in known:
                    detail = f"unknown store {store!r} (declared: {', '.join(known)})"
                    raise located_error(f"{where}, action.{at[0]}: {detail}", (index, "action", *at), detail)
        return value

    @field_validator("route")
    @classmethod
    def _check_routes(cls, value: list[RouteRule]) -> list[RouteRule]:
        first_of: dict[str, int] = {}
        for index, rule in enumerate(value):
            if rule.name in first_of:
                detail = f"another route (entry {first_of[rule.name] + 1}) has the same name"
                raise located_error(f"route {index + 1} ({rule.name!r}): {detail}", (index, "name"), detail)
            first_of[rule.name] = index
        return value

    @property
    def config_file(self) -> Path | None:
        """The TOML file these settings were read from, if any (messages naming a line of it)."""
        return self._config_file

    def resolved_stores(self) -> dict[str, StoreConfig]:
        """Every named store: the declared ones, and ``default`` (``storage_url`` or ``data_dir/blobs``) unless
        declared, so a single-store archive keeps its store under the name its index copies were recorded with."""
        stores = dict(self.stores)
        if DEFAULT_STORE not in stores:
            stores = {DEFAULT_STORE: StoreConfig.model_validate({"url": self.resolved_storage_url}), **stores}
        return stores

    @property
    def resolved_index_url(self) -> str:
        return self.index_url or f"sqlite:///{(self.data_dir / 'index.sqlite').resolve()}"

    @property
    def resolved_dimse_max_connections(self) -> int:
        """``dimse_max_connections``, or ``max_associations`` + 32 when unset: the margin lets a peer arriving when
        every association slot is taken still read an A-ASSOCIATE-RJ "local limit exceeded" (retry later) instead
        of a bare close, and leaves room for connections still negotiating (at most ARTIM seconds each)."""
        return self.dimse_max_connections or self.max_associations + 32

    @property
    def resolved_dimse_workers(self) -> int:
        """``dimse_workers``, with 0 resolved to this machine's CPU cores (at most ``MAX_DIMSE_WORKERS``)."""
        return self.dimse_workers or max(1, min(os.cpu_count() or 1, MAX_DIMSE_WORKERS))

    @property
    def resolved_storage_url(self) -> str:
        return self.storage_url or f"file://{(self.data_dir / 'blobs').resolve()}"

    def destination(self, aet: str) -> tuple[str, int] | None:
        addr = self.move_destinations.get(aet.strip())
        if addr is None:
            return None
        host, _, port = addr.rpartition(":")
        return host, int(port)

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        env_file = os.environ.get("DICOMVAULT_CONFIG")
        toml = cls._toml_file or (Path(env_file) if env_file else None)
        if toml is not None:
            sources.append(TomlConfigSettingsSource(settings_cls, toml_file=toml))
        return tuple(sources)

    @classmethod
    def load(cls, config_file: Path | None = None, **overrides: Any) -> Settings:
        """Build settings from flags (``overrides``, None values ignored), environment and TOML file."""
        if config_file is not None and not Path(config_file).is_file():
            raise FileNotFoundError(f"config file {config_file} not found")
        cls._toml_file = Path(config_file) if config_file else None
        try:
            loaded = cls(**{k: v for k, v in overrides.items() if v is not None})
            env_file = os.environ.get("DICOMVAULT_CONFIG")
            loaded._config_file = cls._toml_file or (Path(env_file) if env_file else None)
            return loaded
        finally:
            cls._toml_file = None
