"""The API token store port: named bearer tokens kept only as SHA-256 hashes.

The secret itself is shown once at creation and never stored, so a stolen index database does not grant access.
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

    @property
    def active(self) -> bool:
        return self.revoked_at is None


class TokenStore(Protocol):
    def add(self, *, name: str, token_hash: str, scopes: tuple[str, ...], created_at: datetime) -> ApiToken:
        """Record a new token (its hash) and return the stored record."""
        ...

    def all(self) -> list[ApiToken]:
        """Every token, revoked ones included, oldest first."""
        ...

    def by_hash(self, token_hash: str) -> ApiToken | None:
        """The token whose secret hashes to ``token_hash`` (revoked or not), or None."""
        ...

    def revoke(self, token_id: int, when: datetime) -> bool:
        """Mark one token revoked; False if it does not exist or was already revoked."""
        ...

    def count_active(self) -> int:
        """How many tokens are not revoked (the anonymous-access policy depends on whether any exist)."""
        ...
