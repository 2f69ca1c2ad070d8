"""The interface every sink implements; the runner only knows this."""

from __future__ import annotations

import inspect
from collections.abc import Sequence
from typing import Protocol

from extractors.envelope import Batch


class SinkError(Exception):
    """A delivery failed; ``retryable`` says whether trying again later can succeed."""

    def __init__(self, message: str, *, retryable: bool = True) -> None:
        super().__init__(message)
        self.retryable = retryable


class Sink(Protocol):
    """Delivers batches somewhere durable. ``write`` returns only once the batch is durable
    (file renamed into place / multipart completed, Kafka acks=all received) and raises
    :class:`SinkError` otherwise; it never logs-and-forgets a failure."""

    name: str

    async def write(self, batch: Batch) -> None: ...

    async def close(self) -> None:
        """Flush anything buffered and release resources.

        The sinks of this package also take ``close(deadline=...)`` (``time.monotonic()``
        seconds): finish by then, leaving what cannot be finished durable on local disk.
        """
        ...


async def close_within(sink: Sink, deadline: float | None) -> None:
    """``sink.close(deadline=deadline)`` when the sink takes a deadline, else ``sink.close()``."""
    if deadline is not None and "deadline" in inspect.signature(sink.close).parameters:
        await sink.close(deadline=deadline)  # type: ignore[call-arg]
    else:
        await sink.close()


async def write_all(sink: Sink, batches: Sequence[Batch]) -> None:
    """``sink.write_many(batches)`` when the sink has it (one group commit: our landing sink and
    spool), else ``sink.write`` of each batch in order. Returns once every batch is durable; if
    it raises, some may already be (delivery is at-least-once)."""
    write_many = getattr(sink, "write_many", None)
    if write_many is not None:
        await write_many(batches)
        return
    for batch in batches:
        await sink.write(batch)
