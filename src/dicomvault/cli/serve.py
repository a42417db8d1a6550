"""``dicomvault serve``: the DIMSE server and the HTTP (DICOMweb) server over one archive, in one process.

Start-up order: settings → logging → archive (migrations) → HTTP app (refuses unsafe settings before any port
is opened) → DIMSE server (non-blocking) → background job worker → uvicorn in the foreground. uvicorn turns
SIGINT/SIGTERM into a graceful shutdown (in-flight requests finish); then the job worker and the DIMSE server are
stopped, the index is closed, and the process exits 0. Nothing is acknowledged before ingest returns, so even
SIGKILL loses no acknowledged object.
"""

from __future__ import annotations

import gc
import logging
import signal
from pathlib import Path
from types import FrameType
from typing import Annotated

import typer
import uvicorn
from rich.panel import Panel

from dicomvault.bootstrap import Archive
from dicomvault.cli.allocator import tune_allocator
from dicomvault.cli.common import (
    ConfigFile,
    DataDir,
    IndexUrl,
    StorageUrl,
    console,
    fail,
    load_settings,
    open_archive,
    redact_url,
)
from dicomvault.dicomweb.app import create_app
from dicomvault.dicomweb.http_server import uvicorn_config
from dicomvault.domain.errors import ConfigurationError
from dicomvault.logging_setup import configure_logging
from dicomvault.services.warmup import warm_up
from dicomvault.settings import Settings

log = logging.getLogger(__name__)


def parse_destinations(values: list[str] | None) -> dict[str, str] | None:
    """``AET=HOST:PORT`` flags → the ``move_destinations`` mapping (None when no flag was given)."""
    if not values:
        return None
    out: dict[str, str] = {}
    for value in values:
        aet, sep, addr = value.partition("=")
        host, _, port = addr.rpartition(":")
        if not sep or not aet.strip() or not host or not port.isdigit():
            fail(f"--move-destination expects AET=HOST:PORT, got {value!r}")
        out[aet.strip()] = addr.strip()
    return out


def banner(settings: Settings, storage: str) -> Panel:
    host = settings.host if ":" not in settings.host else f"[{settings.host}]"
    lines = [
        f"[bold]AE title[/bold]   {settings.aet}",
        f"[bold]DIMSE[/bold]      {settings.host}:{settings.dimse_port}",
        f"[bold]HTTP[/bold]       {'https' if settings.tls_cert else 'http'}://{host}:{settings.http_port}/dicom-web"
        + (" (client certificates required)" if settings.tls_client_ca else ""),
        f"[bold]Index[/bold]      {redact_url(settings.resolved_index_url)}",
        f"[bold]Storage[/bold]    {storage}",
    ]
    if settings.move_destinations:
        dests = ", ".join(f"{a}={h}" for a, h in sorted(settings.move_destinations.items()))
        lines.append(f"[bold]C-MOVE to[/bold]  {dests}")
    if settings.dimse_tls_port is not None:
        lines.insert(2, f"[bold]DICOM TLS[/bold]  {settings.host}:{settings.dimse_tls_port}")
    return Panel("\n".join(lines), title="DicomVault", expand=False)


def serve_command(
    data_dir: DataDir = None,
    host: Annotated[str | None, typer.Option("--host", help="Listen address of both servers.")] = None,
    dimse_port: Annotated[int | None, typer.Option("--dimse-port", help="DIMSE port.")] = None,
    http_port: Annotated[int | None, typer.Option("--http-port", help="HTTP (DICOMweb) port.")] = None,
    aet: Annotated[str | None, typer.Option("--aet", help="The archive's AE title.")] = None,
    move_destination: Annotated[list[str] | None, typer.Option(
        "--move-destination", help="C-MOVE destination AET=HOST:PORT (repeatable).")] = None,
    config: ConfigFile = None,
    index_url: IndexUrl = None,
    storage_url: StorageUrl = None,
    allow_anonymous: Annotated[bool | None, typer.Option(
        "--allow-anonymous/--no-anonymous", help="Allow unauthenticated HTTP access (default: loopback only).")] = None,
    log_level: Annotated[str | None, typer.Option(
        "--log-level", help="DEBUG, INFO, WARNING, ERROR (patient data only at DEBUG).")] = None,
    tls_cert: Annotated[Path | None, typer.Option(
        "--tls-cert", help="PEM certificate (chain): serve HTTPS (TLS 1.2+) instead of HTTP.")] = None,
    tls_key: Annotated[Path | None, typer.Option("--tls-key", help="PEM private key of --tls-cert.")] = None,
    tls_client_ca: Annotated[Path | None, typer.Option(
        "--tls-client-ca", help="PEM CA certificates: require HTTPS clients to present a certificate they signed.")
    ] = None,
    dimse_tls_port: Annotated[int | None, typer.Option(
        "--dimse-tls-port", help="DICOM TLS port (customarily 2762); with --dimse-tls-cert/--dimse-tls-key.")] = None,
    dimse_tls_cert: Annotated[Path | None, typer.Option(
        "--dimse-tls-cert", help="DICOM TLS certificate chain (PEM).")] = None,
    dimse_tls_key: Annotated[Path | None, typer.Option("--dimse-tls-key", help="DICOM TLS private key (PEM).")] = None,
) -> None:
    """Run the archive: DIMSE (C-ECHO/STORE/FIND/GET/MOVE) and DICOMweb over HTTP. Stop with Ctrl-C or SIGTERM.

    Exit code 2 when the configuration is refused (e.g. a public address without authentication, or DIMSE open to
    any calling AE title on a public address).
    """
    settings = load_settings(
        config, data_dir=data_dir, host=host, dimse_port=dimse_port, http_port=http_port, aet=aet,
        move_destinations=parse_destinations(move_destination), index_url=index_url, storage_url=storage_url,
        allow_anonymous=allow_anonymous, log_level=log_level, tls_cert=tls_cert, tls_key=tls_key,
        tls_client_ca=tls_client_ca,
        dimse_tls_port=dimse_tls_port, dimse_tls_cert=dimse_tls_cert, dimse_tls_key=dimse_tls_key,
    )
    try:
        configure_logging(settings.log_level)
    except ValueError as exc:
        fail(str(exc))
    tune_allocator()
    archive = open_archive(settings)
    warm_up(archive.index, archive.query)
    try:
        _run(archive, settings)
    finally:
        archive.close()


def _run(archive: Archive, settings: Settings) -> None:
    try:
        app = create_app(archive)
        config = uvicorn_config(
            app, settings, lifespan="on", log_config=None, log_level=settings.log_level.lower(), access_log=False,
            timeout_graceful_shutdown=10,
        )
    except ConfigurationError as exc:
        fail(f"refusing to start: {exc.message}")
    # Imported here so that the other subcommands do not pay for (or depend on) the DIMSE stack.
    from dicomvault.dimse.server import DimseServer

    try:
        dimse = DimseServer(archive)
    except ConfigurationError as exc:
        fail(f"refusing to start: {exc.message}")
    try:
        dimse.start()
    except OSError as exc:
        fail(f"cannot start the DIMSE server on {settings.host}:{settings.dimse_port}: {exc}")
    # The background job worker (storage migration and other durable jobs) runs in every serving node.
    from dicomvault.jobs.worker import start_worker

    worker = None
    server = uvicorn.Server(config)

    def request_exit(signum: int, frame: FrameType | None) -> None:
        # Outside uvicorn's own handlers (start-up, and the re-raise uvicorn does after its graceful shutdown):
        # ask for shutdown instead of dying, so that the DIMSE server is stopped and the index closed.
        server.should_exit = True

    previous = {sig: signal.signal(sig, request_exit) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        worker = start_worker(archive) if archive.jobs is not None else None
        # Everything built so far lives as long as the process: keep it out of the garbage collector's
        # generations, whose full collections otherwise cost ~50 ms pauses on query latency (p99).
        gc.collect()
        gc.freeze()
        console.print(banner(settings, archive.blobs.describe()))
        server.run()
        if not server.started and not server.should_exit:
            fail(f"cannot start the HTTP server on {settings.host}:{settings.http_port}")
    finally:
        if worker is not None:
            worker.stop()
        dimse.stop()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        log.info("DicomVault stopped")
