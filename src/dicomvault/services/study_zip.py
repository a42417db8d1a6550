"""A study as a zip file written while it is sent: the web pages' "download" (``/ui/studies/{uid}/download.zip``).

Why streamed: a study can be gigabytes; building the archive first would cost that much disk (or memory) and make
the user wait for the last byte before the first. ``zipfile`` writes to an unseekable stream when each member
carries a data descriptor (sizes and CRC after the data), which it does by itself when it cannot seek; a member is
``ZIP_STORED`` (DICOM pixel data is compressed already or cheap to send as is; deflating would cost the CPU the
server needs for everything else) and ZIP64 where a member or the archive needs it. Memory: one chunk of one
object at a time (``RetrieveService.iter_bytes``).

What each member holds: the object exactly as the archive stores it (Part 10 with its File Meta Information), the
bytes WADO-RS answers for ``transfer-syntax=*``. The layout is DICOMDIR-like, ``DICOM/<patient>/<study>/<series>/
<instance>.dcm``, with short names of safe characters (letters, digits, ``_``, ``-``): no path taken from an object
can leave the folder, and every unzip tool on every system accepts them. There is no DICOMDIR file: building one
needs every object's directory record before the file is written, and the download starts before the last object
is read.
"""

from __future__ import annotations

import re
import time
import zipfile
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field

from dicomvault.domain.errors import NotFound
from dicomvault.domain.records import InstanceRecord
from dicomvault.services.retrieve import RetrieveService

#: bytes read from the store per write into the zip (and sent as one chunk of the response at most)
CHUNK = 1 << 20
_UNSAFE = re.compile(r"[^A-Za-z0-9_-]+")


def safe_name(text: str | None, fallback: str, *, limit: int = 24) -> str:
    """``text`` as a short file or folder name of safe characters (``fallback`` when nothing is left)."""
    name = _UNSAFE.sub("_", (text or "").strip()).strip("_")[:limit].rstrip("_")
    return name or fallback


@dataclass
class _Sink:
    """The file ``zipfile`` writes to: it keeps what was written until the response takes it (no ``seek`` or
    ``tell``: zipfile then writes data descriptors and counts positions itself)."""

    parts: list[bytes] = field(default_factory=list)

    def write(self, data: bytes) -> int:
        self.parts.append(bytes(data))
        return len(data)

    def flush(self) -> None:
        pass

    def close(self) -> None:
        pass

    def take(self) -> bytes:
        out = b"".join(self.parts)
        self.parts.clear()
        return out


@dataclass(frozen=True)
class StudyLayout:
    """The folder names of one study's download."""

    patient: str
    study: str
    #: Series Instance UID → folder name (series not named here get ``S<n>``)
    series: Mapping[str, str] = field(default_factory=dict)


def member_names(records: Iterable[InstanceRecord], layout: StudyLayout) -> list[str]:
    """``DICOM/<patient>/<study>/<series>/<instance>.dcm`` for each record, unique, in the records' order."""
    series_names: dict[str, str] = {}
    counters: dict[str, int] = {}
    used: set[str] = set()
    names = []
    for record in records:
        folder = series_names.get(record.series_uid)
        if folder is None:
            folder = layout.series.get(record.series_uid) or f"S{len(series_names) + 1:03d}"
            while folder in series_names.values():
                folder += "_"
            series_names[record.series_uid] = folder
        counters[folder] = counters.get(folder, 0) + 1
        stem = f"I{record.instance_number:05d}" if record.instance_number is not None and \
            0 <= record.instance_number < 100000 else f"X{counters[folder]:05d}"
        name = f"DICOM/{layout.patient}/{layout.study}/{folder}/{stem}.dcm"
        while name in used:
            stem += "_"
            name = f"DICOM/{layout.patient}/{layout.study}/{folder}/{stem}.dcm"
        used.add(name)
        names.append(name)
    return names


def _stored_bytes(retrieve: RetrieveService, record: InstanceRecord) -> Iterator[bytes]:
    """The stored object; one compressed at rest since the download listed it (its blob then removed) is read
    from its current blob (as WADO-RS does)."""
    chunks = retrieve.iter_bytes(record, chunk=CHUNK)
    try:
        first = next(chunks, None)
    except NotFound:
        current = retrieve.refreshed(record)
        if current is None:
            raise
        chunks = retrieve.iter_bytes(current, chunk=CHUNK)
        first = next(chunks, None)
    if first is not None:
        yield first
        yield from chunks


def stream_zip(retrieve: RetrieveService, records: list[InstanceRecord], layout: StudyLayout) -> Iterator[bytes]:
    """The zip file of ``records`` (in order), chunk by chunk: a member's header, its data as read from the store,
    its data descriptor, and at the end the central directory."""
    sink = _Sink()
    now = time.localtime()[:6]
    with zipfile.ZipFile(sink, "w", compression=zipfile.ZIP_STORED, allowZip64=True) as zf:
        for record, name in zip(records, member_names(records, layout), strict=True):
            info = zipfile.ZipInfo(name, date_time=now)
            info.compress_type = zipfile.ZIP_STORED
            info.file_size = record.blob.size  # zipfile chooses ZIP64 for the member from it
            info.external_attr = 0o644 << 16
            with zf.open(info, "w") as member:
                for chunk in _stored_bytes(retrieve, record):
                    member.write(chunk)
                    if (data := sink.take()):
                        yield data
            if (data := sink.take()):
                yield data
    if (data := sink.take()):
        yield data
