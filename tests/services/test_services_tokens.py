"""API tokens: whether any token is active is answered from a short-lived memo, so anonymous requests do not
query the index each time; changes made through the service are seen at once, changes made behind its back
(another process) once the memo expires."""

from __future__ import annotations

from dicomvault.bootstrap import Archive
from dicomvault.services.tokens import TokenService


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_any_active_is_memoised_for_the_ttl_and_refreshed_after(archive: Archive) -> None:
    assert archive.tokens is not None
    store = archive.tokens.store
    clock = Clock()
    svc = TokenService(store, active_ttl=1.0, clock=clock)
    assert svc.any_active_cached() is None  # nothing known yet: the caller must ask the index
    assert svc.any_active() is False
    assert svc.any_active_cached() is False
    # Another process creates a token: not seen while the memo is fresh, seen once it expires.
    TokenService(store).create("other-process", ["read"])
    clock.now += 0.5
    assert svc.any_active() is False
    clock.now += 0.6
    assert svc.any_active_cached() is None
    assert svc.any_active() is True


def test_create_and_revoke_through_the_service_are_seen_at_once(archive: Archive) -> None:
    assert archive.tokens is not None
    clock = Clock()
    svc = TokenService(archive.tokens.store, active_ttl=3600.0, clock=clock)
    assert svc.any_active() is False
    svc.create("viewer", ["read"])
    assert svc.any_active_cached() is None
    assert svc.any_active() is True
    svc.revoke("viewer")
    assert svc.any_active() is False
