"""Content-addressed keys: the lowercase hex SHA-256 of the stored bytes. Nothing else is accepted as a key,
which rules out path traversal and keeps patient data out of storage paths."""

from __future__ import annotations

import re

from dicomvault.domain.errors import NotFound

_KEY_RE = re.compile(r"^[0-9a-f]{64}$")


def check_key(key: str) -> str:
    if not _KEY_RE.match(key):
        raise NotFound(f"invalid blob key {key[:80]!r}")
    return key
