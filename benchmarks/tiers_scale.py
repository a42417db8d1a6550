"""Storage tier queries on a PostgreSQL index of 1,000,000 instances: what ``lifecycle plan``, the lifecycle
schedule, ``tier status`` and a tier job ask the index, timed.

Loads the same synthetic index as ``benchmarks/index_scale.py`` (COPY into a fresh database whose schema comes
from the migrations), records every blob as a copy on the store ``default`` (what migration 0008 does for an
existing archive), moves 20 % of the studies' copies to a store ``cold`` as tier jobs would have, then times:

* ``studies_needing`` pages (500 studies) for a typical rule (CT older than a year → cold), the unit of work of
  ``lifecycle plan`` and of the schedule; and the whole plan (every page);
* ``study_facts`` and ``study_blobs`` of one study (what each ``tier-study`` job reads first);
* ``store_usage`` (``dicomvault tier status``).

    .venv/bin/python benchmarks/tiers_scale.py --instances 1000000 --studies 100000
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import psycopg

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "src"))

from benchmarks.index_scale import load  # noqa: E402
from dicomvault.bootstrap import build_archive  # noqa: E402
from dicomvault.domain.tiers import CopyTarget, StudyCondition  # noqa: E402
from dicomvault.settings import Settings  # noqa: E402


def timed(fn: object, runs: int) -> tuple[float, float]:
    """(median, max) milliseconds of ``runs`` calls."""
    samples = []
    for _ in range(runs):
        t0 = time.perf_counter()
        fn()  # type: ignore[operator]
        samples.append((time.perf_counter() - t0) * 1000)
    return statistics.median(samples), max(samples)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--server", default="postgresql://postgres@127.0.0.1:5432/postgres")
    ap.add_argument("--database", default="dv_bench_tiers")
    ap.add_argument("--instances", type=int, default=1_000_000)
    ap.add_argument("--studies", type=int, default=100_000)
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--runs", type=int, default=20)
    ap.add_argument("--keep", action="store_true")
    args = ap.parse_args()
    base = psycopg.conninfo.conninfo_to_dict(args.server)
    index_url = (f"postgresql://{base.get('user', 'postgres')}@{base.get('host', '127.0.0.1')}:"
                 f"{base.get('port', 5432)}/{args.database}")
    with psycopg.connect(args.server, autocommit=True) as admin:
        admin.execute(f'DROP DATABASE IF EXISTS "{args.database}" WITH (FORCE)')
        admin.execute(f'CREATE DATABASE "{args.database}"')
    settings = Settings.load(data_dir=Path("/tmp/dv-bench-tiers"), index_url=index_url, storage_url="memory://",
                             stores={"cold": {"url": "memory://"}})
    build_archive(settings).close()
    print(f"loading {args.instances:,} instances in {args.studies:,} studies …", flush=True)
    with psycopg.connect(index_url) as conn:
        load_s = load(conn, args)
    with psycopg.connect(index_url, autocommit=True) as conn:
        t0 = time.perf_counter()
        conn.execute("INSERT INTO blob_copies (key, store) SELECT DISTINCT blob_key, 'default' FROM instances")
        conn.execute("""UPDATE blob_copies SET store = 'cold' WHERE key IN (
                        SELECT i.blob_key FROM instances i JOIN series s ON i.series_fk = s.id
                        WHERE s.study_fk % 5 = 0)""")
        conn.execute("VACUUM ANALYZE")
        copies_s = time.perf_counter() - t0
    print(f"loaded in {load_s:.0f} s, copies recorded in {copies_s:.0f} s", flush=True)

    archive = build_archive(settings)
    try:
        index = archive.index
        now = datetime.now(UTC)
        rule = StudyCondition(study_age_days=365, modalities=("CT",))
        move = CopyTarget(stores=("cold",), exclusive=True)
        page = index.studies_needing(rule, move, now=now, limit=500)
        studies = [c.study_uid for c in page]
        rng = random.Random(args.seed)
        results = {
            "studies_needing, first page of 500 (CT > 1 year → cold)":
                timed(lambda: index.studies_needing(rule, move, now=now, limit=500), args.runs),
            "studies_needing, a page deep in the plan":
                timed(lambda: index.studies_needing(rule, move, now=now, after=studies[len(studies) // 2],
                                                    limit=500), args.runs),
            "study_facts of one study": timed(lambda: index.study_facts(rng.choice(studies)), args.runs * 5),
            "study_blobs of one study": timed(lambda: index.study_blobs(rng.choice(studies)), args.runs * 5),
            "store_usage (tier status)": timed(index.store_usage, 3),
        }
        assert archive.tiering is not None
        t0 = time.perf_counter()
        total = 0
        after = ""
        while True:
            got = index.studies_needing(rule, move, now=now, after=after, limit=500)
            total += len(got)
            if len(got) < 500:
                break
            after = got[-1].study_uid
        plan_s = time.perf_counter() - t0
    finally:
        archive.close()
    if not args.keep:
        with psycopg.connect(args.server, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{args.database}" WITH (FORCE)')
    print(f"\n{args.instances:,} instances, {args.studies:,} studies; medians (max) of repeated calls")
    for name, (med, worst) in results.items():
        print(f"  {name:58s} {med:8.1f} ms  ({worst:.1f})")
    print(f"  whole plan: {total:,} studies selected in {plan_s:.1f} s")


if __name__ == "__main__":
    main()
