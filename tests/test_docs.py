"""Documentation that must stay true: every setting appears in README's configuration table."""

from __future__ import annotations

from pathlib import Path

from dicomvault.settings import Settings

ROOT = Path(__file__).resolve().parent.parent


def test_readme_documents_every_setting() -> None:
    readme = (ROOT / "README.md").read_text()
    missing = [name for name in Settings.model_fields if f"`{name}`" not in readme]
    assert not missing, f"README configuration table lacks {missing}: run scripts/settings_table.py"


def test_readme_quick_start_is_the_two_make_commands() -> None:
    readme = (ROOT / "README.md").read_text()
    assert "make serve" in readme and "make test" in readme
