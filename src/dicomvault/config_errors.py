"""Readable configuration errors: each fault of ``Settings.load`` as one message naming the TOML file and line.

A pydantic ``ValidationError`` locates a fault by its path in the merged settings (``('lifecycle', 1, 'when',
'modality', 'str')``); a person editing ``config.toml`` needs the line::

    config.toml line 14: [[lifecycle]] rule 2 ('CT to the cloud'), when.modality: expected str or list[str], got 5
    config.toml line 3: [stores.cold] url: store URL 'ftp://…' must start with file://, s3:// or memory://

The standard library's ``tomllib`` gives no positions, and no maintained library maps pydantic locations to TOML
lines (``tomlkit`` keeps a document's layout but is not a dependency and exposes no line numbers; ``tomlantic``,
which pairs it with pydantic, is a 0.x side project), so ``key_lines`` scans the text itself, once and linearly:
table headers (``[stores.NAME]``, the n-th ``[[lifecycle]]``, ``[lifecycle.when]`` sub-tables of the last array
entry), ``key = value`` lines with dotted and quoted keys, and the keys of inline tables (``when = { … }``). The
file was already parsed by ``tomllib`` when these messages are needed, so the scanner may assume valid TOML. A
fault whose exact key has no line of its own falls back to its table's header, then to no line.

A value set by an environment variable or a command-line option is not in the file: its message names that source
and never claims a line. Faults that ``Settings`` finds across fields (an unknown store in a rule, a duplicate rule
name) carry their position inside the field in the error's context (``settings.located_error``).
"""

from __future__ import annotations

import inspect
import json
import os
import re
import tomllib
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, get_args

from pydantic import BaseModel, ValidationError

from dicomvault.settings import LOCATED_ERROR, Settings

Path_ = tuple[str | int, ...]

ENV_PREFIX = str(Settings.model_config.get("env_prefix", "")).upper()
_BARE_KEY = re.compile(r"[A-Za-z0-9_-]+")
_TOML_POSITION = re.compile(r"\(at line (\d+), column \d+\)")


class ConfigurationError(Exception):
    """The configuration was refused; ``problems`` holds one readable message per fault."""

    def __init__(self, problems: Sequence[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = list(problems)


def load_settings(config_file: Path | None = None, **overrides: Any) -> Settings:
    """``Settings.load`` whose every refusal is a ``ConfigurationError`` with readable, located messages."""
    toml_file = config_file or (Path(os.environ["DICOMVAULT_CONFIG"]) if os.environ.get("DICOMVAULT_CONFIG")
                                else None)
    try:
        settings = Settings.load(config_file, **overrides)
        unknown = _unknown_keys(toml_file) if toml_file is not None else []
        if unknown:
            raise ConfigurationError(unknown)
        return settings
    except FileNotFoundError as exc:
        raise ConfigurationError([str(exc)]) from None
    except ValidationError as exc:
        raise ConfigurationError(describe(exc, toml_file, overrides)) from None
    except tomllib.TOMLDecodeError as exc:
        found = _TOML_POSITION.search(str(exc))
        where = f"{toml_file} line {found.group(1)}" if found and toml_file else str(toml_file)
        raise ConfigurationError([f"{where}: not valid TOML: {exc}"]) from None
    except (UnicodeDecodeError, OSError) as exc:
        raise ConfigurationError([f"{toml_file}: cannot be read: {exc}"]) from None


def _unknown_keys(toml_file: Path) -> list[str]:
    """Top-level keys of the file that are no setting: a misspelt ``ingest_stor`` must stop the start-up, not
    leave objects on another store. (``Settings`` ignores unknown *environment* variables: other tools share the
    prefix's namespace less carefully than a file the operator wrote for this archive.)"""
    text = toml_file.read_text(encoding="utf-8")
    known = set(Settings.model_fields)
    lines = key_lines(text)
    out = []
    for key in tomllib.loads(text):
        if key not in known:
            line = lines.get((key,))
            where = f"{toml_file} line {line}" if line else str(toml_file)
            out.append(f"{where}: {key!r} is not a setting (misspelt? see the settings table in README.md)")
    return out


def describe(error: ValidationError, toml_file: Path | None, overrides: Mapping[str, Any] | None = None,
             environ: Mapping[str, str] | None = None) -> list[str]:
    """One message per fault of ``error`` (raised by ``Settings`` built from ``toml_file``, the non-None
    ``overrides`` and ``environ``, default ``os.environ``), in the order pydantic reports them."""
    flags = {k: v for k, v in (overrides or {}).items() if v is not None}
    env = {k.upper(): v for k, v in (os.environ if environ is None else environ).items()
           if k.upper().startswith(ENV_PREFIX)}
    data: dict[str, Any] = {}
    lines: dict[Path_, int] = {}
    if toml_file is not None:
        try:
            text = Path(toml_file).read_text(encoding="utf-8")
            data = tomllib.loads(text)
            lines = key_lines(text)
        except (OSError, ValueError):
            data, lines = {}, {}

    # Faults grouped by where they are; pydantic reports a bad value of a union field once per member ("not a
    # str", "not a list[str]"): those share the union's place and become one message.
    groups: dict[tuple[str, Path_], list[tuple[Path_, dict[str, Any]]]] = {}
    supplied: dict[str, Mapping[str, Any]] = {}
    for err in error.errors():
        loc: Path_ = tuple(err["loc"])
        if err["type"] == LOCATED_ERROR:
            loc = loc + tuple((err.get("ctx") or {}).get("dv_at", ()))
        origin, values = _origin(loc, flags, env, data)
        supplied[origin] = values
        path, union_at = _data_path(loc, values)
        if err["type"] == "missing" and len(loc) > len(path) and isinstance(loc[len(path)], str):
            path = (*path, loc[len(path)])
        site = path[:union_at] if union_at is not None else path
        groups.setdefault((origin, site), []).append((path, {**dict(err), "loc": loc}))

    messages: list[str] = []
    for (origin, site), faults in groups.items():
        values = supplied[origin]
        deeper = [(p, e) for p, e in faults if len(p) > len(site)]
        if len(faults) > 1 and not deeper and all(p == site for p, _ in faults):
            kinds = [str(e["loc"][len(e["loc"]) - 1]) for _, e in faults]
            if len(set(kinds)) == len(kinds):  # one fault per union member
                reason = f"expected {' or '.join(kinds)}, got {_shown(faults[0][1].get('input'))}"
                messages.append(_message(origin, site, reason, toml_file, lines, values))
                continue
        by_path: dict[Path_, list[str]] = {}
        for path, fault in deeper or faults:
            by_path.setdefault(path, []).append(_reason(fault, path))
        for path, reasons in by_path.items():
            messages.append(_message(origin, path, "; ".join(dict.fromkeys(reasons)), toml_file, lines, values))
    return messages


def _message(origin: str, path: Path_, reason: str, toml_file: Path | None, lines: Mapping[Path_, int],
             values: Mapping[str, Any]) -> str:
    return f"{_where(origin, path, toml_file, lines)}{_label(path, values)}: {reason}"


# -- where a value came from ------------------------------------------------------------------------------------

def _origin(loc: Path_, flags: Mapping[str, Any], env: Mapping[str, str],
            data: Mapping[str, Any]) -> tuple[str, Mapping[str, Any]]:
    """Where the faulty value came from: ``"flag:FIELD"``, ``"env:NAME"``, ``"file"`` or ``""`` (a default), and the
    settings that source supplied (to walk the fault's location in)."""
    if not loc or not isinstance(loc[0], str):
        return "", {}
    if loc[0] in flags:
        return f"flag:{loc[0]}", {loc[0]: flags[loc[0]]}
    keys: list[str] = []
    for number, part in enumerate(loc):
        if not isinstance(part, str):
            break
        keys.append(part)
        name = ENV_PREFIX + "__".join(keys).upper()
        if name in env:
            value = _json(env[name])
            rest = loc[number + 1:]
            if rest and _walk(value, rest) is None and _walk(data, loc) is not None:
                continue  # a JSON value merged with the file's: the faulty part is the file's
            supplied: Any = value if value is not None else env[name]
            for key in reversed(keys):
                supplied = {key: supplied}
            return f"env:{name}", supplied
    return ("file", data) if loc[0] in data else ("", {})


def _json(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        return None


def _walk(node: Any, path: Path_) -> Any:
    for part in path:
        if _has(node, part):
            node = node[part]
        else:
            return None
    return node


def _has(node: Any, part: str | int) -> bool:
    if isinstance(node, dict):
        return isinstance(part, str) and part in node
    return isinstance(node, list) and isinstance(part, int) and 0 <= part < len(node)


def _data_path(loc: Path_, data: Mapping[str, Any]) -> tuple[Path_, int | None]:
    """The part of ``loc`` that exists in ``data``, and the length of the path where pydantic tagged a union
    member (``'str'``, ``'list[str]'``: a name where the value is no table), if it did."""
    path: list[str | int] = []
    union_at: int | None = None
    node: Any = data
    for part in loc:
        if _has(node, part):
            node = node[part]
        elif not isinstance(node, dict) and isinstance(part, str):
            union_at = len(path) if union_at is None else union_at
            if isinstance(node, list):
                continue  # the list branch of the union: its items follow
            break
        else:
            break
        path.append(part)
    return tuple(path), union_at


# -- how a fault is shown ---------------------------------------------------------------------------------------

def _where(origin: str, path: Path_, toml_file: Path | None, lines: Mapping[Path_, int]) -> str:
    if origin.startswith("flag:"):
        return "(command line) "
    if origin.startswith("env:"):
        return f"(environment variable {origin[4:]}) "
    if origin == "file" and toml_file is not None:
        for end in range(len(path), 0, -1):
            line = lines.get(path[:end])
            if line is not None:
                return f"{toml_file} line {line}: "
        return f"{toml_file}: "
    return ""


def _label(path: Path_, data: Mapping[str, Any]) -> str:
    """``[[lifecycle]] rule 2 ('name'), when.modality``, ``[stores.cold] url`` or ``ingest_store``."""
    if not path:
        return "settings"
    head, rest = path[0], path[1:]
    value = data.get(head) if isinstance(head, str) else None
    if isinstance(head, str) and rest and isinstance(rest[0], int):
        noun = "rule" if head in ("lifecycle", "coercion", "route") else "entry"
        label = f"[[{head}]] {noun} {rest[0] + 1}"
        item = value[rest[0]] if isinstance(value, list) and rest[0] < len(value) else None
        if isinstance(item, dict) and isinstance(item.get("name"), str):
            label += f" ({item['name']!r})"
        return label + (f", {_dotted(rest[1:])}" if rest[1:] else "")
    if isinstance(head, str) and rest and isinstance(value, dict) and isinstance(value.get(rest[0]), dict):
        label = f"[{head}.{_key(str(rest[0]))}]"
        return label + (f" {_dotted(rest[1:])}" if rest[1:] else "")
    return _dotted(path)


def _dotted(path: Path_) -> str:
    out = ""
    for part in path:
        if isinstance(part, int):
            out += f" item {part + 1}"
        else:
            out += ("." if out else "") + _key(part)
    return out


def _key(key: str) -> str:
    return key if _BARE_KEY.fullmatch(key) else json.dumps(key)


def _reason(err: dict[str, Any], path: Path_) -> str:
    kind, msg, ctx = err["type"], str(err["msg"]), err.get("ctx") or {}
    if kind == LOCATED_ERROR:
        return str(ctx.get("dv_detail", msg))
    if kind == "value_error":
        return msg.removeprefix("Value error, ")
    if kind == "assertion_error":
        return msg.removeprefix("Assertion failed, ")
    if kind == "extra_forbidden":
        key = err["loc"][-1]
        allowed = _allowed_keys(path[:-1])
        return f"unknown key {key!r}" + (f" (allowed: {', '.join(allowed)})" if allowed else "")
    if kind == "missing":
        return "required key missing"
    value = err.get("input")
    if isinstance(value, (str, int, float, bool)):
        return f"{msg[0].lower()}{msg[1:]}, got {_shown(value)}"
    return msg[0].lower() + msg[1:]


def _shown(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "…"


def _allowed_keys(path: Path_) -> list[str]:
    """The keys the model at ``path`` (of ``Settings``) accepts, or nothing when it is not a model."""
    annotation: Any = Settings
    for part in path:
        if inspect.isclass(annotation) and issubclass(annotation, BaseModel) and isinstance(part, str):
            field = annotation.model_fields.get(part)
            annotation = field.annotation if field is not None else None
        else:  # an item of a list or a value of a dict
            annotation = _element(annotation)
    if inspect.isclass(annotation) and issubclass(annotation, BaseModel):
        return list(annotation.model_fields)
    return []


def _element(annotation: Any) -> Any:
    args = [a for a in get_args(annotation) if a is not type(None)]
    return args[-1] if args else None


# -- where keys are in the text ---------------------------------------------------------------------------------

def key_lines(text: str) -> dict[Path_, int]:
    """The line (1-based) where each table and key of a valid TOML document is defined, by its path: ``("stores",
    "cold", "url")``; the n-th ``[[lifecycle]]`` is ``("lifecycle", n - 1)``. A table only implied by a deeper
    header (``stores`` by ``[stores.cold]``) gets the line of its first mention."""
    lines: dict[Path_, int] = {}
    arrays: dict[Path_, int] = {}  # an array of tables → index of its last entry so far
    table: Path_ = ()
    pending = ""  # a value continued over several lines: a multi-line string or array

    def note(path: Path_, number: int) -> None:
        for end in range(1, len(path) + 1):
            lines.setdefault(path[:end], number)

    def resolve(keys: list[str]) -> Path_:
        path: Path_ = ()
        for key in keys:
            path = (*path, key)
            if path in arrays:
                path = (*path, arrays[path])
        return path

    for number, raw in enumerate(text.splitlines(), 1):
        if pending:
            pending = _still_open(pending + "\n" + raw)
            continue
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("[["):
            keys = _keys(line[2:_close_bracket(line)])
            base = (*resolve(keys[:-1]), keys[-1])
            arrays[base] = arrays.get(base, -1) + 1
            table = (*base, arrays[base])
            note(table, number)
            continue
        if line.startswith("["):
            table = resolve(_keys(line[1:_close_bracket(line)]))
            note(table, number)
            continue
        split = _equals(line)
        if split < 0:
            continue
        path = table + tuple(_keys(line[:split]))
        note(path, number)
        value = line[split + 1:].lstrip()
        if value.startswith("{"):
            for sub in _inline_keys(value):
                note(path + sub, number)
        pending = _still_open(value)
    return lines


def _scan(text: str) -> Iterator[tuple[int, str]]:
    """Positions and characters of ``text`` outside strings and comments (a string yields one ``'"'``); an
    unterminated string yields ``(-1, delimiter)`` last."""
    i, n = 0, len(text)
    while i < n:
        char = text[i]
        if char == "#":
            end = text.find("\n", i)
            if end < 0:
                return
            i = end
            continue
        if char in "\"'":
            delim = text[i:i + 3] if text[i:i + 3] in ('"""', "'''") else char
            j = i + len(delim)
            while True:
                k = text.find(delim, j)
                if k < 0:
                    yield -1, delim
                    return
                if delim[0] == '"' and _escaped(text, k):
                    j = k + 1
                    continue
                if len(delim) == 1 and "\n" in text[j:k]:
                    yield -1, delim
                    return
                break
            while len(delim) == 3 and text[k + 3:k + 4] == delim[0]:
                k += 1  # up to two quotes may end a multi-line string's content
            yield i, '"'
            i = k + len(delim)
            continue
        yield i, char
        i += 1


def _escaped(text: str, at: int) -> bool:
    backslashes = 0
    while at - backslashes - 1 >= 0 and text[at - backslashes - 1] == "\\":
        backslashes += 1
    return backslashes % 2 == 1


def _still_open(value: str) -> str:
    """``value`` when it continues on the next line (an open multi-line string or array), else ``""``."""
    depth = 0
    for at, char in _scan(value):
        if at < 0:
            return value if len(char) == 3 else ""
        if char in "[{":
            depth += 1
        elif char in "]}":
            depth -= 1
    return value if depth > 0 else ""


def _equals(line: str) -> int:
    for at, char in _scan(line):
        if char == "=":
            return at
    return -1


def _close_bracket(line: str) -> int:
    for at, char in _scan(line):
        if char == "]":
            return at
    return len(line)


def _keys(text: str) -> list[str]:
    """The parts of a (dotted, possibly quoted) TOML key."""
    keys: list[str] = []
    start = 0
    for at, char in _scan(text + "."):
        if char == ".":
            part = (text + ".")[start:at].strip()
            if part[:1] in ("'", '"'):
                part = tomllib.loads(f"k = {part}")["k"]
            keys.append(part)
            start = at + 1
    return keys


def _inline_keys(value: str) -> list[Path_]:
    """The key paths of the inline table at the start of ``value``, nested ones included."""
    found: list[Path_] = []
    stack: list[Path_] = [()]  # the key path of each open inline table
    key_start = 1
    current: Path_ = ()
    depth_arrays = 0
    chars = list(_scan(value))
    for index, (at, char) in enumerate(chars):
        if at < 0 or index == 0:
            continue
        if depth_arrays:
            depth_arrays += {"[": 1, "]": -1}.get(char, 0)
            continue
        if char == "=":
            current = stack[-1] + tuple(_keys(value[key_start:at]))
            found.append(current)
        elif char == "{":
            stack.append(current)
            key_start = at + 1
        elif char == "[":
            depth_arrays = 1
        elif char == ",":
            key_start = at + 1
        elif char == "}":
            stack.pop()
            if not stack:
                break
            key_start = at + 1
    return found
