"""The archive's HTTP app with the web pages, served by a real uvicorn on loopback, and an httpx client for it
(cookies kept, redirects not followed: tests look at them)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import httpx

from dicomvault.bootstrap import Archive
from dicomvault.dicomweb.app import create_app
from dicomvault.webui.pages import mount_pages
from tests.webui.live_server import LiveServer


@contextmanager
def pages_client(archive: Archive) -> Iterator[httpx.Client]:
    app = create_app(archive)
    mount_pages(app)
    with LiveServer(app) as server, httpx.Client(base_url=server.url, timeout=30) as client:
        yield client


def new_client(client: httpx.Client) -> httpx.Client:
    """Another browser (no cookies) on the same server."""
    return httpx.Client(base_url=str(client.base_url), timeout=30)


def login(client: httpx.Client, secret: str, next_path: str = "/ui/") -> str:
    """Log in with an API token; returns where the login page sends the browser."""
    answer = client.post("/ui/login", data={"token": secret, "next": next_path})
    assert answer.status_code == 303, answer.text
    cookie = answer.headers["set-cookie"].lower()
    assert "httponly" in cookie and "samesite=lax" in cookie and "path=/" in cookie
    return answer.headers["location"]


def csrf_of(client: httpx.Client) -> str:
    info = client.get("/ui/session")
    assert info.status_code == 200, info.text
    return str(info.json()["csrf"])
