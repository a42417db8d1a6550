"""Print the configuration table for README.md from the Settings model (one source of truth).

    .venv/bin/python scripts/settings_table.py           # print the table
    .venv/bin/python scripts/settings_table.py --write   # replace the table between README's settings-table markers

A setting whose values are tables (``stores: dict[str, StoreConfig]``, ``lifecycle: list[LifecycleRule]``,
``dimse_peers``) is followed by one row per key of those tables (``stores.<name>.url``, ``lifecycle[].when.modality``),
nested tables included; those keys have no environment variable of their own (the setting's variable takes JSON).
"""

from __future__ import annotations

import inspect
import re
import sys
from pathlib import Path
from typing import Any, get_args

from pydantic import BaseModel
from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined

from dicomvault.settings import Settings

README = Path(__file__).resolve().parent.parent / "README.md"
START = "<!-- settings-table:start"
END = "<!-- settings-table:end -->"


def table() -> str:
    lines = ["| setting | environment variable | default | meaning |", "|---|---|---|---|"]
    for name, field in Settings.model_fields.items():
        lines.append(f"| `{name}` | `DICOMVAULT_{name.upper()}` | `{_default(field)}` | {_text(field.description)} |")
        lines.extend(_nested_rows(name, field.annotation))
    return "\n".join(lines)


def _default(field: FieldInfo) -> str:
    if field.default_factory is not None:
        default = field.default_factory()  # type: ignore[call-arg]
    elif field.default is PydanticUndefined:
        return "required"
    else:
        default = field.default
    if hasattr(default, "value"):
        default = default.value
    return "" if default is None else str(default)


def _nested_rows(prefix: str, annotation: Any) -> list[str]:
    """Rows for the keys of the tables a setting (or a key of one) holds: a model, or a dict or list of models."""
    model, prefix = _table_model(prefix, annotation)
    if model is None:
        return []
    rows = []
    for name, field in model.model_fields.items():
        path = f"{prefix}.{name}"
        meaning = field.description or _summary(_table_model(path, field.annotation)[0])
        rows.append(f"| `{path}` | | `{_default(field)}` | {_text(meaning)} |")
        rows.extend(_nested_rows(path, field.annotation))
    return rows


def _table_model(prefix: str, annotation: Any) -> tuple[type[BaseModel] | None, str]:
    """The model a value of type ``annotation`` is made of, and the path its keys are shown under."""
    if _is_model(annotation):
        return annotation, prefix
    args = [a for a in get_args(annotation) if a is not type(None)]
    if args and _is_model(args[-1]):
        origin = getattr(annotation, "__origin__", None)
        if origin is dict:
            return args[-1], f"{prefix}.<name>"
        if origin is list:
            return args[-1], f"{prefix}[]"
    return None, prefix


def _text(description: str | None) -> str:
    """A description as Markdown table text: ``<name>`` is no HTML tag, reStructuredText ````code```` is `code`."""
    return (description or "").replace("``", "`").replace("<", "&lt;").replace("|", "\\|")


def _is_model(annotation: Any) -> bool:
    return inspect.isclass(annotation) and issubclass(annotation, BaseModel)


def _summary(model: type[BaseModel] | None) -> str:
    doc = inspect.getdoc(model) if model is not None else None
    return doc.split("\n\n")[0].replace("\n", " ") if doc else ""


def write(readme: Path = README) -> None:
    text = readme.read_text()
    pattern = re.compile(rf"({re.escape(START)}[^\n]*\n).*?(\n{re.escape(END)})", re.S)
    if not pattern.search(text):
        raise SystemExit(f"{readme}: settings-table markers not found")
    readme.write_text(pattern.sub(lambda m: m.group(1) + table() + m.group(2), text, count=1))


if __name__ == "__main__":
    if sys.argv[1:] == ["--write"]:
        write()
    else:
        print(table())
