"""Compression at rest from the command line (issue #11 item 4): ``lifecycle plan|run`` with a compress rule,
``tier status`` reporting the space saved, ``verify --originals`` proving every original, in-process."""

from __future__ import annotations

import json
from pathlib import Path

import pydicom

from tests.cli.cli_helpers import Invoke
from tests.helpers import make_ct

CONFIG = """
tier_max_bytes_per_second = 0
[[lifecycle]]
name = "compress CT"
when = {{ modality = "CT" }}
action = {{ compress = "jpeg-ls" }}
"""


def _setup(tmp_path: Path, invoke: Invoke) -> tuple[Path, list[bytes]]:
    config = tmp_path / "dv.toml"
    config.write_text(CONFIG.format(root=tmp_path))
    src = tmp_path / "src"
    src.mkdir()
    objs = [make_ct(study="1.2.3.1", series="1.2.3.1.1", rows=32, columns=32, seed=i) for i in range(3)]
    objs.append(make_ct(study="1.2.3.1", series="1.2.3.1.1", rows=4, columns=4, seed=7))  # too small to compress
    for i, data in enumerate(objs):
        (src / f"{i}.dcm").write_bytes(data)
    result = invoke("import", str(src), "--config", str(config))
    assert result.exit_code == 0, result.output
    return config, objs


def test_cli_compress_rule_status_and_proof(tmp_path: Path, invoke: Invoke) -> None:
    config, objs = _setup(tmp_path, invoke)
    [rule] = json.loads(invoke("lifecycle", "plan", "--config", str(config), "--json").stdout)
    assert (rule["action"], rule["studies"], rule["instances"]) == ("compress (jpeg-ls)", 1, 4)

    run = invoke("lifecycle", "run", "--config", str(config))
    assert run.exit_code == 0, run.output
    assert "1 tier jobs run" in run.output

    status = invoke("tier", "status", "--config", str(config), "--json")
    assert status.exit_code == 0, status.output
    compression = json.loads(status.stdout)["compression"]
    [ct] = compression["by_modality"]
    assert ct["modality"] == "CT" and ct["instances"] == 3
    assert ct["original_bytes"] == sum(len(d) for d in objs[:3]) and ct["saved_bytes"] > 0 and ct["ratio"] > 1
    [left] = compression["left_uncompressed"]
    assert left["objects"] == 1 and "too small" in left["reason"]
    table = invoke("tier", "status", "--config", str(config))
    assert "Compressed at rest" in table.output and "Left uncompressed" in table.output

    proof = invoke("verify", "--originals", "--json", "--config", str(config))
    assert proof.exit_code == 0, proof.output
    assert json.loads(proof.stdout)["originals"] == {"checked": 3, "failed": []}
    assert "3 originals of compressed objects rebuilt bit for bit" in \
        invoke("verify", "--originals", "--config", str(config)).output

    # a compressed blob damaged on disk: the proof names it (and fixity's checksum of the copy would too)
    blobs = [p for p in (tmp_path / "vault").rglob("*") if p.is_file() and p.parent.parent.name == "blobs"]
    compressed = [p for p in blobs if pydicom.dcmread(p, stop_before_pixels=True).file_meta.TransferSyntaxUID
                  == "1.2.840.10008.1.2.4.80"]
    assert len(compressed) == 3
    target = compressed[0]
    data = bytearray(target.read_bytes())
    data[-20] ^= 0x55
    target.chmod(0o644)
    target.write_bytes(bytes(data))
    broken = invoke("verify", "--originals", "--json", "--config", str(config))
    assert broken.exit_code == 1
    doc = json.loads(broken.stdout)
    assert len(doc["originals"]["failed"]) == 1 and doc["originals"]["checked"] == 3
