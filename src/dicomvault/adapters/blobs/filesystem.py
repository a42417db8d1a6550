"""Filesystem blob store: content-addressed files fanned out as ``abc/abcdef…`` (4,096 folders).

Durability protocol for ``put`` (what is fsynced when):
1. the bytes stream into ``tmp/<random>`` on the same filesystem while SHA-256 is computed;
2. the temporary file is fsynced;
3. it is hard-linked to its final path (a link never overwrites: write-once) and the temporary name removed;
4. the final directory is fsynced, so the name survives a crash.
Only then does ``put`` return. A crash before step 3 leaves a file under ``tmp/`` that start-up sweeps away.

Why one level of 4,096 folders, all created (and fsynced) when the store is first opened: with folders created on
demand, nearly every object of a young archive lands in a new folder, and making a new folder durable costs two
more fsyncs (the folder and its parent) on the acknowledgement path. 4,096 folders keep 40 million objects at
~10,000 per folder, which ext4 and XFS index well. Stores written by earlier versions used ``ab/cd/<key>``; those
objects are still found (``path_for`` falls back to the old place) and listed.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

from dicomvault.adapters.blobs.keys import check_key
from dicomvault.domain.errors import NotFound
from dicomvault.domain.records import BlobInfo
from dicomvault.ports.blobs import PutResult

CHUNK = 1 << 20
#: Hex digits of the key that name its folder: 16**3 = 4,096 folders.
FANOUT = 3


def _fsync_dir(path: Path | str) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class FilesystemBlobStore:
    """Implements ``ports.blobs.BlobStore`` on a local directory."""

    def __init__(self, root: Path, *, fsync: bool = True) -> None:
        self.root = Path(root)
        self.tmp = self.root / "tmp"
        self.tmp.mkdir(parents=True, exist_ok=True)
        self._fsync = fsync
        self._create_fanout()
        # Plain strings for the per-object path work of ``put`` (pathlib costs several µs per operation).
        self._root_str, self._tmp_str = str(self.root), str(self.tmp)
        #: whether objects of the older ``ab/cd/<key>`` layout may exist: only then does ``put`` look there
        #: before linking (otherwise the link itself says whether the blob exists)
        self._legacy = any(len(p.name) == 2 and p.is_dir() for p in self.root.iterdir())

    def _create_fanout(self) -> None:
        """Create every fan-out folder once, in order, so the last one existing means all do (``put`` still
        recreates a folder that went missing)."""
        last = 16**FANOUT - 1
        if (self.root / f"{last:0{FANOUT}x}").is_dir():
            return
        for n in range(last + 1):
            (self.root / f"{n:0{FANOUT}x}").mkdir(exist_ok=True)
        if self._fsync:
            _fsync_dir(self.root)

    def describe(self) -> str:
        return f"file://{self.root.resolve()}"

    def local_path(self, key: str) -> Path | None:
        return self.path_for(key)

    def path_for(self, key: str) -> Path:
        """Where the blob is: its fan-out folder, or the two-level folder of stores written before 4,096
        folders (only looked at when the object is not in its folder)."""
        check_key(key)
        path = self.root / key[:FANOUT] / key
        if not path.exists():
            legacy = self.root / key[:2] / key[2:4] / key
            if legacy.exists():
                return legacy
        return path

    def _new_path(self, key: str) -> Path:
        check_key(key)
        return self.root / key[:FANOUT] / key

    def blob_age(self, key: str) -> float | None:
        """Seconds since the blob was written (``ports.blobs.Housekeeping``), None if it does not exist."""
        try:
            return max(0.0, time.time() - self.path_for(key).stat().st_mtime)
        except FileNotFoundError:
            return None

    def temporary_files(self, older_than: float = 0.0) -> list[str]:
        """Staged files untouched for ``older_than`` seconds (``ports.blobs.Housekeeping``)."""
        cutoff = time.time() - older_than
        out: list[str] = []
        for p in sorted(self.tmp.iterdir()):
            with contextlib.suppress(FileNotFoundError):
                if p.stat().st_mtime <= cutoff:
                    out.append(p.name)
        return out

    def sweep_temporary(self, older_than: float = 3600.0) -> int:
        """Remove temporary files left by a crash mid-write (never acknowledged, so nothing is lost).

        Only files untouched for ``older_than`` seconds: the folder may be shared by several nodes of a cluster,
        and a file another node is writing right now must survive this node's start-up."""
        n = 0
        cutoff = time.time() - older_than
        for p in self.tmp.iterdir():
            with contextlib.suppress(FileNotFoundError):
                if p.stat().st_mtime <= cutoff:
                    p.unlink()
                    n += 1
        return n

    def put(self, stream: BinaryIO) -> PutResult:
        tmp_path = os.path.join(self._tmp_str, uuid.uuid4().hex)
        digest = hashlib.sha256()
        size = 0
        try:
            with open(tmp_path, "wb") as out:
                while True:
                    chunk = stream.read(CHUNK)
                    if not chunk:
                        break
                    digest.update(chunk)
                    out.write(chunk)
                    size += len(chunk)
                out.flush()
                if self._fsync:
                    os.fsync(out.fileno())
            key = digest.hexdigest()
            info = BlobInfo(key, size, key)
            if self._legacy and self.path_for(key).exists():
                return PutResult(info, created=False)
            final = os.path.join(self._root_str, key[:FANOUT], key)
            try:
                self._link(tmp_path, final)
            except FileExistsError:  # content-addressed: the same bytes are stored already
                return PutResult(info, created=False)
            if self._fsync:
                _fsync_dir(os.path.dirname(final))
            return PutResult(info, created=True)
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp_path)

    def _link(self, source: str, final: str) -> None:
        try:
            os.link(source, final)
        except FileNotFoundError:  # its fan-out folder was removed by hand: make it again, durably
            os.makedirs(os.path.dirname(final), exist_ok=True)
            if self._fsync:
                _fsync_dir(self._root_str)
            os.link(source, final)

    def open(self, key: str) -> BinaryIO:
        try:  # the current layout first, without a separate existence check (one stat less per object served)
            return open(self._new_path(key), "rb")
        except FileNotFoundError:
            pass
        try:
            return open(self.path_for(key), "rb")
        except FileNotFoundError:
            raise NotFound(f"blob {key} not found") from None

    def read_range(self, key: str, offset: int, length: int) -> bytes:
        try:
            fd = os.open(self.path_for(key), os.O_RDONLY)
        except FileNotFoundError:
            raise NotFound(f"blob {key} not found") from None
        try:
            data = os.pread(fd, length, offset)
        finally:
            os.close(fd)
        if len(data) != length:
            raise NotFound(f"blob {key} is shorter than {offset + length} bytes")
        return data

    def exists(self, key: str) -> bool:
        return self.path_for(key).exists()

    def size(self, key: str) -> int:
        try:
            return self.path_for(key).stat().st_size
        except FileNotFoundError:
            raise NotFound(f"blob {key} not found") from None

    def delete(self, key: str) -> None:
        path = self.path_for(key)
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
            if self._fsync:
                _fsync_dir(path.parent)

    def iter_keys(self) -> Iterator[str]:
        for first in sorted(self.root.iterdir()):
            if not first.is_dir():
                continue
            if len(first.name) == FANOUT:
                for f in sorted(first.iterdir()):
                    if len(f.name) == 64:
                        yield f.name
            elif len(first.name) == 2:  # the two-level layout of earlier versions
                for second in sorted(first.iterdir()):
                    for f in sorted(second.iterdir()):
                        if len(f.name) == 64:
                            yield f.name
