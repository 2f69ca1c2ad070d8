"""The interface every sink implements; the runner only knows this."""

from __future__ import annotations

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
        """Flush anything buffered and release resources."""
        ...
