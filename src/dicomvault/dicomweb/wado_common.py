"""What the WADO-RS, rendered, WADO-URI and DELETE routers share: the archive behind a request, the read scope,
frame-number lists and the 406 error.

Why a module of its own: ``wado`` includes the rendered routes of ``wado_render``, and both need these helpers;
kept in ``wado`` they made the two modules import each other.
"""

from __future__ import annotations

from fastapi import Depends, Request

from dicomvault.dicomweb.security import require_scope
from dicomvault.domain.errors import InvalidQuery, Unsupported
from dicomvault.services.archive import Archive

read_scope = Depends(require_scope("read"))


def services(request: Request) -> Archive:
    """The services of this app's archive (all built by the composition root, ``bootstrap``)."""
    archive: Archive = request.app.state.archive
    return archive


def not_acceptable(what: str) -> Unsupported:
    return Unsupported(f"none of the acceptable media types can be produced for {what}")


def parse_frame_list(value: str) -> list[int]:
    """``1,3,5`` → [1, 3, 5]; raises ``InvalidQuery`` for anything but positive integers."""
    out: list[int] = []
    for item in value.split(","):
        item = item.strip()
        if not item.isdigit() or int(item) < 1:
            raise InvalidQuery("frame numbers must be a comma-separated list of integers starting at 1")
        out.append(int(item))
    if not out or len(out) > 100_000:
        raise InvalidQuery("no frame numbers given")
    return out
