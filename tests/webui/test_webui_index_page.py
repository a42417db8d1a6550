"""The viewer's index.html with preload hints: the application bundle first and at high priority, the first view's
chunks at the end of the head at low priority, with the ``as`` (and CORS mode) the page later loads them with."""

from __future__ import annotations

import gzip
from pathlib import Path

from dicomvault.webui.index_page import FIRST_VIEW_ASSETS, build_index_page, preload_links

SHIPPED = (
    '<!doctype html><html lang="en"><head><meta charset="UTF-8"><title>OHIF Viewer</title>'
    '<script defer src="/app.bundle.0f6159c501addfe9.js"></script><link href="/app.bundle.css" rel="stylesheet">'
    '</head><body><div id="root"></div></body></html>'
)


def _build(root: Path, *names: str) -> Path:
    root.mkdir()
    (root / "index.html").write_text(SHIPPED)
    for name in names:
        (root / name).write_text("x")
    return root


def test_bundle_first_and_chunks_last(tmp_path: Path) -> None:
    root = _build(tmp_path / "ohif", "1.bundle.0123456789abcdef.js", "2.css", "f.woff2", "c.wasm")
    page = build_index_page(root, ("1.bundle.0123456789abcdef.js", "2.css", "f.woff2", "c.wasm", "missing.js",
                                   "../outside.js", "readme.txt"))
    html = page.body.decode()
    head_start = '<head><meta charset="UTF-8"><link rel="preload" href="/app.bundle.0f6159c501addfe9.js" as="script"'
    assert head_start + ' fetchpriority="high">' in html
    tail = ('<link rel="preload" href="/1.bundle.0123456789abcdef.js" as="script" fetchpriority="low">'
            '<link rel="preload" href="/2.css" as="style" fetchpriority="low">'
            '<link rel="preload" href="/f.woff2" as="font" crossorigin="anonymous" fetchpriority="low">'
            '<link rel="preload" href="/c.wasm" as="fetch" crossorigin="anonymous" fetchpriority="low"></head>')
    assert tail in html
    assert page.preloaded == ("app.bundle.0f6159c501addfe9.js", "1.bundle.0123456789abcdef.js", "2.css",
                              "f.woff2", "c.wasm")
    assert gzip.decompress(page.gzipped) == page.body


def test_without_hints_the_page_is_as_shipped(tmp_path: Path) -> None:
    root = _build(tmp_path / "ohif", "2.css")
    page = build_index_page(root, ("2.css",), hints=False)
    assert page.body.decode() == SHIPPED and page.preloaded == ()
    assert page.etag != build_index_page(root, ("2.css",)).etag


def test_another_build_gets_no_chunk_hints(tmp_path: Path) -> None:
    """The pinned list names hashed files of one OHIF version: another build has none of them."""
    root = _build(tmp_path / "ohif")
    tags, names = preload_links(root)
    assert tags == "" and names == []
    assert len(FIRST_VIEW_ASSETS) == len(set(FIRST_VIEW_ASSETS)) > 10
    assert not any("worker" in name for name in FIRST_VIEW_ASSETS)  # workers are not loaded as page scripts
