"""OHIF's ``index.html`` as DicomVault serves it: the shipped page plus preload hints for what the first view needs.

Why: the published page names only the 17 MB application bundle. The browser learns of the chunks the viewer route
needs (the cornerstone extension, the image loader and its codec worker, the default mode) only once that bundle has
been downloaded, parsed and run, and then fetches them one wave after another. A ``<link rel="preload">`` for each
lets them download in parallel with the application bundle, which is where a cold start spends its time (measured
with ``benchmarks/viewer_first_image.py``; see docs/viewer.md).

The list is tied to the pinned OHIF build (file names are content hashes): a name the installed build does not have
is skipped, so another OHIF version is served correctly, only without those hints.
"""

from __future__ import annotations

import gzip
import hashlib
import re
from dataclasses import dataclass
from pathlib import Path

INDEX_NAME = "index.html"

FIRST_VIEW_ASSETS: tuple[str, ...] = ()
"""Files of @ohif/app 3.13.2 (as patched by scripts/viewer-postinstall.js) that opening a CT study always loads,
in the order the viewer asks for them; found with ``benchmarks/viewer_first_image.py --assets``."""

_AS: dict[str, str] = {".js": "script", ".css": "style", ".wasm": "fetch", ".woff2": "font", ".json": "fetch"}
"""The ``as`` of a preload per file type: it must match how the page later requests the file, or the browser
downloads it twice (webpack loads chunks with classic ``<script>`` tags without ``crossorigin``; the wasm codecs
and fonts are fetched in CORS mode, hence ``crossorigin`` on those)."""

_CORS = {"fetch", "font"}
_HEAD_END = re.compile(rb"</head>", re.I)


@dataclass(frozen=True)
class IndexPage:
    """The page's bytes (and their gzip encoding and ETag), built once per server start."""

    body: bytes
    gzipped: bytes
    etag: str
    preloaded: tuple[str, ...]


def preload_links(root: Path, assets: tuple[str, ...] = FIRST_VIEW_ASSETS) -> tuple[str, list[str]]:
    """The ``<link rel="preload">`` tags for the assets present under ``root``, and the names they cover."""
    tags, names = [], []
    for name in assets:
        suffix = Path(name).suffix.lower()
        kind = _AS.get(suffix)
        if kind is None or ".." in Path(name).parts or not (root / name).is_file():
            continue
        cors = ' crossorigin="anonymous"' if kind in _CORS else ""
        tags.append(f'<link rel="preload" href="/{name}" as="{kind}"{cors}>')
        names.append(name)
    return "".join(tags), names


def build_index_page(root: Path, assets: tuple[str, ...] = FIRST_VIEW_ASSETS) -> IndexPage:
    """``root/index.html`` with the preload tags inserted at the end of its ``<head>``."""
    html = (root / INDEX_NAME).read_bytes()
    tags, names = preload_links(root, assets)
    if tags:
        match = _HEAD_END.search(html)
        at = match.start() if match else 0
        html = html[:at] + tags.encode() + html[at:]
    etag = '"' + hashlib.sha256(html).hexdigest()[:32] + '"'
    return IndexPage(html, gzip.compress(html, compresslevel=9, mtime=0), etag, tuple(names))
