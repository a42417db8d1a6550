"""Server-side SVG charts: well-formed XML whatever the labels hold, accessible, one tooltip per bar."""

from __future__ import annotations

import xml.etree.ElementTree as ET

from dicomvault.webui.charts import bar_chart, human_bytes, nice_ceiling, sparkline, time_series

SVG = "{http://www.w3.org/2000/svg}"
NASTY = '<script>alert("x")</script> & \'quotes\' ]]> \u00e9'


def parse(markup: str) -> ET.Element:
    root = ET.fromstring(str(markup))
    assert root.tag == SVG + "svg" and root.get("role") == "img" and root.get("aria-label")
    assert root.get("viewBox", "").startswith("0 0 ")
    assert root[0].tag == SVG + "title"
    return root


def titles(root: ET.Element) -> list[str]:
    return [t.text or "" for t in root.iter(SVG + "title")][1:]


def test_bar_chart_escapes_labels_and_has_a_tooltip_per_bar() -> None:
    svg = bar_chart([(NASTY, 3), ("CT", 10), ("MR", 0)], label=f"Instances by source {NASTY}")
    assert "<script>" not in svg
    root = parse(svg)
    assert root.get("aria-label") == f"Instances by source {NASTY}"
    assert titles(root) == [f"{NASTY}: 3", "CT: 10", "MR: 0"]
    widths = [float(r.get("width", "0")) for r in root.iter(SVG + "rect")]
    assert widths[1] > widths[0] > widths[2] == 0  # proportional; nothing drawn for 0


def test_empty_bar_chart_says_so() -> None:
    root = parse(bar_chart([], label="Bytes by store"))
    assert "nothing yet" in ET.tostring(root, encoding="unicode")


def test_time_series_axis_ticks_and_bars() -> None:
    points = [(f"2026-12-{d:02d}", float(d % 3) * 1024**2) for d in range(1, 31)]
    root = parse(time_series(points, label="Bytes received per day", fmt=human_bytes, ticks=6))
    rects = list(root.iter(SVG + "rect"))
    assert len(rects) == 30 and titles(root)[0] == "2026-12-01: 1 MiB"
    texts = [t.text for t in root.iter(SVG + "text")]
    assert "0 B" in texts and "2 MiB" in texts  # value axis: 0 … the round top
    assert "2026-12-01" in texts and 4 <= sum(1 for t in texts if t and t.startswith("2026-12-")) <= 7


def test_time_series_of_nothing_is_still_a_chart() -> None:
    root = parse(time_series([("a", 0.0), ("b", 0.0)], label="nothing"))
    assert all(float(r.get("height", "1")) == 0 for r in root.iter(SVG + "rect"))


def test_sparkline() -> None:
    root = parse(sparkline([0, 2, 5, 1], label="Instances per minute", names=["a", "b", NASTY, "d"]))
    assert len(list(root.iter(SVG + "circle"))) == 4 and len(list(root.iter(SVG + "polyline"))) == 1
    assert titles(root)[2] == f"{NASTY}: 5"
    parse(sparkline([], label="empty"))


def test_number_helpers() -> None:
    assert [nice_ceiling(v) for v in (0, 0.3, 1, 7, 12, 180, 2001)] == [1, 0.5, 1, 10, 20, 200, 5000]
    assert human_bytes(0) == "0 B" and human_bytes(1536) == "1.5 KiB" and human_bytes(5 * 1024**3) == "5 GiB"
