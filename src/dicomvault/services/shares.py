"""Share links: a link that opens one study, read-only, to whoever holds it, for a limited time.

Why: a referring physician outside the hospital needs one study, not an account. A link is ``/share/<secret>``;
opening it starts a browser session (``services.sessions``) whose principal holds only the ``read`` scope and is
*scoped to the link's study*: every request it makes is confined to that study by the front ends
(``dicomweb/share_scope.py``, ``webui/page_auth.require_page``). The session ends when the link expires or is
revoked (``usable`` is the session service's ``share_check``; ``revoke`` also ends open sessions at once).

Rules:
- creating a link needs the ``share_links_scope`` setting's scope (default ``write``: sharing discloses data, so a
  read-only integration token may not; ``admin`` always may); anonymous visitors and share visitors never may;
- a link lives ``share_default_days`` unless another expiry is chosen, never more than ``share_max_days``;
- the secret (``dvl_`` + 256 random bits) is shown once; only its SHA-256 is stored;
- an optional password is stored as an scrypt hash with a random salt; after ``share_password_attempts`` wrong ones
  in a row the link is locked for ``share_lock_minutes`` (no password is checked meanwhile);
- de-identification is refused (``InvalidQuery``: "de-identification is not available yet") rather than ignored;
- every use is recorded (opened, wrong_password, expired, revoked, locked) with the client's address.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import orjson

from dicomvault.domain.errors import DicomVaultError, InvalidQuery, NotFound, PermissionDenied
from dicomvault.ports.index import IndexRepository
from dicomvault.ports.shares import ShareLink, ShareStore, ShareUse
from dicomvault.services.auth import Principal
from dicomvault.services.sessions import OpenedSession, SessionService

PREFIX = "dvl_"
#: anything longer is not one of our secrets: refused without a lookup
MAX_SECRET_LENGTH = 128
MAX_PASSWORD_LENGTH = 256
MIN_PASSWORD_LENGTH = 4
MAX_UID_LENGTH = 64
#: scrypt cost: 16 MiB and some tens of milliseconds per check. Below OWASP's N=2^17 on purpose: each check is made
#: for an unauthenticated visitor, and 128 MiB each would let a few concurrent requests exhaust memory; online
#: guessing is bounded by the lockout, and offline guessing (a stolen index) still costs this much per guess.
SCRYPT_N, SCRYPT_R, SCRYPT_P = 2**14, 8, 1
#: (tag, name) of what ``describe`` tells about a study
_DESCRIBED = (("00100010", "patient_name"), ("00100020", "patient_id"), ("00080020", "study_date"),
              ("00081030", "study_description"), ("00080050", "accession"))
DEIDENTIFY_REFUSED = "de-identification is not available yet"


class ShareRefused(DicomVaultError):
    """A link that cannot be opened. ``why``: ``unknown`` (no such link), ``expired``, ``revoked``, ``locked``
    (too many wrong passwords), ``password`` (a password is needed), ``wrong_password``."""

    def __init__(self, message: str, why: str, *, link: ShareLink | None = None) -> None:
        super().__init__(message, reason=why)
        self.why = why
        self.link = link


@dataclass(frozen=True)
class CreatedShare:
    """A new link: its secret (shown once, the path is ``/share/<secret>``) and its record."""

    secret: str
    record: ShareLink


@dataclass(frozen=True)
class OpenedShare:
    session: OpenedSession
    link: ShareLink


def hash_password(password: str, *, salt: bytes | None = None) -> str:
    salt = salt if salt is not None else secrets.token_bytes(16)
    digest = hashlib.scrypt(password.encode(), salt=salt, n=SCRYPT_N, r=SCRYPT_R, p=SCRYPT_P, dklen=32)
    return f"scrypt${SCRYPT_N}${SCRYPT_R}${SCRYPT_P}${salt.hex()}${digest.hex()}"


def password_matches(stored: str, password: str) -> bool:
    try:
        kind, n, r, p, salt, expected = stored.split("$")
        if kind != "scrypt":
            return False
        digest = hashlib.scrypt(password.encode(), salt=bytes.fromhex(salt), n=int(n), r=int(r), p=int(p),
                                dklen=len(expected) // 2)
    except ValueError:
        return False
    return hmac.compare_digest(digest.hex(), expected)


def _hash(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


class ShareService:
    def __init__(self, store: ShareStore, sessions: SessionService | None, index: IndexRepository, *,
                 scope: str = "write", default_life: timedelta = timedelta(days=7),
                 max_life: timedelta = timedelta(days=30), max_attempts: int = 5,
                 lock_for: timedelta = timedelta(minutes=15),
                 now: Callable[[], datetime] = lambda: datetime.now(UTC)) -> None:
        self.store = store
        self.sessions = sessions
        self.index = index
        self.scope = scope
        self.default_life = min(default_life, max_life)
        self.max_life = max_life
        self.max_attempts = max_attempts
        self.lock_for = lock_for
        self._now = now

    # -- who may share -----------------------------------------------------------------------------------------

    def may_create(self, principal: Principal) -> bool:
        """Whether ``principal`` may create links (and list and revoke them)."""
        return (principal.kind not in ("anonymous", "share") and principal.study is None
                and principal.allows(self.scope))

    def _check(self, principal: Principal) -> None:
        if not self.may_create(principal):
            raise PermissionDenied(f"share links need the {self.scope!r} scope (share_links_scope) and a login")

    # -- managing links ----------------------------------------------------------------------------------------

    def create(self, principal: Principal, study_uid: str, *, expires_at: datetime | None = None,
               password: str | None = None, deidentify: bool = False) -> CreatedShare:
        """A new link to ``study_uid`` (which must exist). Raises ``PermissionDenied``, ``NotFound``, or
        ``InvalidQuery`` (de-identification asked for, an expiry not in the future or past ``share_max_days``,
        a password too short or long)."""
        self._check(principal)
        if deidentify:
            raise InvalidQuery(DEIDENTIFY_REFUSED)
        study_uid = study_uid.strip()
        if not study_uid or len(study_uid) > MAX_UID_LENGTH:
            raise InvalidQuery("a Study Instance UID (at most 64 characters) is needed")
        now = self._now()
        expires = expires_at if expires_at is not None else now + self.default_life
        if expires <= now:
            raise InvalidQuery("the expiry time is not in the future")
        if expires > now + self.max_life + timedelta(seconds=1):
            raise InvalidQuery(f"a share link lives at most {_days(self.max_life)} (share_max_days)")
        hashed = None
        if password:
            if not MIN_PASSWORD_LENGTH <= len(password) <= MAX_PASSWORD_LENGTH:
                raise InvalidQuery(f"a password has {MIN_PASSWORD_LENGTH} to {MAX_PASSWORD_LENGTH} characters")
            hashed = hash_password(password)
        if self.index.metadata_version(study_uid=study_uid) is None:
            raise NotFound("no such study")
        secret = PREFIX + secrets.token_urlsafe(32)
        record = self.store.add(secret_hash=_hash(secret), study_uid=study_uid, created_by=principal.name,
                                created_at=now, expires_at=expires, password_hash=hashed)
        return CreatedShare(secret, record)

    def describe(self, study_uid: str) -> dict[str, str] | None:
        """What a person recognises a study by (patient name and ID, date, description, accession), from the
        index; None when the study is not (or no longer) stored. For the pages: a UID alone is unreadable."""
        text = self.index.representative_metadata(study_uid=study_uid) if study_uid else None
        if text is None:
            return None
        try:
            data = orjson.loads(text)
        except orjson.JSONDecodeError:
            return {}
        out: dict[str, str] = {}
        for tag, name in _DESCRIBED:
            values = (data.get(tag) or {}).get("Value") or []
            if values:
                value = values[0]
                out[name] = str(value.get("Alphabetic", "")) if isinstance(value, dict) else str(value)
        return out

    def all(self, *, limit: int = 500) -> list[ShareLink]:
        return self.store.all(limit=limit)

    def get(self, share_id: int) -> ShareLink:
        link = self.store.by_id(share_id)
        if link is None:
            raise NotFound(f"no share link {share_id}")
        return link

    def uses(self, share_id: int, *, limit: int = 200) -> list[ShareUse]:
        return self.store.uses(share_id, limit=limit)

    def revoke(self, principal: Principal, share_id: int) -> ShareLink:
        """Revoke a link and end the sessions opened with it; raises ``NotFound`` (no such link, or revoked
        already) or ``PermissionDenied``."""
        self._check(principal)
        self.get(share_id)
        if not self.store.revoke(share_id, self._now()):
            raise NotFound(f"share link {share_id} is revoked already")
        if self.sessions is not None:
            self.sessions.end_share(share_id)
        return self.get(share_id)

    def usable(self, share_id: int) -> bool:
        """Whether sessions opened with this link may go on (the session service's ``share_check``)."""
        link = self.store.by_id(share_id)
        return link is not None and link.usable(self._now())

    # -- opening a link ----------------------------------------------------------------------------------------

    def find(self, secret: str) -> ShareLink | None:
        """The link of a secret (any state), or None."""
        if not secret or len(secret) > MAX_SECRET_LENGTH or not secret.startswith(PREFIX):
            return None
        return self.store.by_hash(_hash(secret))

    def open(self, secret: str, password: str | None, client: str) -> OpenedShare:
        """A session for the link's visitor, scoped to its study; every outcome but an unknown link is recorded.
        Raises ``ShareRefused`` (see its ``why``)."""
        link = self.find(secret)
        if link is None:
            raise ShareRefused("this link does not exist (mistyped or cut short?)", "unknown")
        now = self._now()
        client = (client or "-")[:64]
        state = link.state(now)
        if state != "active":
            self.store.record_use(link.id, at=now, what=state, client=client)
            raise ShareRefused(f"this link has {'been revoked' if state == 'revoked' else 'expired'}", state,
                               link=link)
        if link.password_hash is not None:
            if link.locked_until is not None and now < link.locked_until:
                self.store.record_use(link.id, at=now, what="locked", client=client)
                raise ShareRefused("too many wrong passwords: this link is locked for a while", "locked", link=link)
            if not password:
                raise ShareRefused("this link needs a password", "password", link=link)
            if len(password) > MAX_PASSWORD_LENGTH or not password_matches(link.password_hash, password):
                after = self.store.wrong_password(link.id, at=now, client=client, max_attempts=self.max_attempts,
                                                  lock_until=now + self.lock_for)
                if after.locked_until is not None and now < after.locked_until:
                    raise ShareRefused("too many wrong passwords: this link is locked for a while", "locked",
                                       link=after)
                raise ShareRefused("wrong password", "wrong_password", link=after)
        if self.sessions is None:
            raise ShareRefused("this archive keeps no sessions", "unknown", link=link)
        who = Principal(f"share:{link.id}", frozenset({"read"}), "share", study=link.study_uid)
        opened = self.sessions.open(who, expires_at=link.expires_at, share_id=link.id)
        self.store.record_use(link.id, at=now, what="opened", client=client)
        return OpenedShare(opened, link)


def _days(life: timedelta) -> str:
    days = life.total_seconds() / 86400
    return f"{days:g} day{'s' if days != 1 else ''}"
