"""A small OIDC provider on loopback for the tests: discovery, JWKS, tokens signed with its key (bearer tests), and a
token endpoint that checks an authorization code and its PKCE verifier (S256) before issuing an access token (the
pages' login). The authorization step (a login form at the provider) is the test itself: it calls ``authorize``
with what the archive sent the browser."""

from __future__ import annotations

import base64
import hashlib
import json
import secrets
import threading
import time
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import jwt
from cryptography.hazmat.primitives.asymmetric import rsa
from jwt.algorithms import RSAAlgorithm


class Provider:
    def __init__(self, *, client_id: str = "dicomvault-pages", audience: str = "dicomvault",
                 scope: str = "dicomvault.read dicomvault.write") -> None:
        self.key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        jwk = json.loads(RSAAlgorithm.to_jwk(self.key.public_key()))
        jwk.update({"kid": "k1", "use": "sig", "alg": "RS256"})
        self.jwks = {"keys": [jwk]}
        self.client_id, self.audience, self.scope = client_id, audience, scope
        self.codes: dict[str, dict[str, str]] = {}
        self.token_requests: list[dict[str, str]] = []
        provider = self

        class Handler(BaseHTTPRequestHandler):
            def _json(self, status: int, body: Any) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self) -> None:
                if self.path == "/.well-known/openid-configuration":
                    self._json(200, {"issuer": provider.url, "jwks_uri": provider.url + "/jwks.json",
                                     "authorization_endpoint": provider.url + "/authorize",
                                     "token_endpoint": provider.url + "/token"})
                elif self.path == "/jwks.json":
                    self._json(200, provider.jwks)
                else:
                    self._json(404, {"error": "not_found"})

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", "0"))
                form = dict(urllib.parse.parse_qsl(self.rfile.read(length).decode()))
                provider.token_requests.append(form)
                self._json(*provider.exchange(form))

            def log_message(self, *args: Any) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def authorize(self, authorization_url: str) -> tuple[str, str]:
        """The user logs in at the provider: returns ``(code, state)`` to send back to the redirect URI."""
        query = dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(authorization_url).query))
        assert query["response_type"] == "code" and query["client_id"] == self.client_id
        assert query["code_challenge_method"] == "S256"
        code = secrets.token_urlsafe(16)
        self.codes[code] = query
        return code, query["state"]

    def exchange(self, form: dict[str, str]) -> tuple[int, dict[str, Any]]:
        asked = self.codes.pop(form.get("code", ""), None)
        if asked is None or form.get("grant_type") != "authorization_code":
            return 400, {"error": "invalid_grant"}
        challenge = base64.urlsafe_b64encode(
            hashlib.sha256(form.get("code_verifier", "").encode()).digest()).decode().rstrip("=")
        if challenge != asked["code_challenge"] or form.get("redirect_uri") != asked["redirect_uri"]:
            return 400, {"error": "invalid_grant"}
        return 200, {"access_token": self.token(scope=self.scope, preferred_username="dr.house"),
                     "token_type": "Bearer", "expires_in": 300}

    def token(self, *, key: Any = None, kid: str = "k1", alg: str = "RS256", **claims: Any) -> str:
        """A signed access token; a claim given as None is left out."""
        now = int(time.time())
        payload = {"iss": self.url, "aud": self.audience, "sub": "user-1", "preferred_username": "alice",
                   "iat": now, "exp": now + 300, **claims}
        payload = {k: v for k, v in payload.items() if v is not None}
        return jwt.encode(payload, key or self.key, algorithm=alg, headers={"kid": kid})

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
