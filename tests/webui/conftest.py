"""Viewer tests decide themselves where the viewer build is: the archive's own settings point at no build, so an
app factory that mounts the viewer from settings cannot serve the developer's checkout build behind their back."""

from __future__ import annotations

from pathlib import Path

import pytest

from dicomvault.settings import Settings


@pytest.fixture
def settings(settings: Settings, tmp_path: Path) -> Settings:
    return settings.model_copy(update={"viewer_dir": tmp_path / "no-viewer-build"})
