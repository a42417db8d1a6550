"""Migration from a legacy PACS (issue #12 item 5): studies/s and MB/s that ``dicomvault migrate`` pulls from
Orthanc over C-MOVE, C-GET and DICOMweb, against the ceiling of the same Orthanc sending the same studies by C-MOVE
to a dcmtk ``storescp`` that writes them to disk in the same run (target: ≥ 0.9× that ceiling).

Each measurement migrates every study into a fresh archive (SQLite + folder, like ``dicomvault`` out of the box),
with ``--in-flight`` studies at once; the ceiling moves the same studies with the same number in flight. Median of
``--runs``. Nagle's algorithm is off on both sides of the ceiling too (storescp gets ``TCP_NODELAY=1``, as Debian's
DCMTK wants, and the C-MOVE requestor's socket is set): with it on, the ceiling was twice as slow at smoke sizes.

    python benchmarks/migration.py --studies 40 --per-study 50 --rows 512 --runs 3
    python benchmarks/migration.py --studies 4 --per-study 5 --rows 64 --runs 1      # smoke run
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from pydicom.dataset import Dataset
from pynetdicom import AE
from pynetdicom.sop_class import StudyRootQueryRetrieveInformationModelMove  # type: ignore[attr-defined]

from benchmarks.common import free_port, generate_ct_series, median, orthanc, wait_port
from dicomvault.bootstrap import build_archive, build_migration
from dicomvault.domain.migration import StudyFilter, Via
from dicomvault.domain.peers import RemotePeer
from dicomvault.settings import Settings

MOVE_AET = "DVMIGRATE"


def _load(http: str, folder: Path, studies: int, per_study: int, rows: int) -> tuple[list[str], int]:
    """Generate and upload the studies; their UIDs and total bytes."""
    uids, total = [], 0
    for s in range(studies):
        paths = generate_ct_series(folder / f"s{s}", per_study, rows=rows, columns=rows, seed=s, realistic=True)
        for p in paths:
            data = p.read_bytes()
            total += len(data)
            req = urllib.request.Request(f"{http}/instances", data=data, method="POST")
            with urllib.request.urlopen(req) as r:
                body = json.loads(r.read())
        with urllib.request.urlopen(f"{http}/studies/{body['ParentStudy']}") as r:
            uids.append(json.loads(r.read())["MainDicomTags"]["StudyInstanceUID"])
        shutil.rmtree(folder / f"s{s}")
    return uids, total


def _ceiling(dimse_port: int, scp_port: int, uids: list[str], in_flight: int, out: Path, nagle: bool = False) -> float:
    """Seconds for Orthanc to C-MOVE every study to a dcmtk storescp (``in_flight`` moves at once); ``nagle``: as
    this benchmark measured it before (storescp and the C-MOVE requestor with Nagle's algorithm on)."""
    out.mkdir(parents=True, exist_ok=True)
    proc = subprocess.Popen(["storescp", "-aet", "STORESCP", "-od", str(out), "--fork", str(scp_port)],
                            env={k: v for k, v in os.environ.items() if k != "TCP_NODELAY"} if nagle else
                            {**os.environ, "TCP_NODELAY": "1"}, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    try:
        wait_port(scp_port)

        def move(uid: str) -> None:
            ae = AE(ae_title=MOVE_AET)
            ae.add_requested_context(StudyRootQueryRetrieveInformationModelMove)
            assoc = ae.associate("127.0.0.1", dimse_port, ae_title="ORTHANC")
            if not nagle:
                assoc.dul.socket.socket.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # type: ignore[union-attr]
            q = Dataset()
            q.QueryRetrieveLevel, q.StudyInstanceUID = "STUDY", uid
            for status, _ in assoc.send_c_move(q, "STORESCP", StudyRootQueryRetrieveInformationModelMove):
                if status and status.Status not in (0xFF00, 0x0000):
                    raise RuntimeError(f"C-MOVE to storescp: 0x{status.Status:04X}")
            assoc.release()

        started = time.perf_counter()
        with ThreadPoolExecutor(in_flight) as pool:
            list(pool.map(move, uids))
        return time.perf_counter() - started
    finally:
        proc.terminate()
        proc.wait()
        shutil.rmtree(out, ignore_errors=True)


def _migrate(via: Via, dimse_port: int, dicomweb: str, listen_port: int, uids: list[str], in_flight: int,
             work: Path) -> tuple[float, int]:
    """Seconds and instances of one migration of every study into a fresh archive."""
    folder = Path(tempfile.mkdtemp(prefix="bench-migrate-", dir=work))
    archive = build_archive(Settings.load(data_dir=folder, aet=MOVE_AET))
    try:
        assert archive.peers is not None
        archive.peers.add(RemotePeer(aet="ORTHANC", host="127.0.0.1", port=dimse_port, dicomweb_url=dicomweb))
        options = {"listen_port": listen_port, "listen_host": "127.0.0.1"} if via == Via.MOVE else {}
        service = build_migration(archive, via=via, **options)  # type: ignore[arg-type]
        started = time.perf_counter()
        report = service.run("ORTHANC", StudyFilter(), max_in_flight=in_flight)
        seconds = time.perf_counter() - started
        if not report.ok or len(report.migrated) != len(uids):
            raise RuntimeError(report.text())
        return seconds, report.totals()["instances"]
    finally:
        archive.close()
        shutil.rmtree(folder, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--studies", type=int, default=40)
    parser.add_argument("--per-study", type=int, default=50)
    parser.add_argument("--rows", type=int, default=512, help="rows = columns of each 16-bit CT image")
    parser.add_argument("--in-flight", type=int, default=2)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--json", type=Path, help="write the results here too")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench-migration-"))
    listen_port, scp_port = free_port(), free_port()
    results: dict[str, object] = {"studies": args.studies, "per_study": args.per_study, "rows": args.rows,
                                  "in_flight": args.in_flight}
    try:
        modalities = {MOVE_AET: [MOVE_AET, "127.0.0.1", listen_port], "STORESCP": ["STORESCP", "127.0.0.1", scp_port]}
        extra = {"DicomModalities": modalities, "DicomAlwaysAllowFind": True, "DicomAlwaysAllowMove": True,
                 "DicomAlwaysAllowGet": True}
        with orthanc(dicomweb=True, extra=extra) as o:
            uids, total = _load(o.http, work / "gen", args.studies, args.per_study, args.rows)
            results["megabytes"] = round(total / 1e6, 2)
            print(f"{len(uids)} studies, {args.studies * args.per_study} instances, {total / 1e6:.1f} MB in Orthanc")
            ceiling = median([_ceiling(o.dimse_port, scp_port, uids, args.in_flight, work / "scp")
                              for _ in range(args.runs)])
            nagle = median([_ceiling(o.dimse_port, scp_port, uids, args.in_flight, work / "scp", nagle=True)
                            for _ in range(args.runs)])
            rows = [("Orthanc C-MOVE → storescp (ceiling)", ceiling),
                    ("  the same with Nagle on (as measured before)", nagle)]
            for via in (Via.MOVE, Via.GET, Via.DICOMWEB):
                seconds = median([_migrate(via, o.dimse_port, f"{o.http}/dicom-web", listen_port, uids,
                                           args.in_flight, work)[0] for _ in range(args.runs)])
                rows.append((f"dicomvault migrate --via {via.value}", seconds))
        print(f"{'':42} {'s':>8} {'studies/s':>10} {'MB/s':>8} {'× ceiling':>10}")
        for name, seconds in rows:
            print(f"{name:42} {seconds:8.2f} {len(uids) / seconds:10.2f} {total / 1e6 / seconds:8.1f} "
                  f"{ceiling / seconds:10.2f}")
            results[name] = {"seconds": round(seconds, 3), "studies_per_s": round(len(uids) / seconds, 3),
                             "mb_per_s": round(total / 1e6 / seconds, 2), "of_ceiling": round(ceiling / seconds, 3)}
        if args.json:
            args.json.write_text(json.dumps(results, indent=2) + "\n")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
