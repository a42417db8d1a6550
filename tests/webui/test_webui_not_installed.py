"""The page at / without a viewer build (served through mount_viewer: see test_webui_viewer.py)."""

from __future__ import annotations

from pathlib import Path

from dicomvault.webui.not_installed import not_installed_html


def test_page_says_what_to_run_and_links_the_rest(tmp_path: Path) -> None:
    page = not_installed_html(tmp_path / "<odd & folder>")
    assert "Viewer not installed: run <code>make viewer</code>" in page
    assert "&lt;odd &amp; folder&gt;" in page and "<odd" not in page
    for link in ('href="/ui/"', 'href="/dicom-web/studies"', 'href="/openapi.json"', 'href="/healthz"'):
        assert link in page
    assert "http://" not in page and "https://" not in page  # nothing from outside the archive
