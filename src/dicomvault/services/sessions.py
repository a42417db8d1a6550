"""Browser sessions: a login exchanges a credential for a session secret carried in an ``HttpOnly`` cookie.

Why: the archive's pages and the viewer run in a browser, which sends a cookie with every same-origin request (the
viewer's hundreds of image requests included) but cannot be made to send an ``Authorization`` header from a link;
and a long-lived API token typed into a page must not stay in it. A session:
- is opened by ``login`` with an API token or an OIDC access token (the same verification as a bearer credential,
  ``services.auth``), or by ``open`` for a share link (``services.shares``), which scopes it to one study;
- lasts ``web_session_hours`` at most, never longer than the credential it came from (an OIDC token's ``exp``),
  and ends when that API token or share link is revoked, or at logout;
- carries an anti-CSRF token: a request authenticated by the cookie that changes anything must repeat it
  (``X-CSRF-Token`` header or the form's ``csrf_token`` field). The cookie is also ``SameSite=Strict``; the token
  protects browsers or proxies that do not honour that.
Only the secret's SHA-256 is stored (``ports.sessions``). A valid session is remembered by this process for
``cache_seconds`` (the viewer's requests would otherwise each cost an index lookup); a logout through this process
is seen at once, a revocation by another node within that time.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import jwt

from dicomvault.domain.errors import Unauthenticated
from dicomvault.ports.sessions import SessionStore, WebSession
from dicomvault.services.auth import OidcVerifier, Principal, looks_like_jwt, verify_jwt
from dicomvault.services.tokens import TokenService

#: the cookie's name (same on every node)
SESSION_COOKIE = "dv_session"
#: a session secret's length bound: anything longer is not one of ours and is refused without a lookup
MAX_SECRET_LENGTH = 128
_CACHE_SIZE = 4096


def _hash(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


@dataclass(frozen=True)
class OpenedSession:
    """A new session: its secret (to put in the cookie, shown nowhere else) and its record."""

    secret: str
    record: WebSession


def principal_of(session: WebSession) -> Principal:
    """The principal a session acts as (a share session: read-only, one study)."""
    return Principal(session.principal, frozenset(session.scopes), session.kind, study=session.study_uid)


def csrf_matches(session: WebSession, presented: str | None) -> bool:
    """Whether ``presented`` is the session's anti-CSRF token (constant-time comparison)."""
    return presented is not None and hmac.compare_digest(presented.encode(), session.csrf.encode())


class SessionService:
    def __init__(self, store: SessionStore, tokens: TokenService | None, oidc: OidcVerifier | None, *,
                 max_age: timedelta = timedelta(hours=12), cache_seconds: float = 2.0,
                 share_check: Callable[[int], bool] | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        """``share_check(share_id)``: whether a share link is still usable (set by ``services.shares``)."""
        self.store = store
        self.tokens = tokens
        self.oidc = oidc
        self.max_age = max_age
        self.share_check = share_check
        self._cache_seconds = cache_seconds
        self._clock = clock
        self._cache: OrderedDict[str, tuple[WebSession, float]] = OrderedDict()
        self._lock = threading.Lock()

    def login(self, credential: str) -> OpenedSession:
        """Open a session for an API token or an OIDC access token; raises ``Unauthenticated`` if it is not valid.

        Blocking (index lookup, possibly a JWKS fetch)."""
        credential = credential.strip()
        if not credential or len(credential) > 8192:
            raise Unauthenticated("a credential is needed to log in")
        now = datetime.now(UTC)
        if looks_like_jwt(credential) and self.oidc is not None:
            principal = verify_jwt(self.oidc, credential)
            if principal is None:
                raise Unauthenticated("the OIDC token is invalid or expired")
            claims = jwt.decode(credential, options={"verify_signature": False})
            expires = min(now + self.max_age, datetime.fromtimestamp(int(claims["exp"]), UTC))
            return self._add(principal, expires)
        token = self.tokens.verify(credential) if self.tokens is not None else None
        if token is None:
            raise Unauthenticated("invalid, expired or revoked API token")
        expires = now + self.max_age
        if token.expires_at is not None:
            expires = min(expires, token.expires_at)
        principal = Principal(token.name, frozenset(token.scopes), "token")
        return self._add(principal, expires, token_id=token.id)

    def open(self, principal: Principal, *, expires_at: datetime, share_id: int | None = None) -> OpenedSession:
        """Open a session for an already verified principal (an OIDC login, a share link's visitor)."""
        return self._add(principal, min(expires_at, datetime.now(UTC) + self.max_age), share_id=share_id)

    def _add(self, principal: Principal, expires: datetime, *, token_id: int | None = None,
             share_id: int | None = None) -> OpenedSession:
        secret = "dvs_" + secrets.token_urlsafe(32)
        record = self.store.add(
            secret_hash=_hash(secret), principal=principal.name, kind=principal.kind,
            scopes=tuple(sorted(principal.scopes)), csrf=secrets.token_urlsafe(24), created_at=datetime.now(UTC),
            expires_at=expires, token_id=token_id, share_id=share_id, study_uid=principal.study)
        return OpenedSession(secret, record)

    def resolve(self, secret: str | None) -> WebSession | None:
        """The usable session for a cookie value, or None (unknown, expired, logged out, or its token or share
        link revoked). Blocking on a cache miss."""
        if not secret or len(secret) > MAX_SECRET_LENGTH or not secret.startswith("dvs_"):
            return None
        key = _hash(secret)
        now_mono = self._clock()
        with self._lock:
            hit = self._cache.get(key)
            if hit is not None and now_mono - hit[1] < self._cache_seconds:
                session = hit[0]
                return session if session.usable(datetime.now(UTC)) else None
        found = self.store.by_hash(key)
        if found is None or not self._still_valid(found):
            with self._lock:
                self._cache.pop(key, None)
            return None
        with self._lock:
            self._cache[key] = (found, now_mono)
            self._cache.move_to_end(key)
            while len(self._cache) > _CACHE_SIZE:
                self._cache.popitem(last=False)
        return found

    def resolve_cached(self, secret: str | None) -> tuple[bool, WebSession | None]:
        """``(known, session)``: ``resolve`` answered without touching the index when ``known``; otherwise the
        index must be asked (lets an async caller stay on the event loop in the common case)."""
        if not secret or len(secret) > MAX_SECRET_LENGTH or not secret.startswith("dvs_"):
            return True, None
        with self._lock:
            hit = self._cache.get(_hash(secret))
            if hit is None or self._clock() - hit[1] >= self._cache_seconds:
                return False, None
        return True, (hit[0] if hit[0].usable(datetime.now(UTC)) else None)

    def _still_valid(self, session: WebSession) -> bool:
        if not session.usable(datetime.now(UTC)):
            return False
        if session.token_id is not None and (self.tokens is None or not self.tokens.usable_id(session.token_id)):
            return False
        if session.share_id is None:
            return True
        return self.share_check is not None and self.share_check(session.share_id)

    def logout(self, secret: str | None) -> bool:
        """End the session of this cookie value; False if there was none."""
        if not secret or len(secret) > MAX_SECRET_LENGTH:
            return False
        key = _hash(secret)
        with self._lock:
            self._cache.pop(key, None)
        session = self.store.by_hash(key)
        return session is not None and self.store.revoke(session.id, datetime.now(UTC))

    def end_share(self, share_id: int) -> int:
        """End every session opened with a share link (it was revoked); returns how many."""
        ended = self.store.revoke_share(share_id, datetime.now(UTC))
        with self._lock:
            for key in [k for k, (s, _) in self._cache.items() if s.share_id == share_id]:
                del self._cache[key]
        return ended

    def purge(self) -> int:
        """Forget sessions that ended more than a day ago."""
        return self.store.purge(datetime.now(UTC) - timedelta(days=1))
