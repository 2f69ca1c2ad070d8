"""Sinks: where batches land (landing zone files, Kafka), behind a spool that survives outages.

Two helpers for whoever owns the sinks of a process:

- :func:`close_all` closes every sink within one deadline (the SIGTERM budget), each one even
  when another fails, and logs every error (each leaf of an exception group).
- :func:`batch_bytes_limit` is the byte bound the batcher must keep so that no sink receives a
  batch it cannot take in one piece (a Kafka record too large is fatal).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterator, Sequence

from extractors.sinks.base import Sink, close_within
from extractors.sinks.kafka import DEFAULT_MAX_BATCH_BYTES

logger = logging.getLogger(__name__)

#: A sink that ignores the deadline is cancelled this long after it (ours finish by it); the
#: grace lets one given an already passed deadline still do its instant steps (close files).
CLOSE_GRACE_S = 0.2


def batch_bytes_limit(sinks: Sequence[Sink]) -> int:
    """The smallest ``max_batch_bytes`` among ``sinks`` (seen through a spool's ``inner``), or
    :data:`~extractors.sinks.kafka.DEFAULT_MAX_BATCH_BYTES` when none declares one."""
    limits = [DEFAULT_MAX_BATCH_BYTES]
    for sink in sinks:
        target: object = sink
        while target is not None:
            limit = getattr(target, "max_batch_bytes", None)
            if isinstance(limit, int):
                limits.append(limit)
                break
            target = getattr(target, "inner", None)
    own = limits[1:]
    return min(own) if own else limits[0]


def leaf_errors(exc: BaseException) -> Iterator[BaseException]:
    """Every exception inside ``exc``, exception groups flattened (``exc`` itself if no group)."""
    if isinstance(exc, BaseExceptionGroup):
        for inner in exc.exceptions:
            yield from leaf_errors(inner)
    else:
        yield exc


async def close_all(sinks: Sequence[Sink], *, deadline: float) -> list[BaseException]:
    """Close every sink concurrently, all done by ``deadline`` (``time.monotonic()`` seconds).

    Each sink gets the deadline (our sinks shorten their spool drain, part finishing and producer
    close to it; what they cannot finish stays on disk for the next start) and is cancelled if
    it is still closing :data:`CLOSE_GRACE_S` after the deadline. A failing close never skips
    the others. Every error, each leaf of an exception group included, is logged at ERROR with
    its sink's name and returned; nothing is raised (except the caller's own cancellation).
    """
    if not sinks:
        return []
    started = time.monotonic()
    results = await asyncio.gather(*(_close_one(sink, deadline) for sink in sinks), return_exceptions=True)
    errors: list[BaseException] = []
    for sink, result in zip(sinks, results, strict=True):
        if isinstance(result, BaseException):
            for error in leaf_errors(result):
                errors.append(error)
                logger.error("closing sink %s failed: %s", sink.name, error, exc_info=error)
    logger.info(
        "closed %d sink(s) in %.2fs%s",
        len(sinks),
        time.monotonic() - started,
        f", {len(errors)} error(s)" if errors else "",
    )
    return errors


async def _close_one(sink: Sink, deadline: float) -> None:
    remaining = deadline - time.monotonic()
    try:
        await asyncio.wait_for(close_within(sink, deadline), max(remaining, 0.0) + CLOSE_GRACE_S)
    except TimeoutError:
        raise TimeoutError(
            f"sink {sink.name} was still closing at the shutdown deadline ({max(remaining, 0.0):.2f}s); "
            "what it held stays on disk for the next start"
        ) from None
