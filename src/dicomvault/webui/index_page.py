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

FIRST_VIEW_ASSETS: tuple[str, ...] = (
    "1673.bundle.76779c7722e8c6c0.js", "6938.bundle.34415aaeea5935b3.js", "6489.bundle.95cb243641a61a2f.js",
    "6495.bundle.8e8306fedff44999.js", "8478.bundle.4520037e6185b95f.js", "89.bundle.b327bf3664812958.js",
    "6214.css", "2779.bundle.4621e305af9e2c6a.js", "2623.css", "2623.bundle.44c0c8ec6fa40d03.js",
    "6749.bundle.2a95108fde2dedb6.js", "5696.bundle.292d30e7e9e1fab1.js", "1483.bundle.256a358f0af21ca9.js",
    "9383.bundle.40008913697b48b8.js", "7499.bundle.796480e788eda09a.js", "8492.css",
    "8492.bundle.f30e427e47ad3932.js", "9290.bundle.90bacace23d695b0.js", "4683.bundle.d4913bffd8e587b7.js",
    "1180.bundle.762993518ea30ae3.js", "7248.bundle.e874b288ff479513.js", "3833.css", "781.css",
    "781.bundle.54774b486e83a5e1.js", "9415.css", "9415.bundle.95b6a277cf9bd823.js",
    "3500.bundle.e96688cc0e82b35f.js", "9116.bundle.391de9ce46a7ca19.js", "100.bundle.cb02411ce321d4e4.js",
    "5406.bundle.4dcfa7c697973300.js", "3760.css", "3760.bundle.dc948e0d7fbed387.js",
    "8097.bundle.8ae6404ba94890a0.js", "9068.bundle.e1d5946c370fd4ee.js", "5448.bundle.ac180bf858959dd5.js",
    "899.bundle.3ea5c8d021b1e60d.js", "7463.css", "7463.bundle.40668aa8d083d077.js", "5910.css",
    "5910.bundle.f969465957013c3e.js", "1206.bundle.786e5b556f903028.js", "a34f9d1faa5f3315.woff2",
)
"""Files of @ohif/app 3.13.2 (as patched by scripts/viewer-postinstall.js) that opening a CT study always loads,
in the order the viewer asks for them; found with ``benchmarks/viewer_first_image.py --assets``."""

_AS: dict[str, str] = {".js": "script", ".css": "style", ".wasm": "fetch", ".woff2": "font", ".json": "fetch"}
"""The ``as`` of a preload per file type: it must match how the page later requests the file, or the browser
downloads it twice (webpack loads chunks with classic ``<script>`` tags without ``crossorigin``; the wasm codecs
and fonts are fetched in CORS mode, hence ``crossorigin`` on those)."""

_CORS = {"fetch", "font"}
_HEAD_END = re.compile(rb"</head>", re.I)
_HEAD_START = re.compile(rb"<head[^>]*>(\s*<meta charset=[^>]*>)?", re.I)
_APP_BUNDLE = re.compile(rb'<script\b[^>]*\bsrc="(/app\.bundle\.[0-9a-f]{16}\.js)"')


@dataclass(frozen=True)
class IndexPage:
    """The page's bytes (and their gzip encoding and ETag), built once per server start."""

    body: bytes
    gzipped: bytes
    etag: str
    preloaded: tuple[str, ...]


def preload_links(root: Path, assets: tuple[str, ...] = FIRST_VIEW_ASSETS) -> tuple[str, list[str]]:
    """The ``<link rel="preload">`` tags for the assets present under ``root``, and the names they cover.

    They are marked ``fetchpriority="low"``: over HTTP/1.1 the browser opens six connections per origin, and the
    application bundle (which the page itself loads at low priority, as a deferred script) must not queue behind
    forty chunks it needs only after it has run."""
    tags, names = [], []
    for name in assets:
        suffix = Path(name).suffix.lower()
        kind = _AS.get(suffix)
        if kind is None or ".." in Path(name).parts or not (root / name).is_file():
            continue
        cors = ' crossorigin="anonymous"' if kind in _CORS else ""
        tags.append(f'<link rel="preload" href="/{name}" as="{kind}"{cors} fetchpriority="low">')
        names.append(name)
    return "".join(tags), names


def build_index_page(root: Path, assets: tuple[str, ...] = FIRST_VIEW_ASSETS, *, hints: bool = True) -> IndexPage:
    """``root/index.html`` with a high-priority preload of the application bundle at the start of its ``<head>``
    and the preloads of ``assets`` at its end (``hints=False``: the page as shipped, for comparisons)."""
    html = (root / INDEX_NAME).read_bytes()
    names: list[str] = []
    if hints:
        bundles = _APP_BUNDLE.findall(html)
        if bundles:
            first = "".join(f'<link rel="preload" href="{b.decode()}" as="script" fetchpriority="high">'
                            for b in bundles).encode()
            match = _HEAD_START.search(html)
            at = match.end() if match else 0
            html = html[:at] + first + html[at:]
            names.extend(b.decode().lstrip("/") for b in bundles)
        tags, more = preload_links(root, assets)
        if tags:
            match = _HEAD_END.search(html)
            at = match.start() if match else len(html)
            html = html[:at] + tags.encode() + html[at:]
            names.extend(more)
    etag = '"' + hashlib.sha256(html).hexdigest()[:32] + '"'
    return IndexPage(html, gzip.compress(html, compresslevel=9, mtime=0), etag, tuple(names))
