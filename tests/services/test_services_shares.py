"""Share links: creation rules (permission, expiry, password, de-identification refused), opening (sessions scoped
to the study), the password lockout, revocation, and the record of every use."""

from __future__ import annotations

import io
from datetime import UTC, datetime, timedelta

import pytest

from dicomvault.bootstrap import Archive
from dicomvault.domain.errors import InvalidQuery, NotFound, PermissionDenied
from dicomvault.services.auth import Principal
from dicomvault.services.sessions import principal_of
from dicomvault.services.shares import (
    DEIDENTIFY_REFUSED,
    ShareRefused,
    ShareService,
    hash_password,
    password_matches,
)
from tests.helpers import make_ct

ALICE = Principal("alice", frozenset({"read", "write"}), "token")


def shares(archive: Archive) -> ShareService:
    assert archive.shares is not None
    return archive.shares


def stored_study(archive: Archive) -> str:
    study = "1.2.826.0.1.3680043.8.498.1001"
    archive.ingest.ingest(io.BytesIO(make_ct(study=study)), source="test")
    return study


def refusal(service: ShareService, secret: str, password: str | None = None) -> ShareRefused:
    with pytest.raises(ShareRefused) as caught:
        service.open(secret, password, "192.0.2.7")
    return caught.value


def test_a_link_opens_a_read_only_session_scoped_to_its_study(archive: Archive) -> None:
    study = stored_study(archive)
    created = shares(archive).create(ALICE, study)
    assert created.secret.startswith("dvl_") and created.record.created_by == "alice"
    life = created.record.expires_at - created.record.created_at
    assert timedelta(days=7) - timedelta(seconds=5) < life <= timedelta(days=7)  # share_default_days
    opened = shares(archive).open(created.secret, None, "192.0.2.7")
    assert archive.sessions is not None
    session = archive.sessions.resolve(opened.session.secret)
    assert session is not None and session.share_id == created.record.id
    who = principal_of(session)
    assert who.study == study and who.scopes == frozenset({"read"}) and who.kind == "share"
    assert session.expires_at <= created.record.expires_at
    link = shares(archive).get(created.record.id)
    assert link.uses == 1 and link.last_used_at is not None
    [use] = shares(archive).uses(created.record.id)
    assert (use.what, use.client) == ("opened", "192.0.2.7")


def test_who_may_create_links(archive: Archive) -> None:
    study = stored_study(archive)
    service = shares(archive)
    for nobody in (Principal("reader", frozenset({"read"}), "token"),
                   Principal("anonymous", frozenset({"read", "write"}), "anonymous"),
                   Principal("share:1", frozenset({"read", "write"}), "share", study=study)):
        assert not service.may_create(nobody)
        with pytest.raises(PermissionDenied):
            service.create(nobody, study)
    assert service.may_create(Principal("root", frozenset({"admin"}), "token"))
    strict = ShareService(service.store, service.sessions, service.index, scope="admin")
    with pytest.raises(PermissionDenied):
        strict.create(ALICE, study)


def test_creation_refuses_deidentification_bad_expiry_unknown_study_and_short_passwords(archive: Archive) -> None:
    study = stored_study(archive)
    service = shares(archive)
    with pytest.raises(InvalidQuery, match=DEIDENTIFY_REFUSED):
        service.create(ALICE, study, deidentify=True)
    now = datetime.now(UTC)
    with pytest.raises(InvalidQuery, match="at most 30 days"):
        service.create(ALICE, study, expires_at=now + timedelta(days=31))
    with pytest.raises(InvalidQuery, match="not in the future"):
        service.create(ALICE, study, expires_at=now - timedelta(seconds=1))
    with pytest.raises(NotFound):
        service.create(ALICE, "1.2.3.4.5.6")
    with pytest.raises(InvalidQuery):
        service.create(ALICE, study, password="abc")
    with pytest.raises(InvalidQuery):
        service.create(ALICE, "1" * 65)
    assert service.all() == []  # nothing was created by a refused request


def test_expired_and_revoked_links_are_refused_and_recorded(archive: Archive) -> None:
    study = stored_study(archive)
    service = shares(archive)
    created = service.create(ALICE, study)
    later = ShareService(service.store, service.sessions, service.index,
                         now=lambda: datetime.now(UTC) + timedelta(days=8))
    assert refusal(later, created.secret).why == "expired"
    assert not later.usable(created.record.id) and service.usable(created.record.id)
    service.revoke(ALICE, created.record.id)
    assert refusal(service, created.secret).why == "revoked"
    assert [u.what for u in service.uses(created.record.id)] == ["revoked", "expired"]
    assert refusal(service, "dvl_" + "x" * 43).why == "unknown"
    assert refusal(service, "not-a-link").why == "unknown"
    with pytest.raises(NotFound):
        service.revoke(ALICE, created.record.id)  # revoked already
    with pytest.raises(NotFound):
        service.revoke(ALICE, 999)


def test_revoking_ends_the_sessions_opened_with_the_link(archive: Archive) -> None:
    study = stored_study(archive)
    service = shares(archive)
    created = service.create(ALICE, study)
    opened = service.open(created.secret, None, "192.0.2.7")
    assert archive.sessions is not None
    assert archive.sessions.resolve(opened.session.secret) is not None
    service.revoke(ALICE, created.record.id)
    assert archive.sessions.resolve(opened.session.secret) is None


def test_sessions_end_with_the_link_even_when_revoked_elsewhere(archive: Archive) -> None:
    """Another node revokes the link (the store only): ``share_check`` (wired in bootstrap) ends the session."""
    study = stored_study(archive)
    service = shares(archive)
    created = service.create(ALICE, study)
    opened = service.open(created.secret, None, "-")
    assert archive.sessions is not None and archive.sessions.share_check is not None
    service.store.revoke(created.record.id, datetime.now(UTC))
    archive.sessions._cache.clear()  # this process's short cache, as after cache_seconds
    assert archive.sessions.resolve(opened.session.secret) is None


def test_password_links_lock_after_too_many_wrong_passwords(archive: Archive) -> None:
    study = stored_study(archive)
    service = ShareService(shares(archive).store, archive.sessions, archive.index, max_attempts=3,
                           lock_for=timedelta(minutes=15))
    created = service.create(ALICE, study, password="correct horse")
    assert created.record.password_hash is not None and "correct" not in created.record.password_hash
    assert refusal(service, created.secret).why == "password"  # asked for, not counted
    assert refusal(service, created.secret, "wrong").why == "wrong_password"
    assert service.open(created.secret, "correct horse", "-").link.id == created.record.id  # resets the count
    assert refusal(service, created.secret, "wrong1").why == "wrong_password"
    assert refusal(service, created.secret, "wrong2").why == "wrong_password"
    assert refusal(service, created.secret, "wrong3").why == "locked"
    assert refusal(service, created.secret, "correct horse").why == "locked"  # even the right one, for a while
    unlocked = ShareService(service.store, archive.sessions, archive.index,
                            now=lambda: datetime.now(UTC) + timedelta(minutes=16))
    assert unlocked.open(created.secret, "correct horse", "-").link.id == created.record.id
    kinds = [u.what for u in service.uses(created.record.id)]
    assert kinds == ["opened", "locked", "wrong_password", "wrong_password", "wrong_password", "opened",
                     "wrong_password"]


def test_passwords_are_salted_scrypt_hashes() -> None:
    one, two = hash_password("secret!"), hash_password("secret!")
    assert one != two and one.startswith("scrypt$")
    assert password_matches(one, "secret!") and password_matches(two, "secret!")
    assert not password_matches(one, "secret?") and not password_matches("garbage", "secret!")


def test_describe_tells_what_a_person_recognises(archive: Archive) -> None:
    study = stored_study(archive)
    about = shares(archive).describe(study)
    assert about is not None and about["patient_name"] == "Doe^John" and about["study_date"] == "20240102"
    assert shares(archive).describe("1.2.3") is None
