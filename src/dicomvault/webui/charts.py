"""Charts drawn on the server as SVG: a bar chart of categories, a daily time series and a sparkline.

Why hand-written SVG and not a JavaScript chart library: the dashboard's charts are bars and a line over a few
hundred numbers at most, which take a few dozen lines of SVG each; drawn on the server they need no npm build, no
CDN and no script at all (the pages work without internet access and with scripts off), they obey the pages' strict
Content-Security-Policy, and the page shows the figures as they were computed, not as a client re-derived them.

Every chart is sized by its ``viewBox`` (it scales to its container), is announced to assistive technology as one
image (``role="img"`` with an ``aria-label`` and a ``<title>``), and carries a ``<title>`` per bar or point as
its tooltip. Every text that reaches the SVG — labels come from received objects (modalities, sources) — is
escaped: the output is well-formed XML whatever the labels hold.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

from markupsafe import Markup, escape

Format = Callable[[float], str]

#: colours from app.css's palette (the bars' fill, the axis and grid lines, the muted text)
BAR = "#2f6db5"
AXIS = "#8a94a3"
GRID = "#e3e7ed"
TEXT = "#4a5361"


def plain(value: float) -> str:
    """A count with thousands separators."""
    return f"{int(value):,}"


def human_bytes(value: float) -> str:
    """Bytes in binary units, three significant digits (``1.46 GiB``)."""
    n = float(value)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB", "PiB"):
        if abs(n) < 1024 or unit == "PiB":
            return f"{int(n)} B" if unit == "B" else f"{n:.3g} {unit}"
        n /= 1024
    raise AssertionError("unreachable")


def nice_ceiling(value: float, *, binary: bool = False) -> float:
    """The smallest 1, 2 or 5 × 10^k at or above ``value`` (the top of an axis); 1 for nothing to show. With
    ``binary``, the same in the binary unit ``value`` is shown in (KiB, MiB …: the top reads ``2 MiB``)."""
    if value <= 0:
        return 1.0
    if binary and value >= 1024:
        unit = 1024.0 ** min(5, int(math.log(value, 1024)))
        return nice_ceiling(value / unit) * unit
    power = 10 ** math.floor(math.log10(value))
    for step in (1, 2, 5, 10):
        if value <= step * power:
            return float(step * power)
    return float(10 * power)


def _e(text: object) -> str:
    return str(escape(str(text)))


def _svg(width: int, height: int, label: str, body: list[str], css_class: str) -> Markup:
    head = (f'<svg xmlns="http://www.w3.org/2000/svg" class="{css_class}" viewBox="0 0 {width} {height}" '
            f'role="img" aria-label="{_e(label)}" preserveAspectRatio="xMidYMid meet">'
            f"<title>{_e(label)}</title>")
    return Markup(head + "".join(body) + "</svg>")


def bar_chart(items: Sequence[tuple[str, float]], *, label: str, fmt: Format = plain, width: int = 380,
              bar_height: int = 22) -> Markup:
    """Horizontal bars, one per (category, value), largest scale first as given; the category on the left, the
    value at the bar's end."""
    if not items:
        return _svg(width, 40, f"{label}: nothing stored", [
            f'<text x="{width // 2}" y="24" text-anchor="middle" fill="{TEXT}" font-size="13">nothing yet</text>'],
            "chart bars")
    label_w = min(150, max(40, 8 * max(len(name) for name, _ in items) + 10))
    fits = max(4, (label_w - 10) // 8)  # characters of a label that fit left of the bars (about 7 px each)
    value_w = 64
    span = width - label_w - value_w - 8
    top = max(value for _, value in items)
    gap = 6
    height = len(items) * (bar_height + gap) + gap
    body: list[str] = []
    for n, (name, value) in enumerate(items):
        y = gap + n * (bar_height + gap)
        w = 0.0 if top <= 0 else max(1.0 if value > 0 else 0.0, span * value / top)
        short = name if len(name) <= fits else name[:fits - 1] + "…"
        body.append(
            f'<g><title>{_e(name)}: {_e(fmt(value))}</title>'
            f'<text x="{label_w - 6}" y="{y + bar_height * 0.7:.1f}" text-anchor="end" fill="{TEXT}" '
            f'font-size="12">{_e(short)}</text>'
            f'<rect x="{label_w}" y="{y}" width="{w:.1f}" height="{bar_height}" fill="{BAR}" rx="2"/>'
            f'<text x="{label_w + w + 4:.1f}" y="{y + bar_height * 0.7:.1f}" fill="{TEXT}" '
            f'font-size="12">{_e(fmt(value))}</text></g>')
    return _svg(width, height, label, body, "chart bars")


def time_series(points: Sequence[tuple[str, float]], *, label: str, fmt: Format = plain, width: int = 560,
                height: int = 200, ticks: int = 5) -> Markup:
    """Vertical bars over time (one per point, oldest first), with a value axis (0, the middle, a round top: in
    binary units when ``fmt`` is ``human_bytes``) and about ``ticks`` labels along the time axis."""
    left, right, top_pad, bottom = 64, 8, 10, 28
    plot_w, plot_h = width - left - right, height - top_pad - bottom
    top = nice_ceiling(max((v for _, v in points), default=0.0), binary=fmt is human_bytes)
    body: list[str] = []
    for k in range(3):  # grid lines and value ticks: 0, half, top
        value = top * k / 2
        y = top_pad + plot_h - plot_h * k / 2
        body.append(f'<line x1="{left}" y1="{y:.1f}" x2="{width - right}" y2="{y:.1f}" stroke="{GRID}"/>'
                    f'<text x="{left - 6}" y="{y + 4:.1f}" text-anchor="end" fill="{TEXT}" '
                    f'font-size="11">{_e(fmt(value))}</text>')
    n = len(points)
    slot = plot_w / max(n, 1)
    every = max(1, math.ceil(n / max(ticks, 1)))
    for i, (name, value) in enumerate(points):
        x = left + i * slot
        h = plot_h * value / top if top > 0 else 0.0
        if value > 0:
            h = max(h, 1.0)
        body.append(f'<rect x="{x + slot * 0.1:.2f}" y="{top_pad + plot_h - h:.2f}" width="{max(slot * 0.8, 0.5):.2f}" '
                    f'height="{h:.2f}" fill="{BAR}"><title>{_e(name)}: {_e(fmt(value))}</title></rect>')
        if i % every == 0:
            body.append(f'<line x1="{x + slot / 2:.1f}" y1="{top_pad + plot_h}" x2="{x + slot / 2:.1f}" '
                        f'y2="{top_pad + plot_h + 4}" stroke="{AXIS}"/>'
                        f'<text x="{x + slot / 2:.1f}" y="{height - 8}" text-anchor="middle" fill="{TEXT}" '
                        f'font-size="11">{_e(name)}</text>')
    body.append(f'<line x1="{left}" y1="{top_pad + plot_h}" x2="{width - right}" y2="{top_pad + plot_h}" '
                f'stroke="{AXIS}"/>')
    return _svg(width, height, label, body, "chart series")


def sparkline(values: Sequence[float], *, label: str, width: int = 180, height: int = 36,
              names: Sequence[str] | None = None, fmt: Format = plain) -> Markup:
    """A small line of ``values`` (oldest first) with no axes; each point's value is its tooltip."""
    n = len(values)
    top = max(values, default=0.0) or 1.0
    pad = 3
    step = (width - 2 * pad) / max(n - 1, 1)

    def xy(i: int, v: float) -> tuple[float, float]:
        return pad + i * step, height - pad - (height - 2 * pad) * v / top

    coords = " ".join(f"{x:.1f},{y:.1f}" for x, y in (xy(i, v) for i, v in enumerate(values)))
    body = [f'<polyline points="{coords}" fill="none" stroke="{BAR}" stroke-width="1.5"/>'] if n > 1 else []
    for i, v in enumerate(values):
        x, y = xy(i, v)
        name = names[i] if names is not None and i < len(names) else str(i + 1)
        body.append(f'<circle cx="{x:.1f}" cy="{y:.1f}" r="{2.2 if v else 1.2}" fill="{BAR}">'
                    f"<title>{_e(name)}: {_e(fmt(v))}</title></circle>")
    return _svg(width, height, label, body, "chart spark")
