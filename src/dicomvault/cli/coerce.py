"""``dicomvault coerce test RULES FILE...``: what the ``[[coercion]]`` rules of a configuration file would change in
sample objects, before and after, without storing anything (issue #12 item 2).

    dicomvault coerce test dv.toml scans/*.dcm --source ACMEPACS      # as if ACMEPACS had sent them
    dicomvault coerce test dv.toml ct.dcm --source stow:viewer --json
    dicomvault coerce test dv.toml ct.dcm --source ACMEPACS --output coerced/   # also write what would be stored

``--source`` is the sender as ingest records it: a calling AE title (``CT1`` or ``dimse:CT1``), a STOW-RS client
(``stow:NAME``) or ``cli-import``. The rules file is validated exactly as at start-up (the line at fault).
"""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path
from typing import Annotated, Any

import typer

from dicomvault.cli.common import console, fail
from dicomvault.config_errors import ConfigurationError, load_settings
from dicomvault.domain.errors import DicomVaultError
from dicomvault.domain.tags import Level
from dicomvault.services import header as hdr
from dicomvault.services.coercion import Coercion
from dicomvault.services.inflate import Limits

app = typer.Typer(help="Attribute coercion rules: try them on sample files.", no_args_is_help=True)


@app.command("test")
def test_command(
    rules: Annotated[Path, typer.Argument(help="Configuration file with [[coercion]] rules.", exists=True,
                                          dir_okay=False)],
    files: Annotated[list[Path], typer.Argument(help="DICOM files to try the rules on.", exists=True,
                                                dir_okay=False)],
    source: Annotated[str, typer.Option("--source", help="The sender: AE title, dimse:AET, stow:CLIENT, "
                                        "cli-import.")] = "",
    output: Annotated[Path | None, typer.Option("--output", help="Also write the coerced objects to this folder.",
                                                file_okay=False)] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Show, per file, which rules apply and every attribute they would change (nothing is stored)."""
    try:
        with tempfile.TemporaryDirectory() as scratch:
            settings = load_settings(rules, data_dir=Path(scratch))
    except ConfigurationError as exc:
        fail("\n".join(exc.problems))
    coercion = Coercion(settings.coercion)
    if not coercion:
        fail(f"{rules}: no [[coercion]] rules")
    sender = source if ":" in source or source in ("", "cli-import") else f"dimse:{source}"
    if output is not None:
        output.mkdir(parents=True, exist_ok=True)
    report: list[dict[str, Any]] = []
    for path in files:
        with path.open("rb") as stream:
            try:
                parsed = hdr.parse_header(stream, Limits())
            except DicomVaultError as exc:
                report.append({"file": str(path), "error": exc.message})
                continue
            try:
                data = hdr.json_dict(parsed.dataset, parsed)
                cols = hdr.index_columns(data, parsed.transfer_syntax_uid)
                modality, sop_class = cols[Level.SERIES].get("modality"), cols[Level.IMAGE]["sop_class_uid"]
                matched = [r.name for r in coercion.rules_for(sender, modality, sop_class)]
                rewritten = coercion.rewrite(parsed, stream, source=sender, modality=modality, sop_class=sop_class)
                if rewritten is None:
                    report.append({"file": str(path), "rules": matched, "changes": []})
                    continue
                coerced, changes = rewritten
                with coerced:
                    described = [c.describe(parsed.dataset) for c in changes]
                    if output is not None:
                        with (output / path.name).open("wb") as out:
                            shutil.copyfileobj(coerced, out)
                report.append({"file": str(path), "rules": matched, "changes": described})
            finally:
                parsed.close()
    if as_json:
        typer.echo(json.dumps(report, indent=2, ensure_ascii=False))
        return
    for entry in report:
        console.print(f"[bold]{entry['file']}[/bold]")
        if "error" in entry:
            console.print(f"  [red]not readable: {entry['error']}[/red]")
        elif not entry["changes"]:
            why = "rules matched: " + ", ".join(entry["rules"]) if entry["rules"] else "no rule matches"
            console.print(f"  unchanged ({why})")
        for line in entry.get("changes", []):
            console.print(f"  {line}", markup=False)
