"""Debian's Orthanc as a legacy PACS for the migration tests (issue #12 item 5): its own folder, loopback ports,
the DICOMweb plugin, verbose logging (each C-MOVE it serves is logged, so a test can count retrievals), and a
corpus of small studies loaded over its REST API.

Reuses the start-up helpers of ``benchmarks.common`` (free ports, waiting for the ports to answer)."""

from __future__ import annotations

import io
import json
import os
import re
import shutil
import signal
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pydicom
from pydicom.uid import ImplicitVRLittleEndian, RLELossless, generate_uid

from benchmarks.common import free_port, wait_http, wait_port
from tests.helpers import make_ct

ORTHANC = shutil.which("Orthanc") or "/usr/sbin/Orthanc"
PLUGINS = [p for p in ("/usr/share/orthanc/plugins", "/usr/lib/orthanc/plugins") if Path(p).is_dir()]


@dataclass
class LegacyPacs:
    aet: str
    dimse_port: int
    http_port: int
    workdir: Path
    process: subprocess.Popen[bytes]
    #: Study Instance UID → Orthanc's study ID
    studies: dict[str, str] = field(default_factory=dict)

    @property
    def http(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    @property
    def dicomweb(self) -> str:
        return f"{self.http}/dicom-web"

    def log(self) -> str:
        return (self.workdir / "orthanc.log").read_text(errors="replace")

    def moves_per_study(self) -> dict[str, int]:
        """How many times Orthanc sent each study by C-MOVE (its verbose log: one line per study sent)."""
        by_id = {v: k for k, v in self.studies.items()}
        counts: dict[str, int] = {}
        for orthanc_id in re.findall(r"Sending resource ([0-9a-f-]+) to modality", self.log()):
            uid = by_id.get(orthanc_id, orthanc_id)
            counts[uid] = counts.get(uid, 0) + 1
        return counts

    def files(self, study_uid: str) -> dict[str, bytes]:
        """SOP Instance UID → the file Orthanc stores, for every instance of the study."""
        out = {}
        with httpx.Client(timeout=30) as c:
            for inst in c.get(f"{self.http}/studies/{self.studies[study_uid]}/instances").json():
                data = c.get(f"{self.http}/instances/{inst['ID']}/file").content
                out[str(pydicom.dcmread(io.BytesIO(data), stop_before_pixels=True).SOPInstanceUID)] = data
        return out

    def load(self, objects: list[bytes]) -> None:
        with httpx.Client(timeout=30) as c:
            for data in objects:
                r = c.post(f"{self.http}/instances", content=data)
                r.raise_for_status()
                self.studies[str(pydicom.dcmread(io.BytesIO(data), stop_before_pixels=True).StudyInstanceUID)] = \
                    r.json()["ParentStudy"]


@contextmanager
def legacy_pacs(move_destinations: dict[str, int] | None = None) -> Iterator[LegacyPacs]:
    """Orthanc on loopback; ``move_destinations``: AE title → port on 127.0.0.1 it may C-MOVE to. Find, move and
    get are allowed from any calling AE title (a real PACS would list the archive's)."""
    work = Path(tempfile.mkdtemp(prefix="dv-orthanc-"))
    dimse, http = free_port(), free_port()
    cfg = {
        "Name": "legacy", "StorageDirectory": str(work / "db"), "IndexDirectory": str(work / "db"),
        "DicomAet": "ORTHANC", "DicomPort": dimse, "HttpPort": http, "RemoteAccessAllowed": False,
        "AuthenticationEnabled": False, "DicomCheckCalledAet": False, "StableAge": 3600, "SyncStorageArea": False,
        "DicomAlwaysAllowFind": True, "DicomAlwaysAllowMove": True, "DicomAlwaysAllowGet": True,
        "DicomModalities": {aet: [aet, "127.0.0.1", port] for aet, port in (move_destinations or {}).items()},
        "Plugins": PLUGINS, "DicomWeb": {"Enable": True, "Root": "/dicom-web/", "EnableWado": True},
    }
    (work / "orthanc.json").write_text(json.dumps(cfg))
    log = (work / "orthanc.log").open("wb")
    proc = subprocess.Popen([ORTHANC, "--verbose", str(work / "orthanc.json")], stdout=subprocess.DEVNULL,
                            stderr=log, env={**os.environ, "TCP_NODELAY": "1"})
    try:
        wait_port(dimse)
        wait_http(f"http://127.0.0.1:{http}/system")
        yield LegacyPacs("ORTHANC", dimse, http, work, proc)
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        log.close()
        shutil.rmtree(work, ignore_errors=True)


def _reencode(data: bytes, syntax: str) -> bytes:
    ds = pydicom.dcmread(io.BytesIO(data))
    buf = io.BytesIO()
    if syntax == ImplicitVRLittleEndian:
        ds.file_meta.TransferSyntaxUID = ImplicitVRLittleEndian
        ds.save_as(buf, implicit_vr=True, little_endian=True)
    else:
        ds.compress(syntax)
        ds.save_as(buf)
    return buf.getvalue()


@dataclass(frozen=True)
class CorpusStudy:
    uid: str
    date: str
    modality: str
    count: int


def small_corpus(studies: int = 6, per_study: int = 40) -> tuple[list[CorpusStudy], list[bytes]]:
    """``studies`` studies of ``per_study`` 8x8 instances over two series, dated a year apart (2015, 2016, …),
    CT and MR alternating; in each study one instance in implicit VR and one RLE-compressed (the syntaxes must
    survive the migration as stored)."""
    out, objects = [], []
    for s in range(studies):
        study, date, modality = generate_uid(), f"{2015 + s}0601", "CT" if s % 2 == 0 else "MR"
        series = [generate_uid(), generate_uid()]
        for i in range(per_study):
            data = make_ct(study=study, series=series[i % 2], rows=8, columns=8, seed=i, StudyDate=date,
                           Modality=modality, InstanceNumber=i + 1, PatientID=f"P{s}")
            if i == 0:
                data = _reencode(data, ImplicitVRLittleEndian)
            elif i == 1:
                data = _reencode(data, RLELossless)
            objects.append(data)
        out.append(CorpusStudy(study, date, modality, per_study))
    return out, objects
