"""Index scale benchmark: QIDO-style study searches on a PostgreSQL index of 1,000,000 instances.

Bulk-generates patients, studies, series and instances straight into a fresh PostgreSQL database with COPY (the
schema comes from the archive's own migrations, so the pg_trgm and text_pattern_ops indexes of migration 0003 and
the later ones are in place), then writes each study's cached default QIDO-RS answer (table ``study_qido``, as
ingest does), then runs searches through ``QueryService`` — the code path behind C-FIND and QIDO-RS — and
reports p50/p99 latency per query kind. Target: p99 < 50 ms.

    .venv/bin/python benchmarks/index_scale.py --instances 1000000 --studies 100000 \
        --server postgresql://postgres@127.0.0.1:5432/postgres --report /tmp/benchmarks-index.md

The database (``dv_bench_index`` unless ``--database``) is dropped at the end unless ``--keep``.
"""

from __future__ import annotations

import argparse
import gc
import json
import platform
import random
import sqlite3
import statistics
import sys
import time
from collections.abc import Callable, Iterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import psycopg
from sqlalchemy import Engine, create_engine
from sqlalchemy.pool import NullPool

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))

from dicomvault.adapters.index import study_answers  # noqa: E402
from dicomvault.bootstrap import build_archive  # noqa: E402
from dicomvault.domain.tags import Level  # noqa: E402
from dicomvault.settings import Settings  # noqa: E402

FAMILY = ["SMITH", "JOHNSON", "WILLIAMS", "BROWN", "JONES", "GARCIA", "MILLER", "DAVIS", "RODRIGUEZ", "MARTINEZ",
          "HERNANDEZ", "LOPEZ", "GONZALEZ", "WILSON", "ANDERSON", "THOMAS", "TAYLOR", "MOORE", "JACKSON", "MARTIN",
          "LEE", "PEREZ", "THOMPSON", "WHITE", "HARRIS", "SANCHEZ", "CLARK", "RAMIREZ", "LEWIS", "ROBINSON",
          "WALKER", "YOUNG", "ALLEN", "KING", "WRIGHT", "SCOTT", "TORRES", "NGUYEN", "HILL", "FLORES", "GREEN",
          "ADAMS", "NELSON", "BAKER", "HALL", "RIVERA", "CAMPBELL", "MITCHELL", "CARTER", "ROBERTS", "MUELLER",
          "SCHMIDT", "SCHNEIDER", "FISCHER", "WEBER", "MEYER", "WAGNER", "BECKER", "SCHULZ", "HOFFMANN", "DUBOIS",
          "LEFEBVRE", "MOREAU", "LAURENT", "SIMON", "MICHEL", "ROSSI", "RUSSO", "FERRARI", "ESPOSITO", "BIANCHI",
          "ROMANO", "COLOMBO", "RICCI", "MARINO", "GRECO", "BRUNO", "GALLO", "CONTI", "DELUCA", "MANCINI",
          "TANAKA", "SUZUKI", "TAKAHASHI", "WATANABE", "ITO", "YAMAMOTO", "NAKAMURA", "KOBAYASHI", "KATO", "YOSHIDA",
          "KOWALSKI", "NOWAK", "WISNIEWSKI", "WOJCIK", "KOWALCZYK", "KAMINSKI", "LEWANDOWSKI", "ZIELINSKI",
          "SZYMANSKI", "WOZNIAK"]
GIVEN = ["JAMES", "MARY", "JOHN", "PATRICIA", "ROBERT", "JENNIFER", "MICHAEL", "LINDA", "WILLIAM", "ELIZABETH",
         "DAVID", "BARBARA", "RICHARD", "SUSAN", "JOSEPH", "JESSICA", "THOMAS", "SARAH", "CHARLES", "KAREN",
         "ANNA", "HANS", "PIERRE", "MARIE", "GIULIA", "MARCO", "YUKI", "HIROSHI", "PIOTR", "AGNIESZKA"]
MODALITIES = ["CT", "MR", "CR", "DX", "US", "MG", "PT", "NM", "XA", "SR"]
DESCRIPTIONS = ["CHEST", "ABDOMEN", "BRAIN", "PELVIS", "KNEE", "SPINE", "CARDIAC", "LIVER", "BREAST", "HAND"]
CT_CLASS = "1.2.840.10008.5.1.4.1.1.2"
EVLE = "1.2.840.10008.1.2.1"
UID_ROOT = "1.2.826.0.1.3680043.10.543"  # deterministic, short, unique UIDs under a test root


def _rows(args: argparse.Namespace, rng: random.Random) -> tuple[list[tuple[object, ...]], ...]:
    """Generate every row in memory (about 1 GB of Python objects for 1M instances is avoided: instances are
    streamed by ``_instance_rows``); returns patients, studies, series plus per-series instance counts."""
    n_pat = max(1, args.studies // 4)
    patients = []
    for p in range(1, n_pat + 1):
        fam, giv = rng.choice(FAMILY), rng.choice(GIVEN)
        pid = f"PID{p:07d}"
        patients.append([p, f"{pid}\x1f", pid, None, f"{fam.title()}^{giv.title()}", f"{fam}^{giv}",
                         f"19{rng.randint(30, 99)}0{rng.randint(1, 9)}1{rng.randint(0, 9)}", rng.choice("MF"),
                         0, 0, 0])
    studies, series = [], []
    per_study = args.instances // args.studies
    extra = args.instances - per_study * args.studies
    d0 = date(2010, 1, 1)
    series_id = 0
    series_sizes: list[int] = []
    for s in range(1, args.studies + 1):
        p = rng.randint(1, n_pat)
        n_inst = per_study + (1 if s <= extra else 0)
        n_series = max(1, min(n_inst, rng.choice((1, 2, 2, 3))))
        mods = sorted({rng.choice(MODALITIES) for _ in range(n_series)})
        sizes = [n_inst // n_series + (1 if k < n_inst % n_series else 0) for k in range(n_series)]
        day = d0 + timedelta(days=rng.randint(0, 365 * 15))
        for k, size in enumerate(sizes):
            series_id += 1
            series.append([series_id, f"{UID_ROOT}.2.{series_id}", s, mods[k % len(mods)], k + 1,
                           f"{rng.choice(DESCRIPTIONS)} {mods[k % len(mods)]} SERIES {k + 1}", None,
                           day.strftime("%Y%m%d"), None, None, None, None, None, size])
            series_sizes.append(size)
        ref_f, ref_g = rng.choice(FAMILY), rng.choice(GIVEN)
        studies.append([s, f"{UID_ROOT}.1.{s}", p, day.strftime("%Y%m%d"), "101500", "101500.000000",
                        f"ACC{s:08d}", f"S{s}", f"{ref_f.title()}^{ref_g.title()}", f"{ref_f}^{ref_g}",
                        f"{rng.choice(DESCRIPTIONS)} {' '.join(mods)}", "\\" + "\\".join(mods) + "\\",
                        n_series, n_inst, n_inst * 200_000, datetime.now(UTC)])
        pat = patients[p - 1]
        pat[8] += 1
        pat[9] += n_series
        pat[10] += n_inst
    return patients, studies, series, [[n] for n in series_sizes]


def _instance_rows(series: list[list[object]]) -> Iterator[tuple[object, ...]]:
    iid = 0
    now = datetime.now(UTC)
    for se in series:
        series_id, size = se[0], int(se[13])  # type: ignore[call-overload]
        for n in range(size):
            iid += 1
            sop = f"{UID_ROOT}.3.{iid}"
            key = f"{iid:064x}"
            meta = json.dumps({"00080016": {"vr": "UI", "Value": [CT_CLASS]},
                               "00080018": {"vr": "UI", "Value": [sop]},
                               "00200013": {"vr": "IS", "Value": [n + 1]}}, separators=(",", ":"))
            yield (iid, sop, series_id, CT_CLASS, n + 1, 512, 512, 1, 16, None, None, None, EVLE, key, 200_000,
                   key, meta, None, "bench", now)


#: the columns each bulk-loaded table receives, in the order ``_rows`` / ``_instance_rows`` produce them
COLUMNS = {
    "patients": "id, patient_key, patient_id, issuer_of_patient_id, patient_name, patient_name_n, "
                "patient_birth_date, patient_sex, num_studies, num_series, num_instances",
    "studies": "id, study_uid, patient_fk, study_date, study_time, study_time_n, accession_number, study_id, "
               "referring_physician_name, referring_physician_name_n, study_description, modalities_in_study, "
               "num_series, num_instances, size_bytes, updated_at",
    "series": "id, series_uid, study_fk, modality, series_number, series_description, body_part_examined, "
              "series_date, series_time, series_time_n, pps_start_date, pps_start_time, pps_start_time_n, "
              "num_instances",
    "instances": "id, sop_uid, series_fk, sop_class_uid, instance_number, rows, columns, number_of_frames, "
                 "bits_allocated, content_date, content_time, content_time_n, transfer_syntax_uid, blob_key, "
                 "blob_size, blob_sha256, metadata, frame_index, source, stored_at",
}
TABLES = ("patients", "studies", "series", "instances")


def _sources(args: argparse.Namespace) -> dict[str, Callable[[], Iterator[tuple[object, ...]]]]:
    rng = random.Random(args.seed)
    patients, studies, series, _ = _rows(args, rng)
    return {
        "patients": lambda: (tuple(r) for r in patients),
        "studies": lambda: (tuple(r) for r in studies),
        "series": lambda: (tuple(r) for r in series),
        "instances": lambda: _instance_rows(series),
    }


def fill_study_answers(engine: Engine) -> int:
    """The cached default QIDO-RS answer of every study (table ``study_qido``, migration 0004), as ingest writes
    it: without it QIDO-RS (OHIF's study list) answers every study from its columns, slower than in a real
    archive. Returns how many were written."""
    with engine.begin() as conn:
        return study_answers.backfill(conn)


def load(conn: psycopg.Connection, args: argparse.Namespace) -> float:
    """Bulk-load the synthetic index into PostgreSQL with COPY, then the cached study answers; VACUUM ANALYZE."""
    t0 = time.perf_counter()
    data = _sources(args)
    with conn.cursor() as cur:
        for table in TABLES:
            t = time.perf_counter()
            with cur.copy(f"COPY {table} ({COLUMNS[table]}) FROM STDIN") as copy:
                for row in data[table]():
                    copy.write_row(row)
            print(f"  {table}: copied in {time.perf_counter() - t:.1f} s", flush=True)
            cur.execute(f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), (SELECT max(id) FROM {table}))")
    conn.commit()
    t = time.perf_counter()
    dsn = conn.info.dsn
    engine = create_engine("postgresql+psycopg://", creator=lambda: psycopg.connect(dsn), poolclass=NullPool)
    try:
        n = fill_study_answers(engine)
    finally:
        engine.dispose()
    print(f"  study_qido: {n:,} answers in {time.perf_counter() - t:.1f} s", flush=True)
    conn.autocommit = True
    conn.execute("VACUUM ANALYZE")
    return time.perf_counter() - t0


def load_sqlite(path: Path, args: argparse.Namespace) -> float:
    """The same synthetic index into a SQLite file whose schema the migrations made (``executemany`` in one
    transaction: SQLite has no COPY), then the cached study answers. No ANALYZE: the archive never runs it on its
    embedded index (PostgreSQL's autovacuum does analyze), so the query plans are those of a real archive."""
    t0 = time.perf_counter()
    data = _sources(args)
    db = sqlite3.connect(path)
    try:
        for table in TABLES:
            t = time.perf_counter()
            names = COLUMNS[table]
            marks = ", ".join("?" for _ in names.split(","))
            db.executemany(f"INSERT INTO {table} ({names}) VALUES ({marks})",
                           (tuple(_sqlite_value(v) for v in row) for row in data[table]()))
            print(f"  {table}: inserted in {time.perf_counter() - t:.1f} s", flush=True)
        db.commit()
    finally:
        db.close()
    t = time.perf_counter()
    engine = create_engine(f"sqlite:///{path}", poolclass=NullPool)
    try:
        n = fill_study_answers(engine)
    finally:
        engine.dispose()
    print(f"  study_qido: {n:,} answers in {time.perf_counter() - t:.1f} s", flush=True)
    return time.perf_counter() - t0


def _sqlite_value(value: object) -> object:
    """A timestamp as SQLAlchemy's SQLite DateTime stores it (naive ISO text, UTC); anything else as is."""
    if isinstance(value, datetime):
        return value.astimezone(UTC).replace(tzinfo=None).isoformat(sep=" ", timespec="microseconds")
    return value


def run_queries(index_url: str, args: argparse.Namespace) -> dict[str, dict[str, float]]:
    rng = random.Random(args.seed + 1)
    archive = build_archive(Settings.load(data_dir=Path("/tmp/dv-bench-index"), index_url=index_url,
                                          storage_url="memory://", index_pool_size=2))
    n_pat = max(1, args.studies // 4)
    kinds: dict[str, Callable[[], dict[str, str]]] = {
        "PatientID exact": lambda: {"PatientID": f"PID{rng.randint(1, n_pat):07d}"},
        "PatientName prefix (SMI*)": lambda: {"PatientName": rng.choice(FAMILY)[:3] + "*"},
        "PatientName infix (*ERNAN*)": lambda: {"PatientName": "*" + rng.choice(FAMILY)[1:5] + "*"},
        "AccessionNumber exact": lambda: {"AccessionNumber": f"ACC{rng.randint(1, args.studies):08d}"},
        "StudyDate range (30 days)": lambda: _date_range(rng),
        "ModalitiesInStudy": lambda: {"ModalitiesInStudy": rng.choice(MODALITIES)},
        "PatientName prefix + StudyDate": lambda: {"PatientName": rng.choice(FAMILY)[:4] + "*",
                                                   **_date_range(rng, 365)},
    }
    results: dict[str, dict[str, float]] = {}
    if not args.no_gc_freeze:
        # What a long-running server should do once after start-up: move the start-up heap (pydicom's data
        # dictionary, SQLAlchemy's compiled statements, …) out of the cyclic GC's reach; otherwise every full
        # collection walks it and stalls a request for ~50 ms.
        gc.collect()
        gc.freeze()
    try:
        for name, make in kinds.items():
            for _ in range(5):  # warm-up (plans, caches)
                archive.query.search(archive.query.build_spec(Level.STUDY, make(), limit=args.limit))
            times, hits = [], []
            for _ in range(args.queries):
                spec = archive.query.build_spec(Level.STUDY, make(), limit=args.limit)
                t = time.perf_counter()
                rows = archive.query.search(spec)
                times.append((time.perf_counter() - t) * 1000)
                hits.append(len(rows))
            times.sort()
            results[name] = {"p50": statistics.median(times), "p99": times[min(len(times) - 1,
                                                                              int(len(times) * 0.99))],
                             "max": times[-1], "mean_hits": statistics.mean(hits)}
            r = results[name]
            print(f"  {name:34} p50 {r['p50']:6.1f} ms  p99 {r['p99']:6.1f} ms  max {r['max']:6.1f} ms  "
                  f"hits {r['mean_hits']:.1f}", flush=True)
    finally:
        archive.close()
    return results


def _date_range(rng: random.Random, days: int = 30) -> dict[str, str]:
    start = date(2010, 1, 1) + timedelta(days=rng.randint(0, 365 * 15 - days))
    return {"StudyDate": f"{start:%Y%m%d}-{start + timedelta(days=days):%Y%m%d}"}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--server", default="postgresql://postgres@127.0.0.1:5432/postgres",
                    help="maintenance connection used to create/drop the benchmark database")
    ap.add_argument("--database", default="dv_bench_index")
    ap.add_argument("--instances", type=int, default=1_000_000)
    ap.add_argument("--studies", type=int, default=100_000)
    ap.add_argument("--queries", type=int, default=200, help="timed queries per kind")
    ap.add_argument("--limit", type=int, default=100, help="QIDO page size (limit) per query")
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--keep", action="store_true", help="keep the database (re-run queries with --reuse)")
    ap.add_argument("--reuse", action="store_true", help="query an existing benchmark database, load nothing")
    ap.add_argument("--report", type=Path, help="write a Markdown report here")
    ap.add_argument("--no-gc-freeze", action="store_true", help="leave the start-up heap to the cyclic GC")
    args = ap.parse_args()
    base = psycopg.conninfo.conninfo_to_dict(args.server)
    index_url = (f"postgresql://{base.get('user', 'postgres')}@{base.get('host', '127.0.0.1')}:"
                 f"{base.get('port', 5432)}/{args.database}")
    load_s = None
    if not args.reuse:
        with psycopg.connect(args.server, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{args.database}" WITH (FORCE)')
            admin.execute(f'CREATE DATABASE "{args.database}"')
        build_archive(Settings.load(data_dir=Path("/tmp/dv-bench-index"), index_url=index_url,
                                    storage_url="memory://")).close()  # schema through the migrations
        print(f"loading {args.instances:,} instances in {args.studies:,} studies …", flush=True)
        with psycopg.connect(index_url) as conn:
            load_s = load(conn, args)
        print(f"loaded in {load_s:.1f} s", flush=True)
    results = run_queries(index_url, args)
    with psycopg.connect(index_url) as conn:
        size = conn.execute("SELECT pg_size_pretty(pg_database_size(current_database()))").fetchone()
        version = conn.execute("SHOW server_version").fetchone()
    if not args.keep:
        with psycopg.connect(args.server, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{args.database}" WITH (FORCE)')
    if args.report:
        write_report(args, results, load_s, size[0] if size else "?", version[0] if version else "?")


def write_report(args: argparse.Namespace, results: dict[str, dict[str, float]], load_s: float | None,
                 size: str, version: str) -> None:
    ok = all(r["p99"] < 50 for r in results.values())
    lines = [
        "# Index scale benchmark (PostgreSQL)",
        "",
        f"Command: `.venv/bin/python benchmarks/index_scale.py --instances {args.instances} --studies {args.studies}"
        f" --queries {args.queries} --limit {args.limit}{' --no-gc-freeze' if args.no_gc_freeze else ''}"
        f" --report {args.report}`",
        "",
        f"Data: {args.instances:,} instances, {args.studies:,} studies, {max(1, args.studies // 4):,} patients, "
        f"1–3 series per study; database size {size}" + (f", bulk load (COPY + VACUUM ANALYZE) {load_s:.0f} s."
                                                          if load_s else "."),
        f"Machine: {platform.machine()}, {platform.system()} {platform.release()}, PostgreSQL {version} "
        "(stock settings, shared with other work), Python " + platform.python_version() + ".",
        "",
        f"Each query is a STUDY-level search through `QueryService` (the engine behind C-FIND and QIDO-RS) with "
        f"limit {args.limit}, {args.queries} timed runs per kind with random values after 5 warm-up runs; "
        "time includes building DICOM JSON for the returned rows. "
        + ("The cyclic GC was left alone (`--no-gc-freeze`)." if args.no_gc_freeze else
           "`gc.freeze()` was called once after start-up, as a server should (see below)."),
        "",
        "| Query | p50 (ms) | p99 (ms) | max (ms) | mean hits |",
        "|---|---:|---:|---:|---:|",
    ]
    for name, r in results.items():
        lines.append(f"| {name} | {r['p50']:.1f} | {r['p99']:.1f} | {r['max']:.1f} | {r['mean_hits']:.1f} |")
    lines += ["", f"Target p99 < 50 ms: {'met' if ok else 'NOT met'} for every query kind.", ""]
    args.report.write_text("\n".join(lines))
    print(f"report written to {args.report}")


if __name__ == "__main__":
    main()
