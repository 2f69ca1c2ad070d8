"""Every Prometheus metric of the extractors: one process's :class:`Metrics`, and the sinks' metrics.

:class:`Metrics` holds the runner's and the writer's metrics (``cryptolake_extractor_*``) on a
registry of its own (the CLI passes the default one); :meth:`Metrics.serve` serves that registry
over HTTP (port 0: not served). Batch sizes, sink write latency and spool depth, as the writer
sees each sink, are here and nowhere else.

The sinks' own metrics (``cryptolake_sink_*``, ``cryptolake_landing_*``, ``cryptolake_spool_*``:
failed writes where they happen, batch bytes, landing files, the spool's counters) are module
constants at the bottom, on the default registry, labelled with ``sink`` (the sink's ``name``:
``landing``, ``kafka``) so one dashboard shows each destination.
"""

from __future__ import annotations

import logging
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

logger = logging.getLogger(__name__)

_SIZE_BUCKETS = (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000)
_LATENCY_BUCKETS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)


class LocalCounts:
    """Per-frame counter increments, kept in a plain dict and added to Prometheus in one go.

    A labelled ``Counter.inc`` takes a lock (and ``labels()`` a lookup): per frame that was
    6.5 % of the extractor's CPU. Hot paths call :meth:`inc` with a cached child instead; the
    runner flushes per written batch and every 0.25 s, :meth:`Metrics.value` before each read.
    Single-threaded (the event loop's).
    """

    __slots__ = ("_counts",)

    def __init__(self) -> None:
        self._counts: dict[Any, int] = {}

    def inc(self, child: Any, n: int = 1) -> None:
        counts = self._counts
        counts[child] = counts.get(child, 0) + n

    def flush(self) -> None:
        counts, self._counts = self._counts, {}
        for child, n in counts.items():
            child.inc(n)


class Metrics:
    """Every metric the extractors export. A fresh instance has a fresh registry (tests make many).

    ``local`` buffers the per-frame counters (frames, envelopes): see :class:`LocalCounts`.
    """

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.local = LocalCounts()
        self.registry = registry or CollectorRegistry()
        r = self.registry
        p = "cryptolake_extractor_"
        self.frames = Counter(
            p + "frames_total",
            "Websocket frames received, by kind (data/control/ack/error/deadletter)",
            ["exchange", "channel", "kind"],
            registry=r,
        )
        self.envelopes = Counter(
            p + "envelopes_total",
            "Envelopes handed to the batcher",
            ["exchange", "channel", "source"],
            registry=r,
        )
        self.deadletters = Counter(
            p + "deadletters_total", "Bad frames landed as dead letters", ["exchange", "reason"], registry=r
        )
        self.reconnects = Counter(
            p + "reconnects_total", "Websocket reconnects", ["exchange", "reason"], registry=r
        )
        self.connections = Gauge(p + "connections", "Open websocket connections", ["exchange"], registry=r)
        self.duplicates = Counter(
            p + "duplicate_trades_total",
            "Trades whose id was already seen (landed anyway)",
            ["exchange"],
            registry=r,
        )
        self.gaps_detected = Counter(
            p + "gaps_detected_total",
            "Gap fills started (id jump, reconnect, bad frame)",
            ["exchange", "reason"],
            registry=r,
        )
        self.gaps_filled = Counter(p + "gaps_filled_total", "Gap fills completed", ["exchange"], registry=r)
        self.gap_trades = Counter(
            p + "gap_fill_trades_total", "Trades returned by REST gap fills", ["exchange"], registry=r
        )
        self.gaps_unrecoverable = Counter(
            p + "gaps_unrecoverable_total",
            "Gaps the exchange's REST could not return (recorded in channel gaps)",
            ["exchange"],
            registry=r,
        )
        self.subscribe_rejected = Counter(
            p + "subscriptions_rejected_total",
            "Subscribe requests the exchange rejected (the subscription is retried with backoff)",
            ["exchange"],
            registry=r,
        )
        self.state_errors = Counter(
            p + "state_write_errors_total",
            "Failed writes of the resume state file (retried at the next interval)",
            ["exchange"],
            registry=r,
        )
        self.rest_requests = Counter(
            p + "rest_requests_total",
            "REST requests by HTTP status (0: no response)",
            ["exchange", "status"],
            registry=r,
        )
        self.rest_throttled = Counter(
            p + "rest_throttled_total",
            "REST 429/418 answers honoured with Retry-After",
            ["exchange"],
            registry=r,
        )
        self.markets = Gauge(p + "markets", "Markets subscribed", ["exchange"], registry=r)
        self.stale_markets = Gauge(
            p + "stale_markets",
            "Subscribed markets without data for market_quiet_after_s",
            ["exchange"],
            registry=r,
        )
        self.delisted = Counter(
            p + "markets_dropped_total",
            "Markets dropped after rediscovery (delisted/halted)",
            ["exchange"],
            registry=r,
        )
        self.listed = Counter(
            p + "markets_added_total",
            "Markets added after rediscovery (new listings)",
            ["exchange"],
            registry=r,
        )
        self.last_frame_age = Gauge(
            p + "last_frame_age_seconds",
            "Seconds since the last frame, per connection",
            ["exchange", "connection"],
            registry=r,
        )
        self.batch_size = Histogram(
            p + "batch_envelopes",
            "Envelopes per flushed batch",
            ["exchange", "channel"],
            buckets=_SIZE_BUCKETS,
            registry=r,
        )
        self.sink_latency = Histogram(
            p + "sink_write_seconds",
            "Time for a sink to make one write call durable (a group of up to 64 batches; "
            "successful calls only)",
            ["sink"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.spool_depth = Gauge(
            p + "spool_depth", "Batches waiting in a sink's disk spool", ["sink"], registry=r
        )
        self.write_queue = Gauge(
            p + "write_queue_batches", "Batches waiting to be written to the sinks", registry=r
        )

    def serve(self, port: int, host: str = "0.0.0.0") -> None:
        """Expose ``/metrics`` on ``host:port``; port 0 disables it."""
        if port:
            start_http_server(port, addr=host, registry=self.registry)
            logger.info("metrics on http://%s:%d/metrics", host, port)

    def value(self, name: str, **labels: str) -> float:
        """A sample's current value (tests and the benchmark read metrics through this)."""
        self.local.flush()
        found = self.registry.get_sample_value(name, labels)
        return 0.0 if found is None else found


# --- the sinks' metrics (default registry) ---------------------------------------------------------

BATCH_BYTES = Histogram(
    "cryptolake_sink_batch_bytes",
    "Uncompressed JSON-lines bytes per batch handed to a sink.",
    ["sink"],
    buckets=(256, 1024, 4096, 16384, 65536, 262144, 1048576, 4194304, 16777216),
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
