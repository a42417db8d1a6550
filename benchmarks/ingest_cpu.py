"""In-process ingest rate and CPU per object of small CT objects (64×64), for A/B comparisons of two checkouts:

    for i in 1 2 3; do
        PYTHONPATH=/path/to/old/src python benchmarks/ingest_cpu.py old
        PYTHONPATH=src python benchmarks/ingest_cpu.py new
    done

Small objects make the fixed cost per object (parse, index transaction, copy record) visible; the C-STORE and
DICOMweb benchmarks measure the whole server against Orthanc.
"""

from __future__ import annotations

import argparse
import io
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from pydicom.uid import generate_uid

from dicomvault.bootstrap import build_archive
from dicomvault.settings import Settings
from tests.helpers import make_ct


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("label", nargs="?", default="this checkout")
    parser.add_argument("--count", type=int, default=400)
    args = parser.parse_args()
    study, series = generate_uid(), generate_uid()
    objects = [make_ct(study=study, series=series, sop=generate_uid(), rows=64, columns=64, seed=i)
               for i in range(args.count)]
    with tempfile.TemporaryDirectory() as tmp:
        archive = build_archive(Settings.load(data_dir=Path(tmp) / "vault"))
        try:
            wall, cpu = time.perf_counter(), time.process_time()
            for data in objects:
                archive.ingest.ingest(io.BytesIO(data), source="bench")
            wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
        finally:
            archive.close()
    print(f"{args.label}: {args.count / wall:.0f} objects/s, {1000 * cpu / args.count:.2f} ms CPU per object")


if __name__ == "__main__":
    main()
