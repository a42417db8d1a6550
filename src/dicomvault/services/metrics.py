"""Prometheus metrics of the archive's background safety work (``/metrics``; an operator's Grafana draws them).

Why here and only these for now: fixity and tier moves run unattended, and their one alarming outcome — an object
with no intact copy left — must be visible without reading logs or reports (issue #11: "data loss, loudly: log at
ERROR, a metric, the report"). The storage dashboard (issue #13) adds the rest. Metrics live in the process that
does the work: the serving process runs the job worker, so its ``/metrics`` is the one to scrape; ``dicomvault
verify`` run from a shell updates its own process's values only.
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge

FIXITY_DATA_LOSS = Gauge(
    "dicomvault_fixity_data_loss_blobs", "Blobs with no intact copy on any store at the last fixity check.")
FIXITY_DAMAGED = Gauge(
    "dicomvault_fixity_damaged_copies", "Missing or corrupt copies found by the last fixity check, per store.",
    ["store"])
FIXITY_LAST_CHECK = Gauge(
    "dicomvault_fixity_last_check_timestamp_seconds", "When the last fixity check finished (Unix time).")
FIXITY_CHECKED_BYTES = Counter("dicomvault_fixity_checked_bytes", "Bytes re-read and hashed by fixity checks.")
FIXITY_REPAIRED = Counter(
    "dicomvault_fixity_repaired_copies", "Copies rewritten from an intact copy on another store.")
TIER_COPIED_BYTES = Counter("dicomvault_tier_copied_bytes", "Bytes copied between stores by tier work, verified.")
TIER_DROPPED_COPIES = Counter("dicomvault_tier_dropped_copies", "Copies removed by tier moves (never a last copy).")
COMPRESSED_INPUT_BYTES = Counter("dicomvault_compression_input_bytes",
                                 "Bytes of native objects compressed losslessly at rest (as received).")
COMPRESSED_OUTPUT_BYTES = Counter("dicomvault_compression_output_bytes",
                                  "Bytes those objects take compressed (their blobs now).")
COMPRESSION_SKIPPED = Counter("dicomvault_compression_skipped", "Objects a compress rule left as they are.")
