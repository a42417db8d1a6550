"""Browser sessions: login with an API token, expiry, logout, the token's revocation, share sessions."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from dicomvault.bootstrap import Archive
from dicomvault.domain.errors import Unauthenticated
from dicomvault.services.auth import Principal
from dicomvault.services.sessions import SessionService, csrf_matches, principal_of


def sessions(archive: Archive) -> SessionService:
    assert archive.sessions is not None
    return archive.sessions


def test_login_with_a_token_opens_a_session_with_its_scopes(archive: Archive) -> None:
    assert archive.tokens is not None
    _, secret = archive.tokens.create("alice", ["read", "write"])
    opened = sessions(archive).login(secret)
    assert opened.secret.startswith("dvs_") and opened.secret != secret
    found = sessions(archive).resolve(opened.secret)
    assert found is not None
    who = principal_of(found)
    assert (who.name, who.scopes, who.kind, who.study) == ("alice", frozenset({"read", "write"}), "token", None)
    assert csrf_matches(found, found.csrf)
    assert not csrf_matches(found, "x" + found.csrf) and not csrf_matches(found, None)


@pytest.mark.parametrize("credential", ["", "dv_unknown", "x" * 9000, "a.b.c"])
def test_login_refuses_what_is_not_a_valid_token(archive: Archive, credential: str) -> None:
    with pytest.raises(Unauthenticated):
        sessions(archive).login(credential)


def test_unknown_or_malformed_cookie_values_resolve_to_nothing(archive: Archive) -> None:
    for value in (None, "", "dvs_" + "a" * 43, "not-a-session", "dvs_" + "x" * 500):
        assert sessions(archive).resolve(value) is None


def test_logout_ends_the_session(archive: Archive) -> None:
    assert archive.tokens is not None
    _, secret = archive.tokens.create("bob", ["read"])
    opened = sessions(archive).login(secret)
    assert sessions(archive).resolve(opened.secret) is not None
    assert sessions(archive).logout(opened.secret)
    assert sessions(archive).resolve(opened.secret) is None
    assert not sessions(archive).logout(opened.secret)


def test_revoking_the_token_ends_its_sessions(archive: Archive) -> None:
    assert archive.tokens is not None
    _, secret = archive.tokens.create("carol", ["read"])
    service = SessionService(sessions(archive).store, archive.tokens, None, cache_seconds=0)
    opened = service.login(secret)
    archive.tokens.revoke("carol")
    assert service.resolve(opened.secret) is None


def test_a_session_never_outlives_its_token(archive: Archive) -> None:
    assert archive.tokens is not None
    soon = datetime.now(UTC) + timedelta(minutes=5)
    _, secret = archive.tokens.create("dave", ["read"], expires_at=soon)
    opened = sessions(archive).login(secret)
    assert opened.record.expires_at <= soon


def test_share_sessions_are_scoped_and_end_with_their_link(archive: Archive) -> None:
    usable = {7: True}
    service = SessionService(sessions(archive).store, archive.tokens, None, cache_seconds=60,
                             share_check=lambda share_id: usable.get(share_id, False))
    visitor = Principal("share:7", frozenset({"read"}), "share", study="1.2.3")
    opened = service.open(visitor, expires_at=datetime.now(UTC) + timedelta(days=7), share_id=7)
    found = service.resolve(opened.secret)
    assert found is not None and principal_of(found).study == "1.2.3"
    assert opened.record.expires_at <= datetime.now(UTC) + service.max_age
    usable[7] = False
    assert service.end_share(7) == 1
    assert service.resolve(opened.secret) is None


def test_purge_forgets_long_ended_sessions(archive: Archive) -> None:
    service = sessions(archive)
    visitor = Principal("old", frozenset({"read"}), "token")
    service.open(visitor, expires_at=datetime.now(UTC) - timedelta(days=3))
    assert service.purge() == 1
