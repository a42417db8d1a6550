"""Smoke test of the fault and abuse campaign (benchmarks/abuse_campaign.py, not part of ``make test`` itself): it
imports, runs one cheap probe against an in-process DIMSE server, and keeps a failing or hanging probe from
stopping the run."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

from benchmarks.abuse import probes_net
from benchmarks.abuse.context import Ctx
from benchmarks.abuse.harness import ERROR, FAIL, PASS, Probe, Result, Server, run_probe
from benchmarks.abuse.objects import Marker
from benchmarks.abuse_campaign import probes
from tests.dimse.conftest import start


def _ctx(tmp_path: Path, dimse_port: int) -> Ctx:
    server = Server(tmp_path / "unused", tmp_path / "server.log", dimse_port=dimse_port)
    return Ctx(True, 1, tmp_path, server, "no-token", Marker(), lambda line: None)


def test_called_ae_title_probe_against_an_in_process_server(tmp_path: Path) -> None:
    running = start(tmp_path)
    try:
        result = run_probe(Probe("called-ae-title", "defect 13", probes_net.called_aet, 30),
                           _ctx(tmp_path, running.port), lambda line: None)
    finally:
        running.server.stop()
        running.archive.close()
    assert result.status in (PASS, FAIL), result.summary
    assert result.summary.startswith(("refused", "ACCEPTED"))
    assert isinstance(result.measured["established"], bool)


def test_a_failing_or_hanging_probe_does_not_stop_the_campaign(tmp_path: Path) -> None:
    def broken(ctx: Any, result: Result) -> None:
        raise ConnectionError("the server hung up")

    release = threading.Event()

    def hanging(ctx: Any, result: Result) -> None:
        release.wait(30)

    ctx = _ctx(tmp_path, 1)
    failed = run_probe(Probe("broken", "test", broken, 10), ctx, lambda line: None)
    assert failed.status == ERROR and "ConnectionError: the server hung up" in failed.summary
    hung = run_probe(Probe("hanging", "test", hanging, 0.5), ctx, lambda line: None)
    still_running = not release.is_set()  # the runner returned while the probe was still blocked
    release.set()
    assert still_running and hung.status == ERROR and "did not finish within its budget" in hung.summary


def test_every_probe_of_the_issue_is_in_the_campaign() -> None:
    names = {p.name for p in probes(quick=True, minutes=1)}
    for expected in ("delete-race", "wildcard-qido", "wildcard-cfind", "deflate-bomb", "decode-rle-8192",
                     "frames-200000", "unbounded-results", "silent-sockets-300", "lingering-connections",
                     "assoc-rq-0xFFFFFFFF", "http-1mb-header", "anonymous-access", "oidc-token-confusion",
                     "log-scan", "short-pixel-data", "refusal-reasons", "shutdown-idle-dimse",
                     "c-move-destination-down", "called-ae-title", "junk-on-dimse-port", "garbage-pdus",
                     "garbage-multipart", "soak"):
        assert expected in names
    assert [p.name for p in probes(quick=True, minutes=1)][-2:] == ["shutdown-idle-dimse", "log-scan"]
