"""``dicomvault serve``: the DIMSE server and the HTTP (DICOMweb) server over one archive, in one process (plus,
with the ``dimse_workers`` setting above 1, DIMSE worker processes accepting on the same port: ``dimse_workers``
module).

Start-up order: settings → logging → archive (migrations) → HTTP app (refuses unsafe settings before any port
is opened; the web viewer is mounted here, next to the API, not by the API) → DIMSE server (non-blocking) → DIMSE
worker processes, if any → background job worker → uvicorn in the foreground.

Stopping (``Shutdown``; the same handler whether uvicorn is running or not, since uvicorn would otherwise own
SIGINT/SIGTERM while it runs): the first SIGINT or SIGTERM starts a graceful stop of both servers at once — uvicorn
stops accepting and lets requests in flight finish (``HTTP_GRACE``), the DIMSE server stops accepting, closes
idle and half-open connections at once and gives stores in flight ``dimse_shutdown_grace`` seconds — then the job
worker is stopped, the index closed, and the process exits 0. A second signal exits at once (``os._exit``, status
128 + signal number). Nothing is acknowledged before ingest returns, so neither that nor SIGKILL loses an
acknowledged object. DIMSE worker processes get the first signal as SIGTERM (the same graceful stop, waited for) and
are killed on the second.
"""

from __future__ import annotations

import gc
import logging
import os
import signal
import sys
import threading
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Annotated

import typer
import uvicorn
from fastapi import FastAPI
from rich.panel import Panel

from dicomvault.bootstrap import Archive
from dicomvault.cli import discovery
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
from dicomvault.cli.dimse_workers import DimseWorkers
from dicomvault.dicomweb.app import create_app
from dicomvault.dicomweb.http_server import uvicorn_config
from dicomvault.domain.errors import ConfigurationError
from dicomvault.logging_setup import configure_logging
from dicomvault.settings import Settings
from dicomvault.webui import mount_viewer
from dicomvault.webui.pages import mount_pages
from dicomvault.webui.viewer import installed

if TYPE_CHECKING:
    from dicomvault.dimse.server import DimseServer

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


def banner(settings: Settings, storage: str, processes: int = 1) -> Panel:
    host = settings.host if ":" not in settings.host else f"[{settings.host}]"
    base = f"{'https' if settings.tls_cert else 'http'}://{host}:{settings.http_port}"
    lines = [
        f"[bold]AE title[/bold]   {settings.aet}",
        f"[bold]DIMSE[/bold]      {settings.host}:{settings.dimse_port}"
        + (f" ({processes} processes)" if processes > 1 else ""),
        f"[bold]DICOMweb[/bold]   {base}/dicom-web"
        + (" (client certificates required)" if settings.tls_client_ca else ""),
        f"[bold]Pages[/bold]      {base}/ui/",
        f"[bold]Viewer[/bold]     {base}/" + ("" if installed(settings.viewer_dir) else " (run: make viewer)"),
        f"[bold]Index[/bold]      {redact_url(settings.resolved_index_url)}",
        f"[bold]Storage[/bold]    {storage}",
    ]
    if settings.move_destinations:
        dests = ", ".join(f"{a}={h}" for a, h in sorted(settings.move_destinations.items()))
        lines.append(f"[bold]C-MOVE to[/bold]  {dests}")
    if settings.dimse_tls_port is not None:
        lines.insert(2, f"[bold]DICOM TLS[/bold]  {settings.host}:{settings.dimse_tls_port}")
    return Panel("\n".join(lines), title="DicomVault", expand=False)


#: Seconds uvicorn gives HTTP requests in flight after the first signal.
HTTP_GRACE = 10


class Shutdown:
    """Both servers' reaction to SIGINT/SIGTERM (see the module doc). ``signal`` runs in the main thread between
    two bytecodes (a Python signal handler): it only sets flags and starts a thread, never blocks."""

    def __init__(self, http: uvicorn.Server, dimse: DimseServer, workers: DimseWorkers | None = None) -> None:
        self.http = http
        self.dimse = dimse
        #: DIMSE worker processes, when ``dimse_workers`` > 1 (set once they are started)
        self.workers = workers
        self.requested = False
        self.dimse_stopper: threading.Thread | None = None

    def signal(self, signum: int, frame: FrameType | None = None) -> None:
        name = signal.Signals(signum).name
        if self.requested:
            log.warning("%s again: exiting now without waiting (stores not yet answered were not acknowledged; "
                        "their senders will retry)", name)
            if self.workers is not None:
                self.workers.kill()
            for handler in logging.getLogger().handlers:
                handler.flush()
            sys.stderr.flush()
            os._exit(128 + signum)
        self.requested = True
        log.info("%s received: stopping (send it again to exit at once)", name)
        self.http.should_exit = True
        self.start_dimse_stop()

    def start_dimse_stop(self) -> None:
        """Stop the DIMSE server in the background (at most once), concurrently with uvicorn's own shutdown."""
        if self.dimse_stopper is None:
            self.dimse_stopper = threading.Thread(target=self._stop_dimse, name="DimseStop", daemon=True)
            self.dimse_stopper.start()

    def _stop_dimse(self) -> None:
        """The worker processes and this process's DIMSE server stop at the same time, with the same grace."""
        workers = self.workers
        if workers is not None:
            workers.request_stop()
        self.dimse.stop()
        if workers is not None:
            workers.wait()

    def finish_dimse_stop(self) -> None:
        """Wait for the DIMSE stop (bounded by its grace period), starting it if no signal did."""
        self.start_dimse_stop()
        assert self.dimse_stopper is not None
        self.dimse_stopper.join()


class _Uvicorn(uvicorn.Server):
    """uvicorn's server with its signal handling replaced by ``Shutdown`` (uvicorn installs ``handle_exit`` for
    SIGINT/SIGTERM while it runs, and re-raises the signals it caught once it is done)."""

    shutdown_handler: Shutdown | None = None

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        if self.shutdown_handler is not None:
            self.shutdown_handler.signal(sig, frame)
        else:
            super().handle_exit(sig, frame)


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
    dimse_workers: Annotated[int | None, typer.Option(
        "--dimse-workers", help="Processes accepting DIMSE on the port (1: this one only; 0: one per CPU core).")
    ] = None,
) -> None:
    """Run the archive: DIMSE (C-ECHO/STORE/FIND/GET/MOVE) and DICOMweb over HTTP. Stop with Ctrl-C or SIGTERM.

    Exit code 2 when the configuration is refused (e.g. a public address without authentication, or DIMSE open to
    any calling AE title on a public address).
    """
    settings = load_settings(
        config, use_record=False, data_dir=data_dir, host=host, dimse_port=dimse_port, http_port=http_port, aet=aet,
        move_destinations=parse_destinations(move_destination), index_url=index_url, storage_url=storage_url,
        allow_anonymous=allow_anonymous, log_level=log_level, tls_cert=tls_cert, tls_key=tls_key,
        tls_client_ca=tls_client_ca,
        dimse_tls_port=dimse_tls_port, dimse_tls_cert=dimse_tls_cert, dimse_tls_key=dimse_tls_key,
        dimse_workers=dimse_workers,
    )
    try:
        configure_logging(settings.log_level)
    except ValueError as exc:
        fail(str(exc))
    tune_allocator()
    archive = open_archive(settings)
    archive.warm_up()
    try:
        _run(archive, settings)
    finally:
        archive.close()


def http_app(archive: Archive) -> FastAPI:
    """The HTTP app ``serve`` runs: the DICOMweb API and, when it is installed, the web viewer at ``/``.

    Why here: the viewer is a front end of its own that reads the API like any client; composing the two is the
    command's job, so the DICOMweb package never imports the viewer (an import-linter contract checks it).
    """
    app = create_app(archive)
    mount_pages(app)
    mount_viewer(app, archive.settings)
    return app


def _run(archive: Archive, settings: Settings) -> None:
    try:
        app = http_app(archive)
        config = uvicorn_config(
            app, settings, lifespan="on", log_config=None, log_level=settings.log_level.lower(), access_log=False,
            timeout_graceful_shutdown=HTTP_GRACE,
        )
    except ConfigurationError as exc:
        fail(f"refusing to start: {exc.message}")
    # Imported here so that the other subcommands do not pay for (or depend on) the DIMSE stack.
    from dicomvault.dimse.server import DimseServer

    processes = settings.resolved_dimse_workers
    try:
        dimse = DimseServer(archive, processes=processes)
    except ConfigurationError as exc:
        fail(f"refusing to start: {exc.message}")
    try:
        dimse.start()
    except OSError as exc:
        fail(f"cannot start the DIMSE server on {settings.host}:{settings.dimse_port}: {exc}")
    # The background job worker (storage migration and other durable jobs) runs in every serving node.
    from dicomvault.jobs.worker import start_worker

    worker = None
    recorded = False
    server = _Uvicorn(config)
    shutdown = Shutdown(server, dimse)
    server.shutdown_handler = shutdown
    previous = {sig: signal.signal(sig, shutdown.signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        if processes > 1:
            shutdown.workers = DimseWorkers(settings, dimse.listening_socket, processes)
            shutdown.workers.start()
        worker = start_worker(archive) if archive.jobs is not None else None
        # Everything built so far lives as long as the process: keep it out of the garbage collector's
        # generations, whose full collections otherwise cost ~50 ms pauses on query latency (p99).
        gc.collect()
        gc.freeze()
        console.print(banner(settings, archive.status.storage(), processes))
        # where this archive is, for the other commands run by this user (cli.discovery)
        recorded = discovery.write_record(discovery.ServerRecord.of(settings, redact_url)) is not None
        server.run()
        if not server.started and not server.should_exit:
            fail(f"cannot start the HTTP server on {settings.host}:{settings.http_port}")
    finally:
        shutdown.finish_dimse_stop()
        if shutdown.workers is not None:
            shutdown.workers.stop()  # already done, unless a signal came before they were started
        if worker is not None:
            worker.stop()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        if recorded:
            discovery.mark_stopped(os.getpid())
        log.info("DicomVault stopped")
