"""The writer: flushed batches to every sink, group-committed, with back-pressure and bounded retries.

The batcher hands each flushed batch to :meth:`Writer.put` (on the event loop, no I/O); the
writer's task takes up to :data:`GROUP_BATCHES` queued batches at a time and hands them to every
sink in one call (a group commit). A batch is durable once every sink's call has returned: then
``on_durable`` lets the runners' resume points advance. While ``max_pending`` batches are queued
or being written, :attr:`Writer.room` is clear and the websocket readers pause (back-pressure).
A sink that keeps failing beyond ``retry_s``, or fails unretryably, raises :class:`FatalError`.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence

from extractors.backoff import Backoff, FatalError
from extractors.envelope import Batch
from extractors.metrics import Metrics
from extractors.sinks.base import Sink, SinkError, write_all

logger = logging.getLogger(__name__)

#: The writer hands at most this many queued batches to a sink in one call (a group commit).
GROUP_BATCHES = 64


class Writer:
    """Writes flushed batches to every sink, in order, retrying a failing sink within a bound."""

    def __init__(
        self,
        sinks: Sequence[Sink],
        *,
        retry_s: float,
        max_pending: int,
        metrics: Metrics,
        on_durable: Callable[[Batch], None] = lambda batch: None,
    ) -> None:
        self.sinks = list(sinks)
        #: Called once every sink's ``write`` of a batch has returned (the batch is durable).
        self._on_durable = on_durable
        self.queue: asyncio.Queue[Batch | None] = asyncio.Queue()
        #: Set while fewer than ``max_pending`` batches wait or are being written; readers
        #: pause while it is clear.
        self.room = asyncio.Event()
        self.room.set()
        self._max_pending = max_pending
        #: Batches taken from the queue and being written (one group).
        self._in_flight = 0
        self._retry_s = retry_s
        self.m = metrics

    @property
    def pending(self) -> int:
        """Batches not yet durable: queued plus the group being written (what memory holds)."""
        return self.queue.qsize() + self._in_flight

    def abandon(self) -> tuple[int, int]:
        """Empty the queue (shutdown's budget is spent); returns (batches, envelopes) dropped
        from memory. Their trades are not durable, so the resume points stay below them."""
        batches = envelopes = 0
        while not self.queue.empty():
            batch = self.queue.get_nowait()
            if batch is not None:
                batches += 1
                envelopes += len(batch.envelopes)
        self.m.write_queue.set(0)
        return batches, envelopes

    def put(self, batch: Batch) -> None:
        self.m.local.flush()  # the per-frame counters, once per batch
        self.m.batch_size.labels(batch.exchange, batch.channel).observe(len(batch.envelopes))
        self.queue.put_nowait(batch)
        self.m.write_queue.set(self.queue.qsize())
        if self.pending >= self._max_pending:
            self.room.clear()

    async def run(self) -> None:
        """Write queued batches until the ``None`` sentinel: up to :data:`GROUP_BATCHES` at a
        time, as one group commit per sink (one thread hop and one fsync per landing part for
        the group, instead of one per batch), in order; each is durable when the call returns."""
        while True:
            first = await self.queue.get()
            group: list[Batch] = []
            done = first is None
            if first is not None:
                group.append(first)
            limit = min(GROUP_BATCHES, self._max_pending)
            while not done and len(group) < limit and not self.queue.empty():
                more = self.queue.get_nowait()
                if more is None:
                    done = True
                else:
                    group.append(more)
            self.m.write_queue.set(self.queue.qsize())
            self._in_flight = len(group)
            if group:
                try:
                    await asyncio.gather(*(self._write(sink, group) for sink in self.sinks))
                finally:
                    self._in_flight = 0
                for batch in group:
                    self._on_durable(batch)
            if self.pending < self._max_pending:
                self.room.set()
            if done:
                return

    async def _write(self, sink: Sink, group: Sequence[Batch]) -> None:
        backoff = Backoff(initial=0.1, cap=5.0)
        deadline = time.monotonic() + self._retry_s
        while True:
            started = time.monotonic()
            try:
                await write_all(sink, group)
            except SinkError as exc:
                delay = next(backoff)
                if not exc.retryable or time.monotonic() + delay > deadline:
                    ids = (
                        f"{group[0].batch_id}..{group[-1].batch_id}" if len(group) > 1 else group[0].batch_id
                    )
                    raise FatalError(f"sink {sink.name} failed for batch {ids}: {exc}") from exc
                logger.warning("sink %s failed (%s); retry in %.2fs", sink.name, exc, delay)
                await asyncio.sleep(delay)
                continue
            self.m.sink_latency.labels(sink.name).observe(time.monotonic() - started)
            depth = getattr(sink, "depth", None)
            if isinstance(depth, int):
                self.m.spool_depth.labels(sink.name).set(depth)
            return
