"""The study list's first paint on an index of 100,000 studies (issue #13; target: under 1 s), in headless Chromium.

Why this measurement: the study browser (``/ui/studies``) is rendered on the server, one SELECT per page (see
``webui/studies.py``), so what a user waits for is the server's answer plus parsing and painting one HTML page and
its stylesheet. Both grow with the index only if a query does, which is what this benchmark is for: every search
the page offers by default, on a bulk-loaded index the size the issue names.

What it does:
  1. builds the index (``benchmarks/index_scale.py``'s loader: patients, studies, series, instances and the cached
     study answers, with the archive's own migrations for the schema) in PostgreSQL with COPY, or in SQLite
     (``--index sqlite``); ``--keep`` keeps it, ``--reuse`` serves a kept one without loading;
  2. starts ``dicomvault serve`` on it (``benchmarks/common.py``'s ``dicomvault()``, ``DICOMVAULT_INDEX_URL``);
  3. per case — the default list, a patient-name prefix as a user types it, a date range, sorted by patient name,
     one modality, a description word, pages 2 and 20 reached by following the "Next" links, and a filter that
     matches nothing with a sort order (the worst plans found) — measures:
       * the server's time for the page (wall time of a GET over a warm keep-alive connection, ``httpx``);
       * in a cold browser context (empty HTTP cache, as a first visit): ``responseEnd`` of the navigation,
         ``first-contentful-paint``, and the moment the table is complete (the pager after it is in the DOM,
         noted by a MutationObserver the page runs before its own scripts), all from navigation start;
  4. prints medians over ``--runs`` and, with ``--explain``, first the plan of each case's SELECT (the statement
     ``QueryService`` issues for the page, OFFSET form): PostgreSQL's EXPLAIN ANALYZE, SQLite's EXPLAIN QUERY PLAN
     and time.
``--ohif`` adds OHIF's own study list at ``/`` for comparison (a single-page app: its first study row in the DOM,
and its first QIDO-RS request as the server's time).

    .venv/bin/python benchmarks/web_pages.py --studies 100000 --instances 1000000 --keep      # build + measure
    .venv/bin/python benchmarks/web_pages.py --reuse --explain                                # measure again
    .venv/bin/python benchmarks/web_pages.py --index sqlite --keep                            # the same on SQLite
    .venv/bin/python benchmarks/web_pages.py --reuse --ohif                                   # and OHIF's list

The machine is shared: ``--studies 2000 --instances 20000 --runs 3`` for a quick look; measure on an idle machine.
"""

from __future__ import annotations

import argparse
import html
import re
import shutil
import sqlite3
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import httpx
import psycopg

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.common import dicomvault, median
from benchmarks.index_scale import load, load_sqlite
from benchmarks.viewer_first_image import viewer_build
from dicomvault.bootstrap import build_archive
from dicomvault.domain.tags import Level
from dicomvault.settings import Settings
from dicomvault.webui.studies import SORTS, parse_search

CHROMIUM_FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--enable-unsafe-swiftshader", "--disable-quic",
    "--no-first-run", "--disable-background-networking", "--disable-component-update", "--disable-sync",
]

#: the page's table is complete once the pager that follows it is in the DOM (the page is rendered on the server)
TABLE_JS = """
(() => {
  const done = () => {
    if (window.__dvTable === undefined && document.querySelector('nav.pager')) {
      window.__dvTable = performance.now();
      observer.disconnect();
    }
  };
  const observer = new MutationObserver(done);
  observer.observe(document, { childList: true, subtree: true });
})();
"""

METRICS_JS = """() => {
  const nav = performance.getEntriesByType('navigation')[0];
  const fcp = performance.getEntriesByType('paint').find(e => e.name === 'first-contentful-paint');
  return { responseStart: nav.responseStart, responseEnd: nav.responseEnd, fcp: fcp ? fcp.startTime : null,
           table: window.__dvTable, load: nav.loadEventEnd,
           rows: document.querySelectorAll('table.studies tbody tr').length };
}"""

#: OHIF's study list (``--ohif``): the moment its first study row is in the DOM (a single-page app: no HTML table)
OHIF_ROWS_JS = """
(() => {
  const done = () => {
    if (window.__dvTable === undefined && document.querySelector('tbody tr:not([data-filter-row])')) {
      window.__dvTable = performance.now();
      observer.disconnect();
    }
  };
  const observer = new MutationObserver(done);
  observer.observe(document, { childList: true, subtree: true });
})();
"""
OHIF_LIST = "OHIF study list (/), for comparison"
#: the QIDO-RS request OHIF's list sends first (as OHIF 3.13 sends it: 101 studies, with Modality, the referring
#: physician and the birth date)
OHIF_QIDO = ("/dicom-web/studies?limit=101&offset=0&fuzzymatching=false"
             "&includefield=00081030%2C00080060%2C00080090%2C00100030")

_NEXT = re.compile(r'rel="next" href="([^"]+)"')


@dataclass
class Case:
    """One page of the study list: its query, or the number of "Next" links followed from ``start``."""

    name: str
    query: dict[str, str] = field(default_factory=dict)
    pages: int = 0
    url: str = ""


def cases() -> list[Case]:
    return [
        Case("default list (newest first)"),
        Case("patient name 'smi' (as typed)", {"name": "smi"}),
        Case("study date, 3 months", {"from": "2015-01-01", "to": "2015-03-31"}),
        Case("sorted by patient name", {"sort": "name", "order": "asc"}),
        Case("modality MG", {"modality": "MG"}),
        Case("description contains 'BRAIN'", {"description": "BRAIN"}),  # matched case-sensitively
        Case("page 2 (Next once)", {}, pages=1),
        Case("page 20 (Next 19 times)", {}, pages=19),
        Case("page 20 by patient name", {"sort": "name", "order": "asc"}, pages=19),
        # the worst plans found (SQLite walks the sort order's index over every study for a filter it cannot
        # use an index for): a filter that matches nothing, with a sort order
        Case("no such name, sorted by date", {"name": "zzz", "sort": "date"}),
        Case("no such modality, by patient name", {"modality": "SEG", "sort": "name"}),
    ]


# -- the index -----------------------------------------------------------------------------------------------------


@contextmanager
def index(args: argparse.Namespace) -> Iterator[str]:
    """The index URL: built unless ``--reuse``; dropped at the end unless ``--keep`` or ``--reuse``."""
    if args.index == "sqlite":
        path = args.sqlite_path.resolve()
        url = f"sqlite:///{path}"
        if not args.reuse:
            if path.parent.exists():
                shutil.rmtree(path.parent)
            path.parent.mkdir(parents=True)
            migrate(url, path.parent)
            print(f"loading {args.instances:,} instances in {args.studies:,} studies into {path} …", flush=True)
            print(f"loaded in {load_sqlite(path, args):.1f} s", flush=True)
        try:
            yield url
        finally:
            if not (args.keep or args.reuse):
                shutil.rmtree(path.parent, ignore_errors=True)
        return
    base = psycopg.conninfo.conninfo_to_dict(args.server)
    url = (f"postgresql://{base.get('user', 'postgres')}@{base.get('host', '127.0.0.1')}:"
           f"{base.get('port', 5432)}/{args.database}")
    if not args.reuse:
        with psycopg.connect(args.server, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{args.database}" WITH (FORCE)')
            admin.execute(f'CREATE DATABASE "{args.database}"')
        migrate(url, Path("/tmp/dv-bench-web"))
        print(f"loading {args.instances:,} instances in {args.studies:,} studies into {args.database} …", flush=True)
        with psycopg.connect(url) as conn:
            print(f"loaded in {load(conn, args):.1f} s", flush=True)
    try:
        yield url
    finally:
        if not (args.keep or args.reuse):
            with psycopg.connect(args.server, autocommit=True) as admin:
                admin.execute(f'DROP DATABASE IF EXISTS "{args.database}" WITH (FORCE)')


def migrate(url: str, data_dir: Path) -> None:
    """The schema, through the archive's migrations (opening an archive on an empty index runs them)."""
    build_archive(Settings.load(data_dir=data_dir, index_url=url, storage_url="memory://")).close()


# -- the pages -----------------------------------------------------------------------------------------------------


def resolve(client: httpx.Client, base: str, case: Case) -> str:
    """The case's URL; for a later page, the one its "Next" links lead to, followed as a user would (which also
    fills the server's keyset cursor cache, as a user paging does)."""
    url = f"{base}/ui/studies" + (f"?{urlencode(case.query)}" if case.query else "")
    for n in range(case.pages):
        r = client.get(url)
        r.raise_for_status()
        found = _NEXT.search(r.text)
        if found is None:
            raise SystemExit(f"{case.name}: no Next link on page {n + 1} (too few studies for this case)")
        url = base + html.unescape(found.group(1))
    return url


def server_times(client: httpx.Client, url: str, runs: int) -> list[float]:
    out = []
    for _ in range(runs):
        t = time.perf_counter()
        r = client.get(url)
        out.append((time.perf_counter() - t) * 1000)
        r.raise_for_status()
    return out


def browser_load(browser: Any, url: str, *, ohif: bool = False) -> dict[str, float]:
    """One cold visit: a fresh context (empty cache, no cookies), navigate, wait for the table and the paint
    (``ohif``: for the first study row of OHIF's list; its ``rows`` is then what OHIF shows, at most 101)."""
    context = browser.new_context(viewport={"width": 1280, "height": 800}, service_workers="block")
    try:
        page = context.new_page()
        page.add_init_script(OHIF_ROWS_JS if ohif else TABLE_JS)
        page.goto(url, wait_until="load")
        page.wait_for_function("() => window.__dvTable !== undefined && performance.getEntriesByType('paint')"
                               ".some(e => e.name === 'first-contentful-paint')", timeout=60_000)
        metrics = dict(page.evaluate(METRICS_JS))
        if ohif:
            page.wait_for_load_state("networkidle")
            metrics["rows"] = page.locator("tbody tr:not([data-filter-row])").count()
        return metrics
    finally:
        context.close()


def explain(url: str, case: Case, data_dir: Path = Path("/tmp/dv-bench-web")) -> str:
    """The plan of the SELECT the page issues for ``case`` (OFFSET form): PostgreSQL's EXPLAIN (ANALYZE, BUFFERS),
    or SQLite's EXPLAIN QUERY PLAN with the statement's time (best of 3)."""
    from sqlalchemy.dialects import postgresql, sqlite

    from dicomvault.adapters.index.querying import build_select

    search = parse_search({**case.query, **({"offset": str(case.pages * 25)} if case.pages else {})})
    archive = build_archive(Settings.load(data_dir=data_dir, index_url=url,
                                          storage_url="memory://", index_pool_size=1))
    try:
        spec = archive.query.build_spec(Level.STUDY, search.keys(), return_keys=("PatientBirthDate",),
                                        fuzzy=search.fuzzy_name, limit=search.limit + 1, offset=search.offset)
    finally:
        archive.close()
    stmt = build_select(replace(spec, order_by=SORTS[search.sort][1], descending=search.order == "desc"))
    if url.startswith("sqlite"):
        sql = str(stmt.compile(dialect=sqlite.dialect(paramstyle="named"), compile_kwargs={"literal_binds": True}))
        db = sqlite3.connect(url.removeprefix("sqlite:///"))
        try:
            plan = [" ".join(str(c) for c in r[1:]) for r in db.execute(f"EXPLAIN QUERY PLAN {sql}")]
            best = float("inf")
            for _ in range(3):
                t = time.perf_counter()
                db.execute(sql).fetchall()
                best = min(best, time.perf_counter() - t)
        finally:
            db.close()
        return "\n".join(plan) + f"\nExecution Time: {best * 1000:.3f} ms"
    sql = str(stmt.compile(dialect=postgresql.dialect(paramstyle="named"), compile_kwargs={"literal_binds": True}))
    with psycopg.connect(url) as conn:
        rows = conn.execute(f"EXPLAIN (ANALYZE, BUFFERS) {sql}").fetchall()
    return "\n".join(str(r[0]) for r in rows)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--index", choices=("postgres", "sqlite"), default="postgres")
    ap.add_argument("--server", default="postgresql://postgres@127.0.0.1:5432/postgres",
                    help="maintenance connection used to create/drop the PostgreSQL database")
    ap.add_argument("--database", default="dv_bench_web")
    ap.add_argument("--sqlite-path", type=Path, default=Path("/tmp/dv-bench-web-sqlite/index.sqlite"))
    ap.add_argument("--studies", type=int, default=100_000)
    ap.add_argument("--instances", type=int, default=1_000_000)
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--runs", type=int, default=7, help="cold browser loads per case")
    ap.add_argument("--server-runs", type=int, default=20, help="timed GETs per case for the server's time")
    ap.add_argument("--keep", action="store_true", help="keep the index for --reuse")
    ap.add_argument("--reuse", action="store_true", help="serve an index kept by an earlier run, load nothing")
    ap.add_argument("--explain", action="store_true", help="print each case's query plan and SQL time first")
    ap.add_argument("--ohif", action="store_true",
                    help="also OHIF's study list at / (needs the viewer build: `make viewer` or DICOMVAULT_VIEWER_DIR)")
    args = ap.parse_args()

    from playwright.sync_api import sync_playwright

    all_cases = cases()
    with index(args) as url:
        if args.explain:
            for case in all_cases:
                print(f"\n-- {case.name}\n{explain(url, case)}", flush=True)
        results: dict[str, dict[str, list[float]]] = {c.name: {} for c in all_cases}
        env = {"DICOMVAULT_INDEX_URL": url}
        if args.ohif:
            env["DICOMVAULT_VIEWER_DIR"] = str(viewer_build())
        with dicomvault(env=env) as dv, httpx.Client(timeout=60) as client:
            for case in all_cases:
                case.url = resolve(client, dv.http, case)
                server_times(client, case.url, 3)  # warm-up: plans, templates, the keyset cache
                results[case.name]["server"] = server_times(client, case.url, args.server_runs)
            if args.ohif:
                # the server's part of OHIF's list: the QIDO-RS request it sends first (101 studies, newest first)
                ohif = Case(OHIF_LIST, url=f"{dv.http}/")
                all_cases.append(ohif)
                qido = dv.http + OHIF_QIDO
                server_times(client, qido, 3)
                results[ohif.name] = {"server": server_times(client, qido, args.server_runs)}
            with sync_playwright() as pw:
                browser = pw.chromium.launch(executable_path="/usr/bin/chromium", headless=True, args=CHROMIUM_FLAGS)
                try:
                    for case in all_cases:  # one warm-up visit each (Chromium's own start-up costs)
                        browser_load(browser, case.url, ohif=case.name == OHIF_LIST)
                    for _ in range(args.runs):
                        for case in all_cases:
                            m = browser_load(browser, case.url, ohif=case.name == OHIF_LIST)
                            for key in ("responseEnd", "fcp", "table", "rows"):
                                value = float("nan") if m[key] is None else float(m[key])
                                results[case.name].setdefault(key, []).append(value)
                finally:
                    browser.close()
    report(args, results)


def report(args: argparse.Namespace, results: dict[str, dict[str, list[float]]]) -> None:
    print(f"\nstudy list /ui/studies, {args.studies:,} studies / {args.instances:,} instances, {args.index} index; "
          f"medians (ms) of {args.server_runs} GETs and {args.runs} cold browser loads; FCP target < 1000 ms")
    print(f"| {'Page':36} | server | responseEnd | first paint | table done | rows |")
    print(f"|{'-' * 38}|-------:|------------:|------------:|-----------:|-----:|")
    for name, r in results.items():
        print(f"| {name:36} | {median(r['server']):6.1f} | {median(r['responseEnd']):11.0f} | "
              f"{median(r['fcp']):11.0f} | {median(r['table']):10.0f} | {median(r['rows']):4.0f} |")
    worst = max(median(r["fcp"]) for name, r in results.items() if name != OHIF_LIST)
    print(f"\nslowest first paint of /ui/studies {worst:.0f} ms: target < 1 s {'met' if worst < 1000 else 'NOT met'}")
    if OHIF_LIST in results:
        print("OHIF's row: 'server' is its first QIDO-RS request, 'table done' its first study row in the DOM")


if __name__ == "__main__":
    main()
