"""The serving process's allocator tuning is accepted by glibc (the test machines run glibc)."""

from __future__ import annotations

import subprocess
import sys


def test_tune_allocator_is_accepted_by_glibc() -> None:
    # In a child process: the thresholds are process-wide and the test process should keep glibc's defaults.
    code = "from dicomvault.cli.allocator import tune_allocator; print(tune_allocator())"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "True"
