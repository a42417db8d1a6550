"""``dicomvault routes``: what routing forwarded to each destination, and a manual retry (issue #12 item 3).

    dicomvault routes status [--json]           # per destination: waiting, queued, sending, sent, confirmed, failed
    dicomvault routes retry [--destination AET] # failed deliveries queued again (a running server sends them)

Routes themselves are ``[[route]]`` entries of the configuration file (``routing_settings``); deliveries are rows
of the index, so every node shows the same status.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Annotated

import typer
from rich.table import Table

from dicomvault.cli.common import ConfigFile, DataDir, IndexUrl, StorageUrl, console, fail, load_settings, open_archive
from dicomvault.domain.errors import DicomVaultError
from dicomvault.domain.routing import DeliveryState
from dicomvault.services.routing import RoutingService

app = typer.Typer(help="Routing: delivery status per destination, manual retry.", no_args_is_help=True)


@contextmanager
def _routing(config: ConfigFile, data_dir: DataDir, index_url: IndexUrl,
             storage_url: StorageUrl) -> Iterator[RoutingService]:
    archive = open_archive(load_settings(config, data_dir=data_dir, index_url=index_url, storage_url=storage_url),
                           create=False)
    try:
        if archive.routing is None:
            fail("this archive has no routing")
        yield archive.routing
    except DicomVaultError as exc:
        fail(f"error: {exc.message}", 1)
    finally:
        archive.close()


@app.command("status")
def status_command(
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")] = False,
    config: ConfigFile = None, data_dir: DataDir = None, index_url: IndexUrl = None, storage_url: StorageUrl = None,
) -> None:
    """Instances per destination and state, with the latest error of an instance not delivered."""
    with _routing(config, data_dir, index_url, storage_url) as routing:
        found = routing.status()
        routes = [{"name": r.name, "on": r.on, "to": r.destination, "via": r.via, "commitment": r.commitment}
                  for r in routing.routes]
    if as_json:
        typer.echo(json.dumps({"routes": routes, "destinations": [s.as_dict() for s in found]}, indent=2))
        return
    if not found:
        console.print("nothing routed yet" + ("" if routes else " (no [[route]] in the configuration)"))
        return
    table = Table(title="Routing deliveries")
    table.add_column("destination")
    for state in DeliveryState:
        table.add_column(state.value, justify="right")
    table.add_column("last error")
    for s in found:
        error = f"{s.last_error} ({s.last_error_at:%Y-%m-%d %H:%M:%S})" if s.last_error and s.last_error_at else ""
        table.add_row(s.destination, *(str(s.counts.get(state.value, 0)) for state in DeliveryState), error)
    console.print(table)


@app.command("retry")
def retry_command(
    destination: Annotated[str | None, typer.Option("--destination", help="Only this destination (AE title).")] = None,
    config: ConfigFile = None, data_dir: DataDir = None, index_url: IndexUrl = None, storage_url: StorageUrl = None,
) -> None:
    """Queue failed deliveries again (a running server's job worker sends them)."""
    with _routing(config, data_dir, index_url, storage_url) as routing:
        studies = routing.retry(destination)
    where = f" to {destination.strip()}" if destination else ""
    console.print(f"{studies} studies queued again{where}" if studies else f"no failed deliveries{where}")
