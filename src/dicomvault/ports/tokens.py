"""The API token store port: named bearer tokens kept only as SHA-256 hashes.

The secret itself is shown once at creation and never stored, so a stolen index database does not grant access.
A token may carry an expiry time; past it the token is refused like a revoked one.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Protocol


@dataclass(frozen=True)
class ApiToken:
    """One API token's record (never the secret)."""

    id: int
    name: str
    scopes: tuple[str, ...]
    created_at: datetime
    revoked_at: datetime | None = None
    expires_at: datetime | None = None

    @property
    def active(self) -> bool:
        """Not revoked (it may have expired: an expired token still counts as configured authentication, so
        anonymous access does not come back on its own when tokens expire)."""
        return self.revoked_at is None

    def expired(self, now: datetime) -> bool:
        return self.expires_at is not None and now >= self.expires_at

    def usable(self, now: datetime) -> bool:
        """Whether a request bearing this token is accepted at ``now``."""
        return self.active and not self.expired(now)

    def state(self, now: datetime) -> str:
        """``revoked``, ``expired`` or ``active``."""
        if not self.active:
            return "revoked"
        return "expired" if self.expired(now) else "active"


class TokenStore(Protocol):
    def add(self, *, name: str, token_hash: str, scopes: tuple[str, ...], created_at: datetime,
            expires_at: datetime | None = None) -> ApiToken:
        """Record a new token (its hash, its expiry if any) and return the stored record."""
        ...

    def all(self) -> list[ApiToken]:
        """Every token, revoked ones included, oldest first."""
        ...

    def by_hash(self, token_hash: str) -> ApiToken | None:
        """The token whose secret hashes to ``token_hash`` (revoked or not), or None."""
        ...

    def by_id(self, token_id: int) -> ApiToken | None:
        """The token with this id (revoked or not), or None."""
        ...

    def revoke(self, token_id: int, when: datetime) -> bool:
        """Mark one token revoked; False if it does not exist or was already revoked."""
        ...

    def count_active(self) -> int:
        """How many tokens are not revoked, expired ones included (the anonymous-access policy depends on whether
        any exist)."""
        ...
