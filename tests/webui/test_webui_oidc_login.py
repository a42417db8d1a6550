"""Login with the organisation's account: authorization code + PKCE against a local OIDC provider."""

from __future__ import annotations

import urllib.parse
from collections.abc import Iterator

import pytest

from dicomvault.bootstrap import build_archive
from dicomvault.domain.errors import ConfigurationError
from dicomvault.settings import Settings
from tests.oidc_provider import Provider
from tests.webui.pages_site import pages_client


@pytest.fixture
def provider() -> Iterator[Provider]:
    p = Provider()
    yield p
    p.close()


def oidc_settings(settings: Settings, provider: Provider) -> Settings:
    return settings.model_copy(update={"oidc_issuer": provider.url, "oidc_audience": "dicomvault",
                                       "oidc_client_id": "dicomvault-pages"})


def test_login_with_code_and_pkce_opens_a_session(settings: Settings, provider: Provider) -> None:
    archive = build_archive(oidc_settings(settings, provider))
    try:
        with pages_client(archive) as client:
            assert client.get("/dicom-web/studies").status_code == 401
            assert "/ui/login/oidc" in client.get("/ui/login").text
            start = client.get("/ui/login/oidc", params={"next": "/dicom-web/studies"})
            assert start.status_code == 303
            location = start.headers["location"]
            assert location.startswith(provider.url + "/authorize?")
            query = dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(location).query))
            assert "openid" in query["scope"].split() and "dicomvault.read" in query["scope"].split()
            assert query["redirect_uri"] == str(client.base_url) + "/ui/login/oidc/callback"
            code, state = provider.authorize(location)
            back = client.get("/ui/login/oidc/callback", params={"code": code, "state": state})
            assert back.status_code == 303 and back.headers["location"] == "/dicom-web/studies", back.text
            assert provider.token_requests[-1]["code_verifier"]  # the verifier never went through the browser URL
            assert provider.token_requests[-1]["code_verifier"] not in location
            assert client.get("/dicom-web/studies").status_code in (200, 204)
            assert client.get("/ui/session").json()["name"] == "dr.house"
            assert sorted(client.get("/ui/session").json()["scopes"]) == ["read", "write"]
    finally:
        archive.close()


def test_a_callback_with_the_wrong_state_or_a_replayed_code_is_refused(settings: Settings,
                                                                       provider: Provider) -> None:
    archive = build_archive(oidc_settings(settings, provider))
    try:
        with pages_client(archive) as client:
            start = client.get("/ui/login/oidc")
            code, state = provider.authorize(start.headers["location"])
            wrong = client.get("/ui/login/oidc/callback", params={"code": code, "state": state + "x"})
            assert wrong.status_code == 401 and "did not start here" in wrong.text
            start = client.get("/ui/login/oidc")
            code, state = provider.authorize(start.headers["location"])
            assert client.get("/ui/login/oidc/callback", params={"code": code, "state": state}).status_code == 303
            client.cookies.clear()
            replay = client.get("/ui/login/oidc/callback", params={"code": code, "state": state})
            assert replay.status_code == 401
            refused = client.get("/ui/login/oidc/callback", params={"error": "access_denied", "state": state})
            assert refused.status_code == 401 and "access_denied" in refused.text
    finally:
        archive.close()


def test_without_a_client_id_there_is_no_organisation_login(settings: Settings) -> None:
    archive = build_archive(settings)
    try:
        with pages_client(archive) as client:
            assert "/ui/login/oidc" not in client.get("/ui/login").text
            assert client.get("/ui/login/oidc").status_code == 404
    finally:
        archive.close()


def test_a_client_id_without_an_issuer_is_refused_at_start(settings: Settings) -> None:
    from dicomvault.dicomweb.app import create_app

    archive = build_archive(settings.model_copy(update={"oidc_client_id": "x"}))
    try:
        with pytest.raises(ConfigurationError, match="oidc_issuer"):
            create_app(archive)
    finally:
        archive.close()
