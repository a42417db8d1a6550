"""The page at / without a viewer build (served through mount_viewer: see test_webui_viewer.py)."""

from __future__ import annotations

from dicomvault.webui.not_installed import not_installed_html


def test_page_says_what_to_run_and_links_the_rest() -> None:
    page = not_installed_html()
    assert "Viewer not installed: run <code>make viewer</code>" in page
    assert "viewer_dir" in page
    for link in ('href="/ui/"', 'href="/dicom-web/studies"', 'href="/openapi.json"', 'href="/healthz"'):
        assert link in page
    assert "http://" not in page and "https://" not in page  # nothing from outside the archive
