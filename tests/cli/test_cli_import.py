"""``dicomvault import``: folders, zip archives, re-runs, reporting, and the summary's arithmetic."""

from __future__ import annotations

import io
import re
import shutil
import subprocess
import warnings
import zipfile
from pathlib import Path

import pydicom
from pydicom.uid import generate_uid

from dicomvault.bootstrap import build_archive
from dicomvault.dimse.server import DimseServer
from dicomvault.settings import Settings
from tests.cli.cli_helpers import Invoke, corpus_root
from tests.conftest import free_port
from tests.helpers import make_ct

SUMMARY = re.compile(r"(\d+) stored \((\d+) bytes\), (\d+) duplicates, (\d+) conflicts, (\d+) rejected, (\d+) failed, "
                     r"(\d+) skipped")


def storable_uids(root: Path) -> set[str]:
    """SOP Instance UIDs of the files that carry the four identifying UIDs (read as DICOM, preamble or not)."""
    uids: set[str] = set()
    for p in root.rglob("*"):
        if not p.is_file():
            continue
        try:
            ds = pydicom.dcmread(p, stop_before_pixels=True, force=True)
            values = [str(ds[k].value).strip() for k in
                      ("SOPClassUID", "SOPInstanceUID", "StudyInstanceUID", "SeriesInstanceUID")]
        except Exception:
            continue
        if all(values):
            uids.add(values[1])
    return uids


def counts(output: str) -> dict[str, int]:
    m = SUMMARY.search(output)
    assert m, output
    keys = ("stored", "bytes", "duplicates", "conflicts", "rejected", "failed", "skipped")
    return dict(zip(keys, map(int, m.groups()), strict=True))


def test_cli_import_folder_then_rerun_is_all_duplicates(invoke: Invoke, corpus: list[Path]) -> None:
    n_files = sum(1 for p in corpus_root().rglob("*") if p.is_file())
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        expected = len(storable_uids(corpus_root()))
    assert expected >= len(corpus)
    first = invoke("import", str(corpus_root()), "--workers", "3")
    c1 = counts(first.output)
    # Every distinct storable SOP Instance UID is stored exactly once; the corpus also holds files that reuse a UID
    # with other content (rejected: default policy), broken objects (rejected) and non-DICOM files (skipped).
    assert c1["stored"] == expected
    assert c1["failed"] == 0
    assert c1["skipped"] > 0 and "not a DICOM object" in first.output
    # The corpus's re-encodings of one data set (big endian, implicit VR, deflated) are duplicates; its other
    # compressions or frames under one UID are conflicts.
    assert c1["duplicates"] > 0
    assert c1["conflicts"] > 0 and "a different object with this SOP Instance UID" in first.output
    assert c1["rejected"] > 0
    assert sum(v for k, v in c1.items() if k != "bytes") == n_files
    assert first.exit_code == 1  # conflicts and rejected objects → 1 (documented)

    second = invoke("import", str(corpus_root()))
    c2 = counts(second.output)
    assert c2["stored"] == 0 and c2["bytes"] == 0
    assert c2["duplicates"] == c1["stored"] + c1["duplicates"]
    assert c2["conflicts"] == c1["conflicts"] and c2["rejected"] == c1["rejected"]
    assert c2["skipped"] == c1["skipped"]

    stats = invoke("stats", "--json")
    assert stats.exit_code == 0, stats.output
    assert f'"instances": {expected}' in stats.output


def test_cli_import_of_a_folder_sent_by_storescu_is_all_duplicates(invoke: Invoke, data_dir: Path, corpus: list[Path],
                                                                   tmp_path: Path) -> None:
    """Issue #10: the archive's File Meta of the received copies names STORESCU; dcmtk re-encoded what it sent
    (no group lengths, no trailing padding). The files themselves are the same data sets: already stored."""
    folder = tmp_path / "sent"
    folder.mkdir()
    for n in range(4):
        (folder / f"ct{n}.dcm").write_bytes(make_ct(sop=generate_uid(), seed=n))
    (folder / "implicit.dcm").write_bytes(make_ct(sop=generate_uid(), seed=9))
    subprocess.run(["dcmconv", "+ti", str(folder / "implicit.dcm"), str(folder / "implicit.dcm")], check=True,
                   capture_output=True, timeout=60)
    for name in ("MR_small.dcm", "CT_small.dcm", "rtplan.dcm"):
        shutil.copy(corpus_root() / name, folder / name)
    files = sorted(folder.iterdir())
    settings = Settings.load(data_dir=data_dir, dimse_port=free_port())
    archive = build_archive(settings)
    server = DimseServer(archive)
    server.start()
    try:
        r = subprocess.run(["storescu", "-aet", "MODALITY", "-aec", "DICOMVAULT", "127.0.0.1", str(settings.dimse_port),
                            *map(str, files)], capture_output=True, text=True, timeout=120)
        assert r.returncode == 0, r.stderr
    finally:
        server.stop()
        archive.close()
    result = invoke("import", str(folder))
    c = counts(result.output)
    assert c["duplicates"] == len(files) and c["conflicts"] == 0 and c["rejected"] == 0 and c["stored"] == 0
    assert result.exit_code == 0, result.output


def test_cli_import_zip_matches_folder(invoke: Invoke, corpus: list[Path], corpus_zip: Path) -> None:
    result = invoke("import", str(corpus_zip))
    c = counts(result.output)
    with zipfile.ZipFile(corpus_zip) as zf:
        members = [i for i in zf.infolist() if not i.is_dir()]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert c["stored"] == len(storable_uids(corpus_root())) >= len(corpus)
    assert c["failed"] == 0
    assert sum(v for k, v in c.items() if k != "bytes") == len(members)
    assert "corpus.zip!" in result.output  # examples name the member inside the archive
    again = counts(invoke("import", str(corpus_zip)).output)
    assert again["stored"] == 0 and again["duplicates"] == c["stored"] + c["duplicates"]


def test_cli_import_clean_files_exit_zero_and_report_non_dicom(invoke: Invoke, corpus: list[Path],
                                                               tmp_path: Path) -> None:
    src = tmp_path / "in"
    src.mkdir()
    (src / "notes.txt").write_text("not an image")
    (src / "empty.dcm").write_bytes(b"")
    picked = corpus[:5]
    result = invoke("import", str(src), *map(str, picked))
    c = counts(result.output)
    assert result.exit_code == 0, result.output
    assert c == {"stored": 5, "bytes": sum(p.stat().st_size for p in picked), "duplicates": 0, "conflicts": 0,
                 "rejected": 0, "failed": 0, "skipped": 2}
    assert "in/notes.txt" in result.output and "empty object" in result.output


def test_cli_import_missing_path_is_a_failure(invoke: Invoke, tmp_path: Path) -> None:
    result = invoke("import", str(tmp_path / "nope"))
    assert result.exit_code == 1
    assert counts(result.output)["failed"] == 1
    assert "no such file or folder" in result.output


def test_cli_import_groups_refusals_by_reason_type(invoke: Invoke, tmp_path: Path) -> None:
    """Issue #10: the summary groups by the error's type and reason, not by message prefixes. Two objects cut at
    different places are one group, "the object is truncated", each example with its own detail; a non-DICOM
    file is skipped; an object without Series Instance UID is rejected under that reason."""
    src = tmp_path / "in"
    src.mkdir()
    (src / "report.pdf").write_bytes(b"%PDF-1.4\n" + b"\x00" * 400)
    full = make_ct(rows=64, columns=64)
    (src / "cut-a.dcm").write_bytes(full[:-3000])
    (src / "cut-b.dcm").write_bytes(full[:-5000])
    no_series = pydicom.dcmread(io.BytesIO(make_ct(PatientName="SECRET^NAME")))
    del no_series.SeriesInstanceUID
    no_series.save_as(src / "no-series.dcm", enforce_file_format=True)
    (src / "good.dcm").write_bytes(make_ct())
    result = invoke("import", str(src), "--workers", "2")
    c = counts(result.output)
    assert (c["stored"], c["rejected"], c["skipped"], c["failed"], c["conflicts"]) == (1, 3, 1, 0, 0), result.output
    assert result.exit_code == 1
    groups = re.findall(r"│ (rejected|skipped \(not DICOM\)) +│ +(\d+) │ (.+?) +│", result.output)
    assert sorted(groups) == [("rejected", "1", "SeriesInstanceUID is missing"),
                              ("rejected", "2", "the object is truncated"),
                              ("skipped (not DICOM)", "1", "not a DICOM object")], result.output
    assert "in/cut-a.dcm (pixel data needs 3000 more bytes)" in result.output
    assert "in/cut-b.dcm (pixel data needs 5000 more bytes)" in result.output
    assert "in/no-series.dcm " in result.output
    assert "in/report.pdf (no DICM prefix, not a data set either)" in result.output
    assert "SECRET" not in result.output and no_series.SOPInstanceUID not in result.output
