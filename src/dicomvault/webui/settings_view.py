"""The settings in effect, for the admin page: every value of the ``Settings`` model, secrets masked.

Why masking by rule and not by a list of fields: settings grow with every feature (peers, routes, stores, OIDC), and
a secret added later must not appear on a page because nobody remembered to list it. So the whole model is walked
and a value is masked when its key looks like a secret (password, secret, token, key, credential …: keys that hold
numbers or booleans, like ``query_max_keys``, are shown), and in every text the password of a URL
(``postgresql://user:…@host``) and query parameters named like secrets (``?secret_access_key=…``) are masked.
"""

from __future__ import annotations

import json
import re
from typing import Any

from dicomvault.settings import Settings

MASK = "••••••"

#: keys whose text values are secrets (matched against the last part of the key, case-insensitively)
SECRET_KEY = re.compile(r"(pass(word|wd|phrase)?|secret|token|credential|private|api_?key|access_?key|auth|"
                        r"(^|_)keys?$|signature|cookie|session)", re.IGNORECASE)
#: ``scheme://user:password@`` in any text
_USERINFO = re.compile(r"(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*://)(?P<user>[^/@\s:?#]*):(?P<password>[^/@\s?#]*)@")
#: ``name=value`` in a URL's query (or a DSN's parameters) whose name looks like a secret
_QUERY = re.compile(r"(?P<lead>[?&;\s])(?P<name>[A-Za-z0-9_.-]+)=(?P<value>[^&;#\s]*)")


def mask_text(text: str) -> str:
    """``text`` with URL passwords and secret-named query parameters masked."""
    text = _USERINFO.sub(lambda m: f"{m['scheme']}{m['user']}:{MASK}@", text)

    def query(m: re.Match[str]) -> str:
        return f"{m['lead']}{m['name']}={MASK}" if SECRET_KEY.search(m["name"]) and m["value"] else m.group(0)

    return _QUERY.sub(query, text)


def _walk(prefix: str, value: Any, out: list[tuple[str, str]]) -> None:
    name = prefix.rsplit(".", 1)[-1].split("[", 1)[0]
    if isinstance(value, dict) and value:
        for key in sorted(value):
            _walk(f"{prefix}.{key}" if prefix else str(key), value[key], out)
        return
    if isinstance(value, list) and value and any(isinstance(v, dict | list) for v in value):
        for n, item in enumerate(value):
            _walk(f"{prefix}[{n}]", item, out)
        return
    if isinstance(value, str | list) and value and SECRET_KEY.search(name):
        out.append((prefix, MASK))
    else:
        text = value if isinstance(value, str) and value else json.dumps(value, ensure_ascii=False)
        out.append((prefix, mask_text(text)))


def masked_settings(settings: Settings) -> list[tuple[str, str]]:
    """(dotted key, value as text) of every setting in effect, secrets masked, in key order."""
    out: list[tuple[str, str]] = []
    _walk("", settings.model_dump(mode="json"), out)
    return out
