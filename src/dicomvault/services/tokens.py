"""API tokens: create (secret shown once), list, revoke, verify.

A token is ``dv_`` + 256 random bits (URL-safe base64); only its SHA-256 is stored. SHA-256 (not a slow password
hash) is right here: the secret has full entropy, so there is nothing to brute-force, and verification must be cheap
because it runs on every request.
"""

from __future__ import annotations

import hashlib
import re
import secrets
import time
from collections.abc import Callable
from datetime import UTC, datetime

from dicomvault.domain.errors import InvalidQuery, NotFound
from dicomvault.ports.tokens import ApiToken, TokenStore

#: read: QIDO/WADO; write: STOW; delete: DELETE; admin: everything.
SCOPES: tuple[str, ...] = ("read", "write", "delete", "admin")
PREFIX = "dv_"
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.@-]{0,127}$")


def hash_secret(secret: str) -> str:
    return hashlib.sha256(secret.encode("utf-8")).hexdigest()


def normalise_scopes(scopes: list[str] | tuple[str, ...]) -> tuple[str, ...]:
    """Validate and order scopes; raises ``InvalidQuery`` for an unknown one."""
    out: list[str] = []
    for raw in scopes:
        for s in raw.replace(",", " ").split():
            s = s.strip().lower()
            if s not in SCOPES:
                raise InvalidQuery(f"unknown scope {s!r} (expected one of {', '.join(SCOPES)})")
            if s not in out:
                out.append(s)
    if not out:
        raise InvalidQuery("a token needs at least one scope")
    return tuple(sorted(out, key=SCOPES.index))


class TokenService:
    def __init__(
        self, store: TokenStore, *, active_ttl: float = 1.0, clock: Callable[[], float] = time.monotonic
    ) -> None:
        """``active_ttl``: how long the answer of ``any_active`` is reused. Whether anonymous access is still
        allowed depends on it and is asked on every anonymous request; counting tokens in the index each time
        was a measurable share of a small DICOMweb request. Tokens created or revoked through this service are
        seen at once; by another process (``dicomvault token create`` beside a running server), within
        ``active_ttl`` seconds."""
        self.store = store
        self._active_ttl = active_ttl
        self._clock = clock
        self._active: tuple[bool, float] | None = None

    def create(self, name: str, scopes: list[str] | tuple[str, ...]) -> tuple[ApiToken, str]:
        """Create a token; returns its record and the secret, which cannot be recovered later."""
        name = name.strip()
        if not _NAME_RE.match(name) or name.isdigit():
            raise InvalidQuery("token name: 1-128 letters, digits, '_', '.', '@', '-', not only digits")
        wanted = normalise_scopes(scopes)
        if any(t.name == name and t.active for t in self.store.all()):
            raise InvalidQuery(f"an active token named {name!r} exists; revoke it first")
        secret = PREFIX + secrets.token_urlsafe(32)
        record = self.store.add(name=name, token_hash=hash_secret(secret), scopes=wanted,
                                created_at=datetime.now(UTC))
        self._active = None
        return record, secret

    def all(self) -> list[ApiToken]:
        return self.store.all()

    def revoke(self, name_or_id: str) -> list[ApiToken]:
        """Revoke the active token(s) with this name, or the token with this id; returns what was revoked."""
        key = name_or_id.strip()
        tokens = self.store.all()
        targets = [t for t in tokens if t.active and (t.name == key or (key.isdigit() and t.id == int(key)))]
        if not targets:
            raise NotFound(f"no active token {key!r}")
        now = datetime.now(UTC)
        revoked = []
        for t in targets:
            if self.store.revoke(t.id, now):
                revoked.append(t)
        self._active = None
        return revoked

    def verify(self, secret: str) -> ApiToken | None:
        """The active token for ``secret``, or None (unknown or revoked)."""
        if not secret.startswith(PREFIX) or len(secret) > 200:
            return None
        token = self.store.by_hash(hash_secret(secret))
        if token is None or not token.active:
            return None
        return token

    def any_active(self) -> bool:
        """Whether any token is active (from the index, or an answer younger than ``active_ttl``)."""
        known = self.any_active_cached()
        if known is not None:
            return known
        value = self.store.count_active() > 0
        self._active = (value, self._clock())
        return value

    def any_active_cached(self) -> bool | None:
        """The answer of ``any_active`` without touching the index: None when it has to be asked again (lets an
        async caller stay on the event loop in the common case)."""
        known = self._active
        if known is None or self._clock() - known[1] >= self._active_ttl:
            return None
        return known[0]
