"""Storing the DICOM objects of an uploaded zip file (the web pages' upload, ``/ui/api/upload-zip``), member by
member, each through ``IngestService.ingest`` like any received object.

Why on the server: a browser has no unzip without a library, and a zip is how studies travel (a CD's content, an
export from another viewer). Why bounded: a zip is the classic decompression bomb (a few kilobytes that inflate to
terabytes, or thousands of members pointing at the same compressed data). So:

* at most ``MAX_MEMBERS`` members are looked at (the rest is reported as skipped);
* each member inflates into a spool file, counted while it is read, never trusting the sizes the zip declares: a
  member beyond ``member_bytes`` (the settings' ``max_upload_bytes``, the largest object STOW-RS accepts), or
  past 64 MiB beyond ``max_ratio`` times its compressed size (``max_inflate_ratio``, the rule deflated DICOM data
  sets follow), is refused as soon as the count passes the limit;
* the members of one zip together inflate to at most ``total_bytes`` (``max_upload_bytes`` too); the remaining
  members are then refused without being read;
* encrypted members, nested zips and non-DICOM files are reported, not stored (a nested zip is not opened).

Member names are only reported (the objects are stored by UID), never used as paths.
"""

from __future__ import annotations

import logging
import tempfile
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, BinaryIO

from dicomvault.domain.errors import DicomVaultError, TooLarge
from dicomvault.domain.records import StoreOutcome
from dicomvault.services.ingest import IngestService

log = logging.getLogger(__name__)

#: the most members of one zip looked at
MAX_MEMBERS = 10_000
#: a member's inflated size is checked against the ratio limit past this many bytes (as for deflated data sets)
RATIO_FLOOR = 64 << 20
#: bytes inflated per read
CHUNK = 1 << 20
#: members spooled in memory up to this size, on disk beyond
SPOOL_IN_MEMORY = 8 << 20
_IGNORED = (".DS_Store", "Thumbs.db", "desktop.ini")


@dataclass(frozen=True)
class ZipLimits:
    member_bytes: int
    total_bytes: int
    max_ratio: int = 200
    max_members: int = MAX_MEMBERS


@dataclass(frozen=True)
class MemberResult:
    """What became of one member: ``stored``, ``duplicate`` (identical content already stored), ``replaced`` /
    ``versioned`` (an earlier object with the same SOP Instance UID), ``rejected`` (with the reason) or
    ``skipped`` (not an object: folders' clutter, past the member limit)."""

    name: str
    status: str
    reason: str = ""
    sop_instance_uid: str = ""
    study_uid: str = ""


class _Budget:
    def __init__(self, limits: ZipLimits) -> None:
        self.limits = limits
        self.used = 0


def _spool(zf: zipfile.ZipFile, info: zipfile.ZipInfo, budget: _Budget, spool_dir: Path | None) -> IO[bytes]:
    """The member inflated into a spool file (positioned at its start); raises ``TooLarge`` past a limit."""
    limits = budget.limits
    if info.file_size > limits.member_bytes:
        raise TooLarge(f"the member declares {info.file_size} bytes, more than the limit of "
                       f"{limits.member_bytes} bytes", "max_upload_bytes")
    spool = tempfile.SpooledTemporaryFile(SPOOL_IN_MEMORY, dir=_dir(spool_dir))  # noqa: SIM115 (returned open)
    try:
        size = 0
        with zf.open(info) as member:
            while chunk := member.read(CHUNK):
                size += len(chunk)
                if size > limits.member_bytes:
                    raise TooLarge(f"the member inflates to more than the limit of {limits.member_bytes} bytes",
                                   "max_upload_bytes")
                if limits.max_ratio and size > RATIO_FLOOR and size > limits.max_ratio * max(info.compress_size, 1):
                    raise TooLarge(f"the member inflates to more than {limits.max_ratio} times its compressed size",
                                   "max_inflate_ratio")
                if budget.used + size > limits.total_bytes:
                    raise TooLarge(f"the zip's members inflate to more than the limit of {limits.total_bytes} bytes",
                                   "max_upload_bytes")
                spool.write(chunk)
        budget.used += size
        spool.seek(0)
        return spool
    except BaseException:
        spool.close()
        raise


def _dir(path: Path | None) -> str | None:
    return str(path) if path is not None else None


def _looks_like_zip(stream: IO[bytes]) -> bool:
    head = stream.read(4)
    stream.seek(0)
    return head == b"PK\x03\x04"


def import_zip(ingest: IngestService, archive_file: BinaryIO, limits: ZipLimits, *, source: str,
               spool_dir: Path | None = None) -> Iterator[MemberResult]:
    """Ingest each member of the zip in ``archive_file`` (seekable), yielding what became of it, in the zip's
    order. Raises ``zipfile.BadZipFile`` when it is no zip at all."""
    with zipfile.ZipFile(archive_file) as zf:
        budget = _Budget(limits)
        looked = 0
        for info in zf.infolist():
            name = info.filename[:256]
            if info.is_dir():
                continue
            base = name.rsplit("/", 1)[-1]
            if base in _IGNORED or base.startswith("._") or name.startswith("__MACOSX/"):
                yield MemberResult(name, "skipped", "not a DICOM object (system file)")
                continue
            looked += 1
            if looked > limits.max_members:
                yield MemberResult(name, "skipped", f"the zip holds more than {limits.max_members} files")
                continue
            if info.flag_bits & 0x1:
                yield MemberResult(name, "rejected", "encrypted member")
                continue
            try:
                spool = _spool(zf, info, budget, spool_dir)
            except TooLarge as exc:
                log.info("zip upload: a member refused (%s)", exc.message)
                yield MemberResult(name, "rejected", exc.message)
                continue
            except (zipfile.BadZipFile, NotImplementedError, EOFError, OSError, ValueError) as exc:
                yield MemberResult(name, "rejected", f"unreadable member ({type(exc).__name__})")
                continue
            with spool:
                if _looks_like_zip(spool):
                    yield MemberResult(name, "rejected", "a zip inside the zip (not opened: upload it on its own)")
                    continue
                yield _ingest_one(ingest, name, spool, source)


def _ingest_one(ingest: IngestService, name: str, spool: IO[bytes], source: str) -> MemberResult:
    try:
        res = ingest.ingest(spool, source=source)  # type: ignore[arg-type]
    except DicomVaultError as exc:
        return MemberResult(name, "rejected", exc.message)
    if res.outcome == StoreOutcome.DUPLICATE:
        status = "duplicate"
    elif res.outcome in (StoreOutcome.REPLACED, StoreOutcome.VERSIONED):
        status = res.outcome.value
    else:
        status = "stored"
    reason = res.pixel_problem or res.warning or ""
    return MemberResult(name, status, reason, res.sop_instance_uid, res.study_uid)
