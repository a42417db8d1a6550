"""``Positioned``: the position bookkeeping of a read-only, seekable raw stream of a known size.

Why a base class: several readers present bytes that are not one plain file as a seekable stream (a window of a
spooled C-STORE, a splice of ranges, an S3 object read by ranges) so that pydicom and the ingest path can parse
them; their ``tell``/``seek`` rules must be the same (``io`` semantics: ``SEEK_END`` relative to the size, a
negative position refused), only how they read differs. Subclasses set ``_size`` and implement ``readinto`` or
``read`` from ``_pos``.
"""

from __future__ import annotations

import io


class Positioned(io.RawIOBase):
    """A read-only raw stream of ``size`` bytes whose position ``_pos`` the subclass reads from."""

    def __init__(self, size: int) -> None:
        super().__init__()
        self._size = size
        self._pos = 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._pos, io.SEEK_END: self._size}[whence]
        position = base + offset
        if position < 0:
            raise ValueError("negative seek position")
        self._pos = position
        return position
