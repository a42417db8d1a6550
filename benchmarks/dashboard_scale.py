"""Dashboard figures on a large SQLite index: how long each aggregate of ``adapters.index.dashboard`` takes.

Bulk-generates an index (the archive's own migrations, so migration 0016's covering indexes are there) with
``--instances`` instances in series of 33, ~1 KB of metadata each (real headers are larger: full scans would be
slower still), received over the last 400 days from five sources, every blob on store ``default`` and every fifth
on ``cold`` too; then times each figure of ``SqlStorageFigures`` (best of ``--repeat``, warm cache) and the whole
``DashboardService.figures`` once without its cache.

    .venv/bin/python benchmarks/dashboard_scale.py --instances 1000000 --db /tmp/dv-dash.sqlite
"""

from __future__ import annotations

import argparse
import random
import sqlite3
import sys
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))

from dicomvault.adapters.index.dashboard import SqlStorageFigures  # noqa: E402
from dicomvault.adapters.index.engine import create_index_engine, migrate  # noqa: E402
from dicomvault.services.dashboard import DashboardService  # noqa: E402

MODALITIES = ["CT", "MR", "CR", "DX", "US", "MG", "PT", "NM", "XA", "SR"]
SOURCES = ["dimse:CT1", "dimse:MR2", "dicomweb", "import", "dimse:US3"]
PER_SERIES = 33


def load(path: Path, n: int, seed: int) -> float:
    engine = create_index_engine(f"sqlite:///{path}", pool_size=1)
    migrate(engine)
    engine.dispose()
    t0 = time.perf_counter()
    rng = random.Random(seed)
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA synchronous=OFF")
    conn.execute("INSERT INTO patients (id, patient_key, patient_id, num_studies, num_series, num_instances) "
                 "VALUES (1, 'p', 'p', 0, 0, 0)")
    n_series = (n + PER_SERIES - 1) // PER_SERIES
    series = [(s, f"1.3.{s}", (s + 2) // 3, rng.choice(MODALITIES), PER_SERIES) for s in range(1, n_series + 1)]
    n_studies = series[-1][2]
    conn.executemany("INSERT INTO studies (id, study_uid, patient_fk, modalities_in_study, num_series, num_instances,"
                     " size_bytes) VALUES (?, ?, 1, '', 3, ?, 0)",
                     ((s, f"1.2.{s}", 3 * PER_SERIES) for s in range(1, n_studies + 1)))
    conn.executemany("INSERT INTO series (id, series_uid, study_fk, modality, num_instances) VALUES (?, ?, ?, ?, ?)",
                     series)
    now = datetime.now(UTC).replace(tzinfo=None)
    pad = "x" * 1000

    def rows() -> Iterator[tuple[object, ...]]:
        iid = 0
        for sid, _, _, _, size in series:
            base = now - timedelta(days=rng.random() * 400)
            source = rng.choice(SOURCES)
            for k in range(size):
                iid += 1
                if iid > n:
                    return
                yield (iid, f"1.4.{iid}", sid, "1.2.840.10008.5.1.4.1.1.2", k, "1.2.840.10008.1.2.1",
                       f"{iid:064x}", rng.randint(1000, 600_000), "0" * 64, pad, source,
                       (base + timedelta(seconds=k)).strftime("%Y-%m-%d %H:%M:%S.%f"))

    conn.executemany("INSERT INTO instances (id, sop_uid, series_fk, sop_class_uid, instance_number, "
                     "transfer_syntax_uid, blob_key, blob_size, blob_sha256, metadata, source, stored_at) "
                     "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", rows())
    conn.execute("INSERT INTO blob_copies (key, store) SELECT blob_key, 'default' FROM instances")
    conn.execute("INSERT INTO blob_copies (key, store) SELECT blob_key, 'cold' FROM instances WHERE id % 5 = 0")
    conn.commit()
    conn.execute("ANALYZE")
    conn.commit()
    conn.close()
    return time.perf_counter() - t0


def best(fn: Callable[[], object], repeat: int) -> float:
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--instances", type=int, default=1_000_000)
    parser.add_argument("--db", type=Path, default=Path("/tmp/dv-bench-dashboard.sqlite"))
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--keep", action="store_true", help="keep the database (and reuse it next time)")
    args = parser.parse_args()
    if not args.db.exists():
        print(f"loading {args.instances} instances into {args.db} …", flush=True)
        print(f"  loaded in {load(args.db, args.instances, args.seed):.1f} s", flush=True)
    engine = create_index_engine(f"sqlite:///{args.db}", pool_size=2)
    figures = SqlStorageFigures(engine)
    now = datetime.now(UTC)
    cases: dict[str, Callable[[], object]] = {
        "totals": figures.totals,
        "received, 90 days by day": lambda: figures.received(now - timedelta(days=89), "day"),
        "received, 365 days by day": lambda: figures.received(now - timedelta(days=364), "day"),
        "received, last hour by minute": lambda: figures.received(now - timedelta(minutes=59), "minute"),
        "by modality and source": figures.by_modality_and_source,
        "by store": figures.by_store,
    }
    print(f"| figure | seconds (best of {args.repeat}) |\n|---|---|")
    for name, fn in cases.items():
        print(f"| {name} | {best(fn, args.repeat):.3f} |", flush=True)
    service = DashboardService(figures, None, args.db.parent / "no-report.json")
    print(f"| whole dashboard, cache empty | {best(service.figures, 1):.3f} |")
    print(f"| whole dashboard, cached | {best(service.figures, args.repeat):.6f} |")
    engine.dispose()
    if not args.keep:
        for suffix in ("", "-wal", "-shm"):
            Path(str(args.db) + suffix).unlink(missing_ok=True)


if __name__ == "__main__":
    main()
