"""Prometheus metrics of the sinks and the spool, on the default registry.

Every metric is labelled with ``sink`` (the sink's ``name``: ``landing``, ``kafka``) so one
dashboard shows each destination. Exposed by whatever HTTP endpoint the extractor process starts
(``prometheus_client.start_http_server``); nothing here starts a server.
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

BATCH_ENVELOPES = Histogram(
    "cryptolake_sink_batch_envelopes",
    "Envelopes per batch handed to a sink.",
    ["sink"],
    buckets=(1, 2, 5, 10, 20, 50, 100, 200, 500, 1000),
)
BATCH_BYTES = Histogram(
    "cryptolake_sink_batch_bytes",
    "Uncompressed JSON-lines bytes per batch handed to a sink.",
    ["sink"],
    buckets=(256, 1024, 4096, 16384, 65536, 262144, 1048576, 4194304, 16777216),
)
WRITE_SECONDS = Histogram(
    "cryptolake_sink_write_seconds",
    "Time until a sink reported a batch durable (successful writes only).",
    ["sink"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
)
WRITE_ERRORS = Counter(
    "cryptolake_sink_write_errors_total",
    "Failed sink writes, by whether the failure is retryable.",
    ["sink", "retryable"],
)
LANDING_FILES = Counter(
    "cryptolake_landing_files_total",
    "Landing-zone files finished (renamed into place or uploaded).",
    ["sink"],
)
LANDING_FINISH_ERRORS = Counter(
    "cryptolake_landing_finish_errors_total",
    "Failed attempts to finish a landing file (upload/rename); the part stays staged and is retried.",
    ["sink"],
)
SPOOL_DEPTH = Gauge(
    "cryptolake_spool_depth_batches",
    "Batches waiting in the disk spool for their sink to come back.",
    ["sink"],
)
SPOOL_BYTES = Gauge(
    "cryptolake_spool_bytes",
    "Bytes of batches waiting in the disk spool.",
    ["sink"],
)
SPOOLED = Counter(
    "cryptolake_spool_spooled_total",
    "Batches written to the disk spool because the sink failed or had a backlog.",
    ["sink"],
)
REPLAYED = Counter(
    "cryptolake_spool_replayed_total",
    "Batches replayed from the disk spool into their sink.",
    ["sink"],
)
SPOOL_REJECTED = Counter(
    "cryptolake_spool_rejected_total",
    "Batches refused because the spool was full or the sink failed permanently (raised to the caller).",
    ["sink", "reason"],
)
SPOOL_CORRUPT = Counter(
    "cryptolake_spool_corrupt_total",
    "Corrupt spool records (bad checksum, undecodable batch) moved to the spool's corrupt/ folder.",
    ["sink"],
)
