"""``/ui/dashboard``: what the archive stores, where, how it grows and what is failing (issue #13 item 4).

The figures come from ``services.dashboard`` (cached per process: reloading the page, or the page's own refresh
every 30 s, does not run the aggregates again) and are drawn as server-side SVG (``webui.charts``). Every chart has
its numbers beside it in a table, for people who do not read charts and for screen readers. A share link's visitor
(one study only) is refused: the dashboard describes the whole archive.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response

from dicomvault.ports.dashboard import Tally
from dicomvault.services.dashboard import DAY_CHOICES, DEFAULT_DAYS, DashboardService, Figures
from dicomvault.webui.charts import bar_chart, human_bytes, plain, sparkline, time_series
from dicomvault.webui.page_auth import PageUser, require_page
from dicomvault.webui.render import render

router = APIRouter(prefix="/ui", include_in_schema=False)

#: seconds between the page script's reloads of the figures
REFRESH_SECONDS = 30


def _service(request: Request, user: PageUser, days: int) -> DashboardService:
    if user.principal.study is not None:
        raise HTTPException(403, "this link opens one study only")
    if days not in DAY_CHOICES:
        raise HTTPException(400, f"days: one of {', '.join(map(str, DAY_CHOICES))}")
    service = request.app.state.archive.dashboard
    if not isinstance(service, DashboardService):
        raise HTTPException(503, "this archive was built without the dashboard")
    return service


def charts(figures: Figures) -> dict[str, Any]:
    """The SVG charts of ``figures`` (markup, escaped)."""

    def bars(tallies: list[Tally], what: str, label: str) -> Any:
        if what == "bytes":
            return bar_chart([(t.label, t.bytes) for t in tallies], label=label, fmt=human_bytes)
        return bar_chart([(t.label, t.instances) for t in tallies], label=label)

    return {
        "day_instances": time_series([(t.label, t.instances) for t in figures.by_day],
                                     label=f"Instances received per day, last {figures.days} days (UTC)"),
        "day_bytes": time_series([(t.label, t.bytes) for t in figures.by_day], fmt=human_bytes,
                                 label=f"Bytes received per day, last {figures.days} days (UTC)"),
        "hour": sparkline([t.instances for t in figures.last_hour], names=[t.label for t in figures.last_hour],
                          label="Instances received per minute over the last hour", width=240),
        "modality_bytes": bars(figures.by_modality, "bytes", "Bytes by modality"),
        "source_bytes": bars(figures.by_source, "bytes", "Bytes by source"),
        "store_bytes": bars(figures.by_store, "bytes", "Bytes by store (every copy)"),
    }


def _context(figures: Figures) -> dict[str, Any]:
    queued = sum(c.queued for c in figures.jobs)
    running = sum(c.running for c in figures.jobs)
    failed = sum(c.failed for c in figures.jobs)
    per_minute = figures.received_last_hour.instances / max(len(figures.last_hour), 1)
    return {"f": figures, "charts": charts(figures), "fmt_bytes": human_bytes, "fmt_n": plain,
            "jobs_total": {"queued": queued, "running": running, "failed": failed},
            "per_minute": f"{per_minute:.1f}", "choices": DAY_CHOICES, "refresh": REFRESH_SECONDS}


@router.get("/dashboard")
async def dashboard_page(request: Request, user: Annotated[PageUser, Depends(require_page("read"))],
                         days: int = DEFAULT_DAYS) -> Response:
    service = _service(request, user, days)
    figures = await run_in_threadpool(service.figures, days)
    return render(request, "dashboard.html", **_context(figures))


@router.get("/dashboard/figures")
async def dashboard_figures(request: Request, user: Annotated[PageUser, Depends(require_page("read"))],
                            days: int = DEFAULT_DAYS) -> Response:
    """The figures part of the page alone (what the page script reloads)."""
    service = _service(request, user, days)
    figures = await run_in_threadpool(service.figures, days)
    return render(request, "dashboard_figures.html", **_context(figures))
