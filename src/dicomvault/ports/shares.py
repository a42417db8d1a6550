"""The share link store port: links that open one study to whoever holds them, kept as hashes, and their uses.

Why in the index: a link is opened on whichever node the visitor reaches, and a revocation must hold on every node;
every use (opened, wrong password, expired, revoked) is recorded next to the link so an administrator can answer
"who looked at this study through a link, and when" without searching logs. Only the secret's SHA-256 is stored
(the secret has full entropy); an optional password is stored as an scrypt hash with its salt (a password is
chosen by a person and may be guessed offline from a stolen database).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

#: what ``ShareStore.record_use`` records
USE_KINDS: tuple[str, ...] = ("opened", "wrong_password", "expired", "revoked", "locked")


@dataclass(frozen=True)
class ShareLink:
    """One share link's record (never the secret)."""

    id: int
    study_uid: str
    #: who created it (a token name, an OIDC subject)
    created_by: str
    created_at: datetime
    expires_at: datetime
    revoked_at: datetime | None = None
    #: ``scrypt$<n>$<r>$<p>$<salt hex>$<hash hex>``, or None: no password
    password_hash: str | None = None
    #: wrong passwords in a row (reset by a right one)
    failed_attempts: int = 0
    #: no password is tried before this time (after too many wrong ones)
    locked_until: datetime | None = None
    uses: int = 0
    last_used_at: datetime | None = None

    def state(self, now: datetime) -> str:
        """``revoked``, ``expired`` or ``active``."""
        if self.revoked_at is not None:
            return "revoked"
        return "expired" if now >= self.expires_at else "active"

    def usable(self, now: datetime) -> bool:
        return self.state(now) == "active"


@dataclass(frozen=True)
class ShareUse:
    """One recorded use of a link."""

    id: int
    share_id: int
    at: datetime
    #: one of ``USE_KINDS``
    what: str
    #: the visitor's address as the server saw it (after trusted proxies)
    client: str


class ShareStore(Protocol):
    def add(self, *, secret_hash: str, study_uid: str, created_by: str, created_at: datetime,
            expires_at: datetime, password_hash: str | None) -> ShareLink:
        """Record a new link and return it."""
        ...

    def by_hash(self, secret_hash: str) -> ShareLink | None:
        """The link whose secret hashes to ``secret_hash`` (revoked or expired ones included), or None."""
        ...

    def by_id(self, share_id: int) -> ShareLink | None:
        ...

    def all(self, *, limit: int = 500) -> list[ShareLink]:
        """The most recent links first, at most ``limit``."""
        ...

    def revoke(self, share_id: int, when: datetime) -> bool:
        """Mark one link revoked; False if it does not exist or was already revoked."""
        ...

    def record_use(self, share_id: int, *, at: datetime, what: str, client: str) -> None:
        """Record one use; ``opened`` also counts it and sets ``last_used_at``, and resets the wrong passwords."""
        ...

    def wrong_password(self, share_id: int, *, at: datetime, client: str, max_attempts: int,
                       lock_until: datetime) -> ShareLink:
        """Record a wrong password (a use ``wrong_password``) and count it; the ``max_attempts``-th in a row locks
        the link until ``lock_until`` and starts counting again. Returns the link as it is now."""
        ...

    def uses(self, share_id: int, *, limit: int = 200) -> list[ShareUse]:
        """The link's recorded uses, most recent first."""
        ...
