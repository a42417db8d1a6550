"""``dicomvault peers``: the remote systems the archive knows (issue #12), kept in the index so that every node of a
cluster sees the same list.

    dicomvault peers add PACS1 --host 10.0.0.5 --port 104 --permission store --permission query --move-destination
    dicomvault peers add ORTHANC --host 127.0.0.1 --port 4242 --dicomweb-url http://127.0.0.1:8042/dicom-web
    dicomvault peers list [--json]
    dicomvault peers echo PACS1          # C-ECHO (and QIDO-RS when a DICOMweb URL is known), with the round trip
    dicomvault peers remove PACS1

Peers declared in the configuration file (``dimse_peers``, ``move_destinations``) are listed too (source
``config``) and are changed there. A change takes effect on running servers within a second.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Annotated

import typer
from rich.table import Table

from dicomvault.cli.common import ConfigFile, DataDir, IndexUrl, console, fail, load_settings, open_archive
from dicomvault.domain.errors import Conflict, DicomVaultError, NotFound
from dicomvault.domain.peers import Permission, RemotePeer
from dicomvault.services.peers import PeerService

app = typer.Typer(help="Remote systems: PACS, modalities, viewers (add, list, echo, remove).", no_args_is_help=True)


@contextmanager
def _peers(config: ConfigFile, data_dir: DataDir, index_url: IndexUrl, *,
           create: bool = False) -> Iterator[PeerService]:
    """The peer service of the archive; ``create``: the archive may be created (``peers add`` only)."""
    archive = open_archive(load_settings(config, data_dir=data_dir, index_url=index_url), create=create)
    try:
        if archive.peers is None:
            fail("this archive has no peer registry")
        yield archive.peers
    except (ValueError, Conflict, NotFound) as exc:
        fail(f"error: {exc.message if isinstance(exc, DicomVaultError) else exc}", 1)
    except DicomVaultError as exc:
        fail(f"error: {exc.message}", 1)
    finally:
        archive.close()


@app.command("add")
def add_command(
    aet: Annotated[str, typer.Argument(help="The peer's AE title.")],
    host: Annotated[str, typer.Option("--host", help="Where the archive reaches it (name or address).")] = "",
    port: Annotated[int, typer.Option("--port", help="Its DIMSE port.")] = 0,
    permission: Annotated[list[Permission] | None, typer.Option(
        "--permission", "-p", help="What it may ask of the archive when it associates (repeatable): store, query, "
        "retrieve. None: C-ECHO only.")] = None,
    move_destination: Annotated[bool, typer.Option(
        "--move-destination", help="C-MOVE may send to it (needs --host and --port).")] = False,
    allow_from: Annotated[list[str] | None, typer.Option(
        "--allow-from", help="Addresses or networks it may connect from (repeatable; default: anywhere).")] = None,
    tls: Annotated[bool, typer.Option("--tls", help="It must associate over DICOM TLS.")] = False,
    dicomweb_url: Annotated[str | None, typer.Option(
        "--dicomweb-url", help="Its DICOMweb base URL (QIDO-RS/WADO-RS/STOW-RS), e.g. http://host:8042/dicom-web.")
    ] = None,
    dicomweb_token: Annotated[str | None, typer.Option(
        "--dicomweb-token", help="Bearer token presented to its DICOMweb service (never listed).",
        envvar="DICOMVAULT_PEER_DICOMWEB_TOKEN")] = None,
    transfer_syntax: Annotated[list[str] | None, typer.Option(
        "--transfer-syntax", help="Transfer syntax UID it prefers to receive (repeatable, in order).")] = None,
    description: Annotated[str, typer.Option("--description", help="Free text (site, vendor).")] = "",
    config: ConfigFile = None, data_dir: DataDir = None, index_url: IndexUrl = None,
) -> None:
    """Register a peer, or replace its definition."""
    peer = RemotePeer(aet=aet, host=host, port=port, permissions=frozenset(permission or ()),
                      move_destination=move_destination, hosts=tuple(allow_from or ()), tls=tls,
                      dicomweb_url=dicomweb_url, dicomweb_token=dicomweb_token,
                      transfer_syntaxes=tuple(transfer_syntax or ()), description=description)
    with _peers(config, data_dir, index_url, create=True) as peers:
        created = peers.add(peer)
    console.print(f"peer {aet.strip()} {'added' if created else 'updated'}")


@app.command("list")
def list_command(
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")] = False,
    config: ConfigFile = None, data_dir: DataDir = None, index_url: IndexUrl = None,
) -> None:
    """Every known peer: registered ones and those of the configuration file."""
    with _peers(config, data_dir, index_url) as peers:
        found = peers.all()
    if as_json:
        typer.echo(json.dumps([p.public() for p in found], indent=2))
        return
    if not found:
        console.print("no peers known (dicomvault peers add AET --host HOST --port PORT)")
        return
    table = Table(title="Peers")
    for column in ("AE title", "DIMSE", "may", "move dest.", "from", "DICOMweb", "source"):
        table.add_column(column)
    for p in found:
        table.add_row(p.aet, f"{p.host}:{p.port}" if p.reachable else "-",
                      ", ".join(sorted(x.value for x in p.permissions)) or "echo", "yes" if p.move_destination else "",
                      ", ".join(p.hosts) or "anywhere", p.dicomweb_url or "", p.source)
    console.print(table)


@app.command("remove")
def remove_command(
    aet: Annotated[str, typer.Argument(help="The peer's AE title.")],
    config: ConfigFile = None, data_dir: DataDir = None, index_url: IndexUrl = None,
) -> None:
    """Remove a registered peer (associations from it are then treated as from an unknown AE title)."""
    with _peers(config, data_dir, index_url) as peers:
        peers.remove(aet)
    console.print(f"peer {aet.strip()} removed")


@app.command("echo")
def echo_command(
    aet: Annotated[str, typer.Argument(help="The peer's AE title.")],
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
    config: ConfigFile = None, data_dir: DataDir = None, index_url: IndexUrl = None,
) -> None:
    """C-ECHO the peer (and query its DICOMweb service when a URL is known); exit 1 if any check fails."""
    with _peers(config, data_dir, index_url) as peers:
        results = peers.echo(aet)
    if not results:
        fail(f"peer {aet.strip()} has neither a DIMSE address nor a DICOMweb URL to check", 1)
    if as_json:
        typer.echo(json.dumps({k: {"ok": r.ok, "ms": round(r.milliseconds, 1), "detail": r.detail}
                               for k, r in results.items()}, indent=2))
    else:
        for protocol, r in results.items():
            colour = "green" if r.ok else "red"
            console.print(f"[{colour}]{protocol}: {'ok' if r.ok else 'FAILED'}[/{colour}] {r.detail} "
                          f"({r.milliseconds:.1f} ms)")
    if not all(r.ok for r in results.values()):
        raise typer.Exit(1)
