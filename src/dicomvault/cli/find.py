"""``dicomvault find``: one query through the same engine as C-FIND and QIDO-RS, printed as a table or JSON.

Matching keys are given as ``Keyword=Value`` (or ``0010,0020=Value`` / ``00100020=Value``) with DICOM matching
rules: ``*`` and ``?`` wildcards, ``20200101-20201231`` ranges, ``uid1\\uid2`` lists, empty value = return only.

At a terminal the table shows the columns that fit its width (``find_table``); ``--json`` prints DICOM JSON for
scripts. Bounded like the network services: the same key limits (``query_max_*``), at most ``query_max_results`` results
(a larger ``--limit`` is reduced, with a note), and the same budget of records examined for attributes the index
does not hold; a note on stderr says when more results exist or when that budget stopped the search.
"""

from __future__ import annotations

import json
import os
from typing import Annotated

import typer
from rich.console import Console

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
from dicomvault.cli.find_table import build_table
from dicomvault.domain.errors import DicomVaultError
from dicomvault.domain.tags import Level

LEVELS = {"patient": Level.PATIENT, "study": Level.STUDY, "series": Level.SERIES, "instance": Level.IMAGE,
          "image": Level.IMAGE}


def parse_keys(pairs: list[str]) -> dict[str, str]:
    """``KEY=VALUE`` arguments → mapping; exits 2 on a malformed pair."""
    keys: dict[str, str] = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep or not name.strip():
            fail(f"expected KEY=VALUE, got {pair!r}")
        keys[name.strip()] = value
    return keys


def terminal_width() -> int:
    """The width to fit: ``COLUMNS`` when set (also when output is piped), else what the console found."""
    columns = os.environ.get("COLUMNS", "")
    return int(columns) if columns.isdigit() and int(columns) > 0 else console.width


def find_command(
    keys: Annotated[list[str] | None, typer.Argument(help="Matching keys KEY=VALUE (DICOM wildcards/ranges).")] = None,
    level: Annotated[str, typer.Option("--level", "-l", help="patient | study | series | instance")] = "study",
    include: Annotated[list[str] | None, typer.Option("--include", "-i", help="Extra attribute to return.")] = None,
    limit: Annotated[int, typer.Option("--limit", min=1, help="Maximum results.")] = 100,
    as_json: Annotated[bool, typer.Option(
        "--json", help="Print the results as one JSON array of DICOM JSON objects (as QIDO-RS answers; stable, "
        "for scripts) instead of a table.")] = False,
    uids: Annotated[bool, typer.Option(
        "--uids", help="Show the UID columns even when the terminal is narrow (other columns give way).")] = False,
    fuzzy: Annotated[bool, typer.Option("--fuzzy", help="Fuzzy person-name matching (as QIDO fuzzymatching).")] = False,
    data_dir: DataDir = None,
    config: ConfigFile = None,
    index_url: IndexUrl = None,
    storage_url: StorageUrl = None,
) -> None:
    """Query the archive index (same engine as C-FIND/QIDO-RS). Example: find -l series Modality=CT PatientID=12*"""
    lvl = LEVELS.get(level.strip().lower())
    if lvl is None:
        fail(f"unknown level {level!r} (patient, study, series, instance)")
    matching = parse_keys(keys or [])
    extra = include or []
    settings = load_settings(config, quiet=as_json, data_dir=data_dir, index_url=index_url, storage_url=storage_url)
    if limit > settings.query_max_results:
        err.print(f"--limit reduced to the maximum of {settings.query_max_results} (query_max_results)")
        limit = settings.query_max_results
    archive = open_archive(settings, create=False)
    try:
        spec = archive.query.build_spec(lvl, matching, return_keys=extra, fuzzy=fuzzy, limit=limit)
        results, end = archive.query.search_page(spec)
    except DicomVaultError as exc:
        fail(f"query failed: {exc.message}")
    finally:
        archive.close()
    if not end.complete:
        err.print(f"search stopped after examining {settings.query_max_scanned} records (query_max_scanned) for "
                  "attributes the index does not hold: results may be missing; narrow the query")
    elif end.more:
        err.print(f"more than {len(results)} results: raise --limit or narrow the query")
    if as_json:
        typer.echo(json.dumps(results, indent=2))
        return
    title = f"{len(results)} {level.lower()} result(s)" + (" (limit reached)" if end.more else "")
    width = terminal_width()
    out = Console(width=width)  # the width chosen for, also when wider than the shared console's
    out.print(title, highlight=False, soft_wrap=True)
    if results:
        out.print(build_table(lvl, results, width, asked=[*matching, *extra], uids=uids))
