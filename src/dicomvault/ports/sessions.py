"""The web session store port: browser sessions of the archive's pages and of the viewer, kept as hashes.

Why sessions at all: a browser cannot send an ``Authorization: Bearer`` header with every image request the viewer
makes, and an API token pasted into a page must not stay in the page's storage. A login exchanges a credential (an
API token, or an OIDC login) for a random session secret held in an ``HttpOnly`` cookie; only the secret's SHA-256
is stored, so a stolen index database grants no session. Sessions live in the index (not in one process's memory)
so that every node of a cluster accepts them and a logout is seen everywhere.

A session may be *scoped to one study* (a share link opened in a browser): ``study_uid`` is then the only study its
requests may reach, whatever the scopes say.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Protocol


@dataclass(frozen=True)
class WebSession:
    """One session's record (never the secret)."""

    id: int
    principal: str
    #: how the session was opened: ``token`` (an API token), ``oidc`` (an OIDC login), ``share`` (a share link)
    kind: str
    scopes: tuple[str, ...]
    #: the anti-CSRF token the pages put in forms and the viewer in ``X-CSRF-Token`` (not a secret from the user,
    #: a secret from other sites)
    csrf: str
    created_at: datetime
    expires_at: datetime
    revoked_at: datetime | None = None
    #: the API token the session was opened with: revoking the token ends the session
    token_id: int | None = None
    #: the share link the session was opened with: revoking the link ends the session
    share_id: int | None = None
    #: the only study a share session may reach
    study_uid: str | None = None

    def usable(self, now: datetime) -> bool:
        return self.revoked_at is None and now < self.expires_at


class SessionStore(Protocol):
    def add(self, *, secret_hash: str, principal: str, kind: str, scopes: tuple[str, ...], csrf: str,
            created_at: datetime, expires_at: datetime, token_id: int | None = None, share_id: int | None = None,
            study_uid: str | None = None) -> WebSession:
        """Record a new session and return it."""
        ...

    def by_hash(self, secret_hash: str) -> WebSession | None:
        """The session whose secret hashes to ``secret_hash`` (revoked or expired ones included), or None."""
        ...

    def revoke(self, session_id: int, when: datetime) -> bool:
        """End one session; False if it does not exist or had already ended."""
        ...

    def revoke_share(self, share_id: int, when: datetime) -> int:
        """End every session opened with one share link; returns how many."""
        ...

    def purge(self, before: datetime) -> int:
        """Delete sessions that expired or were revoked before ``before``; returns how many."""
        ...
