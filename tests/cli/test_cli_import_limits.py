"""``dicomvault import`` goes through the same bounded ingest (issue #9 defects 3 and 10): a deflate bomb and an
object with short pixel data are rejected with their reasons, memory stays flat, a legitimate deflated object is
stored."""

from __future__ import annotations

from pathlib import Path

from tests.cli.cli_helpers import Invoke
from tests.cli.test_cli_import import counts
from tests.helpers import deflate_bomb, deflated, make_ct, peak_rss_growth, short_mr

MB = 1 << 20


def test_import_rejects_bomb_and_short_pixel_data_with_reasons(invoke: Invoke, tmp_path: Path) -> None:
    folder = tmp_path / "in"
    folder.mkdir()
    (folder / "bomb.dcm").write_bytes(deflate_bomb(256 * MB))
    (folder / "short.dcm").write_bytes(short_mr())
    (folder / "good.dcm").write_bytes(deflated(make_ct(rows=64, columns=64)))
    with peak_rss_growth() as rss:
        result = invoke("import", str(folder), "--workers", "2")
    c = counts(result.output)
    assert (c["stored"], c["rejected"], c["failed"]) == (1, 2, 0), result.output
    assert "max_inflate_ratio" in result.output
    assert "pixel data holds 50000 of the 131072 bytes" in result.output
    assert result.exit_code == 1
    assert rss.growth < 150 * MB, f"memory grew by {rss.growth / MB:.0f} MB"
