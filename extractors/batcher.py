"""Group envelopes into batches per (exchange, channel[, symbol]), flushed by size or by age.

Size is bounded twice: ``max_envelopes`` envelopes and ``max_bytes`` bytes of JSON lines (the
exact length of :meth:`Batch.to_jsonl`). The byte bound keeps one batch inside one Kafka record:
its default, :data:`extractors.sinks.kafka.DEFAULT_MAX_BATCH_BYTES`, sits below the broker's
default ``message.max.bytes``; a record too large is a fatal error, not one that retries fix. An
envelope that alone exceeds ``max_bytes`` is flushed alone (an envelope is never split).

``add`` is synchronous and cheap (it runs once per frame and serializes the envelope, once, so
the byte bound is exact); a full buffer is flushed at once, and :meth:`Batcher.run` flushes
buffers older than ``max_age_s``. Flushed batches go to ``on_batch`` (the runner's writer queue).
Envelopes of one key keep their arrival order, and batch ids increase within a process run, so a
replay can be recognised downstream.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from extractors.envelope import Batch, Envelope
from extractors.sinks.kafka import DEFAULT_MAX_BATCH_BYTES

logger = logging.getLogger(__name__)

BatchKey = tuple[str, str, str]


def envelope_nbytes(envelope: Envelope) -> int:
    """``len(envelope.to_json().encode()) + 1``: the size of its line in :meth:`Batch.to_jsonl`."""
    return len(envelope.to_json_bytes()) + 1


@dataclass(slots=True)
class _Buffer:
    started: float
    envelopes: list[Envelope] = field(default_factory=list)
    #: Each envelope's JSON line (newline included), built once here: its exact size bounds
    #: the batch, and the sinks write these bytes (``Batch.lines``).
    lines: list[bytes] = field(default_factory=list)
    nbytes: int = 0


class Batcher:
    def __init__(
        self,
        *,
        max_envelopes: int,
        max_age_s: float,
        on_batch: Callable[[Batch], None],
        max_bytes: int = DEFAULT_MAX_BATCH_BYTES,
        per_symbol_channels: Mapping[str, frozenset[str]] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if max_envelopes < 1 or max_age_s <= 0 or max_bytes < 1:
            raise ValueError("batch size must be >= 1 envelope and >= 1 byte, and age > 0")
        self.max_envelopes = max_envelopes
        self.max_bytes = max_bytes
        self.max_age_s = max_age_s
        self._on_batch = on_batch
        self._per_symbol = dict(per_symbol_channels or {})
        self._clock = clock
        self._buffers: dict[BatchKey, _Buffer] = {}
        self._run_id = f"{time.time_ns():x}"
        self._counter = 0

    def key(self, envelope: Envelope) -> BatchKey:
        per_symbol = envelope.channel in self._per_symbol.get(envelope.exchange, frozenset())
        if per_symbol and envelope.native_symbol:
            return (envelope.exchange, envelope.channel, envelope.native_symbol)
        return (envelope.exchange, envelope.channel, envelope.channel)

    def add(self, envelope: Envelope) -> None:
        key = self.key(envelope)
        line = envelope.to_json_bytes() + b"\n"
        size = len(line)
        buffer = self._buffers.get(key)
        if buffer is not None and buffer.nbytes + size > self.max_bytes:
            self._flush(key)  # this envelope would take the batch past max_bytes
            buffer = None
        if buffer is None:
            buffer = self._buffers[key] = _Buffer(self._clock())
        buffer.envelopes.append(envelope)
        buffer.lines.append(line)
        buffer.nbytes += size
        if size > self.max_bytes:
            logger.warning(
                "one %s %s envelope is %d bytes, more than batch max_bytes=%d; flushed alone",
                envelope.exchange,
                envelope.channel,
                size,
                self.max_bytes,
                extra={"exchange": envelope.exchange},
            )
        if len(buffer.envelopes) >= self.max_envelopes or buffer.nbytes >= self.max_bytes:
            self._flush(key)

    def _flush(self, key: BatchKey) -> None:
        buffer = self._buffers.pop(key, None)
        if buffer is None or not buffer.envelopes:
            return
        self._counter += 1
        exchange, _channel, batch_key = key
        self._on_batch(
            Batch(
                exchange=exchange,
                channel=buffer.envelopes[0].channel,
                key=batch_key,
                batch_id=f"{self._run_id}-{self._counter:012d}",
                envelopes=tuple(buffer.envelopes),
                lines=tuple(buffer.lines),
            )
        )

    def flush_due(self) -> int:
        """Flush every buffer at least ``max_age_s`` old; returns how many were flushed."""
        deadline = self._clock() - self.max_age_s
        due = [k for k, b in self._buffers.items() if b.started <= deadline]
        for key in due:
            self._flush(key)
        return len(due)

    def flush_all(self) -> None:
        for key in list(self._buffers):
            self._flush(key)

    @property
    def buffered(self) -> int:
        return sum(len(b.envelopes) for b in self._buffers.values())

    async def run(self, stop: asyncio.Event) -> None:
        """Age-based flushing until ``stop`` is set; the caller flushes the rest with ``flush_all``."""
        tick = min(self.max_age_s / 4, 0.25)
        while not stop.is_set():
            self.flush_due()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), tick)
