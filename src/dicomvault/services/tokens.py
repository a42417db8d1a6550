"""API tokens: create (secret shown once, optionally with an expiry), list, revoke, verify.

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
from datetime import UTC, date, datetime, timedelta

from dicomvault.domain.errors import InvalidQuery, NotFound
from dicomvault.ports.tokens import ApiToken, TokenStore

#: read: QIDO/WADO; write: STOW; delete: DELETE; admin: everything.
SCOPES: tuple[str, ...] = ("read", "write", "delete", "admin")
PREFIX = "dv_"
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.@-]{0,127}$")


def hash_secret(secret: str) -> str:
    return hashlib.sha256(secret.encode("utf-8")).hexdigest()


_DURATION_RE = re.compile(r"^\s*(\d{1,6})\s*([hdwy])\s*$", re.IGNORECASE)
_UNIT_HOURS = {"h": 1, "d": 24, "w": 24 * 7, "y": 24 * 365}


def parse_expiry(expires_in: str | None, expires_at: str | None, now: datetime) -> datetime | None:
    """The expiry time of a new token from ``--expires-in`` (``12h``, ``90d``, ``4w``, ``1y``) or ``--expires-at``
    (ISO date, meaning 00:00 UTC that day, or ISO date-time; without an offset, UTC); None: never expires.
    Raises ``InvalidQuery`` for both given, a malformed value, or a time not in the future."""
    if expires_in and expires_at:
        raise InvalidQuery("give either an expiry duration or an expiry date, not both")
    if expires_in:
        match = _DURATION_RE.match(expires_in)
        if match is None or int(match.group(1)) == 0:
            raise InvalidQuery(f"expiry duration {expires_in!r}: expected a positive number of h, d, w or y (90d)")
        when = now + timedelta(hours=int(match.group(1)) * _UNIT_HOURS[match.group(2).lower()])
    elif expires_at:
        text = expires_at.strip()
        try:
            when = (datetime.combine(date.fromisoformat(text), datetime.min.time(), UTC) if len(text) == 10
                    else datetime.fromisoformat(text))
        except ValueError:
            raise InvalidQuery(f"expiry date {expires_at!r}: expected YYYY-MM-DD or an ISO 8601 date-time") from None
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
    else:
        return None
    if when <= now:
        raise InvalidQuery("the expiry time is not in the future")
    return when.astimezone(UTC)


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

    def create(self, name: str, scopes: list[str] | tuple[str, ...],
               expires_at: datetime | None = None) -> tuple[ApiToken, str]:
        """Create a token (valid until ``expires_at`` if given); returns its record and the secret, which cannot
        be recovered later."""
        name = name.strip()
        if not _NAME_RE.match(name) or name.isdigit():
            raise InvalidQuery("token name: 1-128 letters, digits, '_', '.', '@', '-', not only digits")
        wanted = normalise_scopes(scopes)
        if any(t.name == name and t.active for t in self.store.all()):
            raise InvalidQuery(f"a token named {name!r} exists (not revoked, possibly expired); revoke it first")
        secret = PREFIX + secrets.token_urlsafe(32)
        now = datetime.now(UTC)
        if expires_at is not None and expires_at <= now:
            raise InvalidQuery("the expiry time is not in the future")
        record = self.store.add(name=name, token_hash=hash_secret(secret), scopes=wanted, created_at=now,
                                expires_at=expires_at)
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
        """The usable token for ``secret``, or None (unknown, revoked or expired)."""
        if not secret.startswith(PREFIX) or len(secret) > 200:
            return None
        token = self.store.by_hash(hash_secret(secret))
        if token is None or not token.usable(datetime.now(UTC)):
            return None
        return token

    def usable_id(self, token_id: int) -> bool:
        """Whether the token with this id exists and is usable now (a session opened with it lives only as long)."""
        token = self.store.by_id(token_id)
        return token is not None and token.usable(datetime.now(UTC))

    def any_active(self) -> bool:
        """Whether any token is not revoked, expired ones included (from the index, or an answer younger than
        ``active_ttl``)."""
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
