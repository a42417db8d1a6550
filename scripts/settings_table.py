"""Print the configuration table for README.md from the Settings model (one source of truth).

    .venv/bin/python scripts/settings_table.py
"""

from __future__ import annotations

from dicomvault.settings import Settings


def table() -> str:
    lines = ["| setting | environment variable | default | meaning |", "|---|---|---|---|"]
    for name, field in Settings.model_fields.items():
        default = field.default_factory() if field.default_factory is not None else field.default  # type: ignore[call-arg]
        if hasattr(default, "value"):
            default = default.value
        shown = "" if default is None else str(default)
        lines.append(f"| `{name}` | `DICOMVAULT_{name.upper()}` | `{shown}` | {field.description or ''} |")
    return "\n".join(lines)


if __name__ == "__main__":
    print(table())
