"""Hypothesis settings shared by the property-based fuzzers of the byte-level parsers (issue #9).

The fuzzers run in the normal suite with a modest, fixed set of examples: ``derandomize=True`` makes every run
try the same inputs (a CI run never fails on an input the previous run did not try), no example database is
written, and each test takes a few seconds. Hangs are bounded by the socket timeouts and thread joins inside
the tests, not by Hypothesis' per-example deadline (a loaded two-core machine would make that flaky).

A long, randomised run, e.g. before a release or after touching a parser::

    DV_FUZZ_SCALE=200 PYTHONPATH=$PWD/src .venv/bin/pytest -p no:cacheprovider -n 2 \\
        tests/dimse/test_dimse_fuzz.py tests/dicomweb/test_dw_multipart_fuzz.py \\
        tests/services/test_services_header_fuzz.py

``DV_FUZZ_SCALE=N`` multiplies every fuzzer's example count by N and draws fresh random inputs on every run
(add ``--hypothesis-seed=S`` to replay one); a failure prints the minimal input and a ``@reproduce_failure`` blob.
"""

from __future__ import annotations

import os

from hypothesis import HealthCheck, settings

SCALE = max(1, int(os.environ.get("DV_FUZZ_SCALE", "1") or "1"))


def fuzz_settings(examples: int) -> settings:
    """Settings for one fuzz test: ``examples`` in the normal suite, ``examples × DV_FUZZ_SCALE`` on a long run."""
    return settings(
        max_examples=examples * SCALE,
        derandomize=SCALE == 1,
        database=None,
        deadline=None,
        print_blob=True,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much],
    )
