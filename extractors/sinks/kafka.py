"""Kafka sink: one record per batch on ``raw.<exchange>.<channel>``, acknowledged by all replicas.

Record layout: value = :meth:`Batch.to_jsonl` (UTF-8 JSON lines, exactly as landed in files),
key = :attr:`Batch.key` (the native symbol, or the channel for batches that are not per symbol, so
one symbol stays in one partition and in order), headers ``batch_id``, ``exchange``, ``channel``.
The topic is ``<topic_prefix>raw.<exchange>.<channel>``.

``write`` sends with kafka-python (``acks=all``, idempotent, one request in flight, bounded
retries inside ``delivery_timeout_s``) and returns only when the broker acknowledged the record;
otherwise it raises :class:`SinkError`, retryable for network/timeouts/broker-side transient errors
(so the spool takes over during a broker outage), non-retryable for e.g. a record too large or an
authorization failure. After a retryable failure the producer is dropped and a fresh one connects
on the next write (a clean producer id and sequence after an outage). The producer is created
lazily, so the extractor starts while Kafka is down.

kafka-python is synchronous: sends and waits run in a worker thread.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from dataclasses import dataclass
from typing import Any, Literal

from extractors import metrics
from extractors.envelope import Batch
from extractors.sinks.base import SinkError

logger = logging.getLogger(__name__)

Compression = Literal["gzip", "lz4", "zstd", "snappy", "none"]

#: Kafka's default ``message.max.bytes`` (broker) and ``max.message.bytes`` (topic): the largest
#: record batch the broker accepts, compressed. A bigger one fails with ``MessageSizeTooLarge``,
#: which no retry fixes, so batches are kept below it (:func:`max_batch_bytes`).
BROKER_MESSAGE_MAX_BYTES = 1_048_588
#: Room kept under the limit for the record's key, headers and record/batch framing.
RECORD_HEADROOM_BYTES = 64 * 1024


@dataclass(frozen=True, slots=True, kw_only=True)
class KafkaSettings:
    """The Kafka sink (config section ``kafka:``).

    ``bootstrap_servers``: ``host:port`` list. ``topic_prefix``: prepended to ``raw.<ex>.<ch>``
    (empty in production; tests use it for unique topics). ``acks``: ``all`` (durable; the
    default) or ``1`` (leader only, disables idempotence). ``compression``: ``gzip`` always works;
    ``lz4``/``zstd``/``snappy`` need their Python packages. ``retries``: producer retries within
    ``delivery_timeout_s``, the bound after which a write fails (and the spool takes over).
    ``request_timeout_s``: one produce request; also bounds connecting at startup.
    ``linger_ms``: producer batching delay. ``max_request_bytes``: client-side limit of one record
    (uncompressed); the broker's ``message.max.bytes`` (1 MB by default) limits it compressed. The
    extractor's batches stay below both (:func:`max_batch_bytes`), so no record is too large.
    ``close_timeout_s``: time given to in-flight records on shutdown.
    """

    bootstrap_servers: tuple[str, ...] = ("127.0.0.1:9092",)
    topic_prefix: str = ""
    client_id: str = "cryptolake-extractor"
    acks: Literal["all", "1"] = "all"
    compression: Compression = "gzip"
    retries: int = 5
    delivery_timeout_s: float = 8.0
    request_timeout_s: float = 3.0
    linger_ms: int = 5
    max_request_bytes: int = 16 * 1024 * 1024
    close_timeout_s: float = 2.0

    def __post_init__(self) -> None:
        if not self.bootstrap_servers:
            raise ValueError("kafka.bootstrap_servers must name at least one broker")
        if self.delivery_timeout_s < self.request_timeout_s + self.linger_ms / 1000:
            raise ValueError("kafka.delivery_timeout_s must be >= request_timeout_s + linger_ms")


#: The name used in the issue; same class.
KafkaSinkSettings = KafkaSettings


def max_batch_bytes(settings: KafkaSettings) -> int:
    """The largest batch (uncompressed JSON lines, :meth:`Batch.to_jsonl`) one record may carry.

    Below both limits a record meets: the producer's ``max_request_bytes`` (checked on the
    uncompressed record) and the broker's :data:`BROKER_MESSAGE_MAX_BYTES` (checked compressed,
    so bounding the uncompressed size is conservative), minus :data:`RECORD_HEADROOM_BYTES`.
    """
    limit = min(settings.max_request_bytes, BROKER_MESSAGE_MAX_BYTES)
    return max(limit - RECORD_HEADROOM_BYTES, limit // 2)


#: The batch bound for the default Kafka settings: 1 MiB + 12 bytes minus 64 KiB (983,052 bytes).
DEFAULT_MAX_BATCH_BYTES = max_batch_bytes(KafkaSettings())


def is_retryable_kafka_error(exc: BaseException) -> bool:
    """Whether a later attempt can succeed: kafka-python's ``retriable`` flag, timeouts, I/O."""
    from kafka.errors import KafkaError

    if isinstance(exc, KafkaError):
        return bool(exc.retriable)
    return isinstance(exc, OSError | TimeoutError)


class KafkaSink:
    """The Kafka :class:`~extractors.sinks.base.Sink` (see the module docstring)."""

    name: str

    def __init__(self, settings: KafkaSettings, *, name: str = "kafka") -> None:
        self.name = name
        self._settings = settings
        self._producer: Any | None = None
        self._producer_lock = threading.Lock()
        self._closed = False

    @property
    def max_batch_bytes(self) -> int:
        """The batch bound this sink needs (:func:`max_batch_bytes` of its settings)."""
        return max_batch_bytes(self._settings)

    def topic(self, batch: Batch) -> str:
        return self._settings.topic_prefix + batch.topic

    async def write(self, batch: Batch) -> None:
        """Send ``batch`` as one record and wait for ``acks``; raises :class:`SinkError`."""
        if self._closed:
            raise SinkError(f"{self.name}: sink is closed", retryable=False)
        value = batch.to_jsonl()
        try:
            await asyncio.to_thread(self._send, batch, value)
        except Exception as exc:
            retryable = is_retryable_kafka_error(exc)
            metrics.WRITE_ERRORS.labels(self.name, str(retryable).lower()).inc()
            if retryable:
                await asyncio.to_thread(self._drop_producer)
            raise SinkError(
                f"{self.name}: batch {batch.batch_id} to {self.topic(batch)} failed: {exc}",
                retryable=retryable,
            ) from exc
        metrics.BATCH_BYTES.labels(self.name).observe(len(value))

    async def close(self, *, deadline: float | None = None) -> None:
        """Close the producer, giving in-flight records ``close_timeout_s`` but never past
        ``deadline`` (``time.monotonic()`` seconds). Every ``write`` that returned was already
        acknowledged, so a short close loses nothing that was reported durable."""
        if self._closed:
            return
        self._closed = True
        timeout = self._settings.close_timeout_s
        if deadline is not None:
            timeout = max(0.0, min(timeout, deadline - time.monotonic()))
        await asyncio.to_thread(self._drop_producer, timeout)

    # --- blocking work (worker threads) ---------------------------------------------------

    def _send(self, batch: Batch, value: bytes) -> None:
        producer = self._ensure_producer()
        future = producer.send(
            self.topic(batch),
            value=value,
            key=batch.key.encode(),
            headers=[
                ("batch_id", batch.batch_id.encode()),
                ("exchange", batch.exchange.encode()),
                ("channel", batch.channel.encode()),
            ],
        )
        # The producer fails the record itself after delivery_timeout_s; the margin only guards
        # against a hang in the client.
        future.get(timeout=self._settings.delivery_timeout_s + 2 * self._settings.request_timeout_s)

    def _ensure_producer(self) -> Any:
        with self._producer_lock:
            if self._producer is None:
                from kafka import KafkaProducer

                s = self._settings
                request_ms = int(s.request_timeout_s * 1000)
                self._producer = KafkaProducer(
                    bootstrap_servers=list(s.bootstrap_servers),
                    client_id=s.client_id,
                    acks="all" if s.acks == "all" else 1,
                    enable_idempotence=s.acks == "all",
                    compression_type=None if s.compression == "none" else s.compression,
                    retries=s.retries,
                    max_in_flight_requests_per_connection=1,
                    linger_ms=s.linger_ms,
                    request_timeout_ms=request_ms,
                    delivery_timeout_ms=int(s.delivery_timeout_s * 1000),
                    max_block_ms=int(s.delivery_timeout_s * 1000),
                    bootstrap_timeout_ms=request_ms,
                    max_request_size=s.max_request_bytes,
                    reconnect_backoff_max_ms=1000,
                )
                logger.info("%s: connected a producer to %s", self.name, ",".join(s.bootstrap_servers))
            return self._producer

    def _drop_producer(self, timeout: float = 0.0) -> None:
        with self._producer_lock:
            producer, self._producer = self._producer, None
        if producer is not None:
            try:
                producer.close(timeout=timeout)
            except Exception:
                logger.warning("%s: closing the Kafka producer failed", self.name, exc_info=True)
