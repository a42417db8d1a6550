"""Configuration: one ``Settings`` object built once at start-up and passed down (never a module global).

Sources, highest priority first: command-line flags, environment variables (``DICOMVAULT_<NAME>``), an optional
TOML file (``--config`` or ``DICOMVAULT_CONFIG``), defaults. Every field is documented in README's table.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, ClassVar

from pydantic import Field, field_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from dicomvault.domain.records import DuplicatePolicy


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="DICOMVAULT_", extra="ignore", env_nested_delimiter="__")
    _toml_file: ClassVar[Path | None] = None

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
        default_factory=list, description="If not empty, only these calling AE titles may associate."
    )
    duplicate_policy: DuplicatePolicy = Field(
        DuplicatePolicy.REJECT,
        description="Same SOP Instance UID, different content: reject (warning status), replace, or keep-both.",
    )
    max_pdu: int = Field(4 * 1024 * 1024, description="Maximum PDU length the DIMSE server receives (bytes).")
    max_associations: int = Field(64, description="Concurrent DIMSE associations accepted.")
    dimse_timeout: float = Field(
        60.0, gt=0,
        description="Seconds each DIMSE PDU may take to arrive (or be sent) completely; also the wait for a reply.",
    )
    dimse_fast_store: bool = Field(
        True,
        description="Serve storage-only associations with the lean receiver; false: everything through pynetdicom.",
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
    index_pool_size: int = Field(10, description="Database connection pool size per process.")
    fsync: bool = Field(True, description="fsync blobs and directories before acknowledging (keep on).")
    allow_anonymous: bool | None = Field(
        None, description="Anonymous HTTP access; default: on only on loopback with no token or OIDC configured."
    )
    cors_origins: list[str] = Field(default_factory=list, description="Origins allowed cross-origin (CORS).")
    max_upload_bytes: int = Field(
        0, description="Largest STOW-RS request body in bytes (413 above it); 0 = no limit."
    )
    oidc_issuer: str | None = Field(None, description="OIDC issuer whose bearer JWTs are accepted.")
    oidc_audience: str | None = Field(None, description="Expected audience of OIDC JWTs.")
    oidc_jwks_url: str | None = Field(None, description="JWKS URL (default: discovered from the issuer).")
    viewer_dir: Path = Field(
        Path(".viewer/ohif"),
        description="Folder of the OHIF web viewer build served at / (install: `make viewer`); no build, no viewer.",
    )
    log_level: str = Field("INFO", description="Log level; patient data is logged only at DEBUG.")
    import_workers: int = Field(4, description="Parallel workers for `dicomvault import`.")

    @field_validator("aet")
    @classmethod
    def _check_aet(cls, value: str) -> str:
        value = value.strip()
        if not 0 < len(value) <= 16 or "\\" in value:
            raise ValueError("AE title must be 1-16 characters without backslash")
        return value

    @field_validator("move_destinations")
    @classmethod
    def _check_destinations(cls, value: dict[str, str]) -> dict[str, str]:
        for aet, addr in value.items():
            host, _, port = addr.rpartition(":")
            if not host or not port.isdigit():
                raise ValueError(f"move destination {aet}: expected host:port, got {addr!r}")
        return value

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
            return cls(**{k: v for k, v in overrides.items() if v is not None})
        finally:
            cls._toml_file = None
