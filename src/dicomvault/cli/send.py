"""``dicomvault send STUDY_UID --to AE|URL``: send a stored study (or one series) to a peer now.

Why through ``RoutingService.send_now``: the same path as a routed delivery — the peer's preferred transfer
syntaxes first, a conversion only when it accepts none the archive holds, one association (C-STORE) or one STOW-RS
request per batch — without a route, a ledger row or a job: the operator watches it and reads the outcome.

``--to`` is the AE title of a known peer (``dicomvault peers list``: registered, or ``dimse_peers`` /
``move_destinations`` in the configuration file), sent to by C-STORE when it has a host and port, else by STOW-RS
to its DICOMweb URL; or a DICOMweb base URL (``http(s)://host/dicom-web``), sent to by STOW-RS (``--token`` gives
a bearer token). A progress line on stderr, then a summary; failures are listed per instance (grouped by reason).

Exit codes: 0 every instance sent; 1 some or all failed (or nothing matched, or the peer cannot be reached); 2 no
archive, an unknown peer or a configuration problem.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Annotated

import typer
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

from dicomvault.cli.common import (
    ConfigFile,
    DataDir,
    IndexUrl,
    StorageUrl,
    console,
    err,
    fail,
    load_settings,
    open_archive,
)
from dicomvault.domain.errors import DicomVaultError, NotFound
from dicomvault.domain.peers import RemotePeer
from dicomvault.ports.forwarding import SendReport
from dicomvault.services.archive import Archive
from dicomvault.services.peers import PeerService

#: Instances per association / STOW-RS request (as a routed delivery).
BATCH = 200
#: Failed instances listed per reason.
EXAMPLES = 5


def destination(peers: PeerService | None, to: str, via: str | None, token: str | None) -> tuple[RemotePeer, str]:
    """The peer and the protocol for ``--to``; exits 2 when it is unknown or cannot be reached as asked."""
    to = to.strip()
    if to.startswith(("http://", "https://")):
        if via == "dimse":
            fail("--via dimse needs an AE title, not a URL")
        return RemotePeer(aet="DICOMWEB", dicomweb_url=to.rstrip("/"), dicomweb_token=token), "dicomweb"
    if peers is None:
        fail("this archive has no peer registry")
    try:
        peer = peers.get(to)
    except NotFound:
        known = ", ".join(p.aet for p in peers.all()) or "none"
        fail(f"unknown peer {to!r} (known: {known}; dicomvault peers add, or pass a DICOMweb URL)")
    if token:
        fail("--token applies to a URL; a peer's token is part of its registration (dicomvault peers add)")
    chosen = via or ("dimse" if peer.reachable else "dicomweb" if peer.dicomweb_url else "")
    if chosen == "dimse" and not peer.reachable:
        fail(f"peer {peer.aet} has no host and port")
    if chosen == "dicomweb" and not peer.dicomweb_url:
        fail(f"peer {peer.aet} has no DICOMweb URL")
    if not chosen:
        fail(f"peer {peer.aet} has neither a host and port nor a DICOMweb URL")
    return peer, chosen


def _send(archive: Archive, peer: RemotePeer, via: str, sop_uids: list[str]) -> SendReport:
    assert archive.routing is not None
    total = SendReport()
    where = f"{peer.aet} (C-STORE)" if via == "dimse" else f"{peer.dicomweb_url} (STOW-RS)"
    with Progress(TextColumn("sending to {task.fields[where]}"), BarColumn(), MofNCompleteColumn(),
                  TextColumn("{task.fields[failed]} failed"), console=err, transient=False) as progress:
        task = progress.add_task("send", total=len(sop_uids), where=where, failed=0)
        for start in range(0, len(sop_uids), BATCH):
            batch = sop_uids[start:start + BATCH]
            try:
                report = archive.routing.send_now(peer, batch, via=via)
            except DicomVaultError as exc:  # the peer cannot be reached: the rest would fail the same way
                for uid in sop_uids[start:]:
                    total.failed[uid] = exc.message
                progress.update(task, completed=len(sop_uids), failed=len(total.failed))
                break
            total.sent.update(report.sent)
            total.failed.update(report.failed)
            progress.update(task, advance=len(batch), failed=len(total.failed))
    return total


def send_command(
    study: Annotated[str, typer.Argument(help="Study Instance UID.")],
    to: Annotated[str, typer.Option("--to", help="A known peer's AE title, or a DICOMweb base URL (STOW-RS).")],
    series: Annotated[str | None, typer.Option("--series", help="Only this Series Instance UID.")] = None,
    via: Annotated[str | None, typer.Option(
        "--via", help="dimse (C-STORE) or dicomweb (STOW-RS); default: C-STORE when the peer has a host and port.")
    ] = None,
    token: Annotated[str | None, typer.Option(
        "--token", envvar="DICOMVAULT_SEND_TOKEN", help="Bearer token for a DICOMweb URL.")] = None,
    data_dir: DataDir = None,
    config: ConfigFile = None,
    index_url: IndexUrl = None,
    storage_url: StorageUrl = None,
) -> None:
    """Send a stored study (or one series) to a peer now: C-STORE to an AE title, STOW-RS to a URL."""
    if via is not None and via not in ("dimse", "dicomweb"):
        fail(f"--via expects dimse or dicomweb, got {via!r}")
    settings = load_settings(config, data_dir=data_dir, index_url=index_url, storage_url=storage_url)
    archive = open_archive(settings, create=False)
    try:
        if archive.routing is None:
            fail("this archive has no routing service")
        peer, how = destination(archive.peers, to, via, token)
        found = archive.retrieve.locate(study_uid=study.strip(), series_uid=series)
        if not found:
            fail(f"nothing to send: no instances of study {study.strip()}"
                 + (f" series {series}" if series else "") + " are stored", 1)
        report = _send(archive, peer, how, [r.sop_uid for r in found])
    finally:
        archive.close()
    target = peer.dicomweb_url if how == "dicomweb" and peer.aet == "DICOMWEB" else peer.aet
    console.print(f"{len(report.sent)} of {len(found)} instance(s) sent to {target}"
                  + (f", {len(report.failed)} failed" if report.failed else ""), highlight=False, soft_wrap=True)
    if report.failed:
        by_reason: dict[str, list[str]] = defaultdict(list)
        for uid, why in report.failed.items():
            by_reason[why].append(uid)
        for why, uids in sorted(by_reason.items(), key=lambda kv: -len(kv[1])):
            err.print(f"[red]{len(uids)} failed:[/red] {escape(why)}", highlight=False, soft_wrap=True)
            for uid in uids[:EXAMPLES]:
                err.print(f"  {uid}", highlight=False, soft_wrap=True)
            if len(uids) > EXAMPLES:
                err.print(f"  … and {len(uids) - EXAMPLES} more", highlight=False)
        raise typer.Exit(1)
