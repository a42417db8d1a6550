"""HTTP content negotiation for WADO-RS (PS3.18 8.7): Accept parsing and the media type / transfer syntax tables.

An Accept header is a list of media ranges with parameters and q-values, e.g.
``multipart/related; type="application/octet-stream"; transfer-syntax=*, image/jpeg;q=0.5``. Each range becomes an
``Acceptable`` (outer media type, inner ``type`` for multipart, ``transfer-syntax`` parameter, q); callers walk them
in preference order and take the first they can satisfy, answering 406 when none fits.

Viewers differ in quoting (OHIF's ``omitQuotationForMultipartRequest`` drops the quotes around ``type``), so
quoted and bare parameter values are treated alike, as are parameters split across the outer and inner type.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from dicomvault.dicom import tables

#: Transfer syntaxes whose pixel data is not encapsulated: frames are native little-endian bytes once served.
NATIVE_SYNTAXES = tables.NATIVE_SYNTAXES
EXPLICIT_LE = "1.2.840.10008.1.2.1"
#: Compressed syntaxes that may be lossy: PS3.18 8.7.3.3 lets the server keep them when no syntax was asked for.
LOSSY_SYNTAXES = frozenset({
    "1.2.840.10008.1.2.4.50", "1.2.840.10008.1.2.4.51", "1.2.840.10008.1.2.4.81", "1.2.840.10008.1.2.4.91",
    "1.2.840.10008.1.2.4.93", "1.2.840.10008.1.2.4.203",
    *(f"1.2.840.10008.1.2.4.{n}" for n in range(100, 109)),
})

#: Stored transfer syntax → the bulk data media type a frame is served in (PS3.18 Tables 8.7.3-4/-5).
_FRAME_MEDIA: dict[str, str] = {
    "1.2.840.10008.1.2.5": "image/dicom-rle",
    "1.2.840.10008.1.2.4.50": "image/jpeg",
    "1.2.840.10008.1.2.4.51": "image/jpeg",
    "1.2.840.10008.1.2.4.57": "image/jpeg",
    "1.2.840.10008.1.2.4.70": "image/jpeg",
    "1.2.840.10008.1.2.4.80": "image/jls",
    "1.2.840.10008.1.2.4.81": "image/jls",
    "1.2.840.10008.1.2.4.90": "image/jp2",
    "1.2.840.10008.1.2.4.91": "image/jp2",
    "1.2.840.10008.1.2.4.92": "image/jpx",
    "1.2.840.10008.1.2.4.93": "image/jpx",
    "1.2.840.10008.1.2.4.201": "image/jphc",
    "1.2.840.10008.1.2.4.202": "image/jphc",
    "1.2.840.10008.1.2.4.203": "image/jphc",
    "1.2.840.10008.1.2.4.100": "video/mpeg2",
    "1.2.840.10008.1.2.4.101": "video/mpeg2",
    "1.2.840.10008.1.2.4.102": "video/mp4",
    "1.2.840.10008.1.2.4.103": "video/mp4",
    "1.2.840.10008.1.2.4.104": "video/mp4",
    "1.2.840.10008.1.2.4.105": "video/mp4",
    "1.2.840.10008.1.2.4.106": "video/mp4",
    "1.2.840.10008.1.2.4.107": "video/H265",
    "1.2.840.10008.1.2.4.108": "video/H265",
}
#: Media types some clients use for the same codestreams (image/j2c: a raw J2K codestream, which is what is stored).
_ALIASES = {"image/j2c": "image/jp2", "image/x-dicom-rle": "image/dicom-rle", "image/x-jls": "image/jls"}


def frame_media(stored_ts: str) -> tuple[str, str]:
    """(media type, transfer syntax) a frame of an object stored in ``stored_ts`` is served in unchanged."""
    if stored_ts in NATIVE_SYNTAXES or stored_ts == "1.2.840.10008.1.2.1.98":
        return "application/octet-stream", EXPLICIT_LE
    return _FRAME_MEDIA.get(stored_ts, "application/octet-stream"), stored_ts


def media_of(stored_ts: str) -> str:
    return frame_media(stored_ts)[0]


@dataclass(frozen=True)
class Acceptable:
    """One media range of an Accept header: ``media`` is the outer type (``multipart/related`` or a bare type),
    ``inner`` the representation asked for (the ``type`` parameter, or ``media`` itself when not multipart)."""

    media: str
    inner: str
    transfer_syntax: str | None
    q: float
    params: dict[str, str] = field(default_factory=dict, compare=False)

    @property
    def multipart(self) -> bool:
        return self.media == "multipart/related"

    def matches(self, media_type: str) -> bool:
        """Whether the inner type admits ``media_type`` (wildcards ``*/*`` and ``image/*`` included)."""
        inner = _ALIASES.get(self.inner, self.inner)
        if inner in ("*/*", "*", ""):
            return True
        if inner.endswith("/*"):
            return media_type.split("/")[0] == inner[:-2]
        return inner == media_type


def _split(value: str, sep: str) -> list[str]:
    """Split on ``sep`` outside double quotes."""
    out: list[str] = []
    cur: list[str] = []
    quoted = False
    for ch in value:
        if ch == '"':
            quoted = not quoted
            cur.append(ch)
        elif ch == sep and not quoted:
            out.append("".join(cur))
            cur = []
        else:
            cur.append(ch)
    out.append("".join(cur))
    return out


def _unquote(value: str) -> str:
    value = value.strip()
    if len(value) >= 2 and value[0] == value[-1] == '"':
        return value[1:-1].replace('\\"', '"')
    return value


def parse_accept(header: str | None) -> list[Acceptable]:
    """Media ranges of ``header`` ordered by q (stable for ties); ``[]`` for an absent or empty header.

    Ranges with q=0 are dropped (RFC 9110: "not acceptable"). A ``type`` parameter may itself carry parameters
    (``type="application/octet-stream; transfer-syntax=*"``); those are merged into the range's own.
    """
    if not header or not header.strip():
        return []
    ranges: list[tuple[float, int, Acceptable]] = []
    for pos, item in enumerate(_split(header, ",")):
        pieces = _split(item, ";")
        media = pieces[0].strip().lower()
        if not media:
            continue
        params: dict[str, str] = {}
        for piece in pieces[1:]:
            name, eq, raw = piece.partition("=")
            if eq:
                params[name.strip().lower()] = _unquote(raw)
        q = 1.0
        if "q" in params:
            try:
                q = max(0.0, min(1.0, float(params.pop("q"))))
            except ValueError:
                q = 1.0
        inner = media
        if media == "multipart/related":
            inner_full = params.get("type", "")
            inner_pieces = _split(inner_full, ";")
            inner = inner_pieces[0].strip().lower()
            for piece in inner_pieces[1:]:
                name, eq, raw = piece.partition("=")
                if eq:
                    params.setdefault(name.strip().lower(), _unquote(raw))
        ts = params.get("transfer-syntax")
        if q > 0:
            ranges.append((q, pos, Acceptable(media, inner, ts.strip() if ts else None, q, params)))
    ranges.sort(key=lambda r: (-r[0], r[1]))
    return [r[2] for r in ranges]


def is_lossy(ts: str) -> bool:
    return ts in LOSSY_SYNTAXES


def default_syntax(stored_ts: str, can_decode: bool) -> str:
    """PS3.18 8.7.3: no transfer-syntax parameter means Explicit VR Little Endian, unless the server only has the
    pixel data in lossy form (or cannot decode it), in which case the stored syntax is returned."""
    if stored_ts in NATIVE_SYNTAXES or (can_decode and not is_lossy(stored_ts)):
        return EXPLICIT_LE
    return stored_ts
