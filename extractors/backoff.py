"""Reconnect/retry delays and the one place that decides whether a failure is worth retrying.

:class:`Backoff` is an iterator of delays: a random start, geometric growth, a hard cap, full
jitter on every step, and :meth:`Backoff.reset` after a connection has been healthy for a while
(so one blip after a day of uptime waits a short delay, not the cap). :func:`sleep_unless_stopped`
waits out a delay but wakes when the stop event fires.
"""

from __future__ import annotations

import asyncio
import contextlib
import random

import aiohttp
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidURI


class Backoff:
    """Delays in seconds: ``initial * factor**n`` capped at ``cap``, each drawn in ``[d/2, d]``.

    The first delay is random in ``[0, initial]`` so a fleet restarting together spreads out.
    """

    def __init__(
        self, *, initial: float, cap: float, factor: float = 2.0, rng: random.Random | None = None
    ) -> None:
        if initial <= 0 or cap < initial or factor < 1:
            raise ValueError("need 0 < initial <= cap and factor >= 1")
        self.initial = initial
        self.cap = cap
        self.factor = factor
        self._rng = rng or random.Random()
        self._attempt = 0

    def __iter__(self) -> Backoff:
        return self

    def __next__(self) -> float:
        attempt = self._attempt
        self._attempt += 1
        if attempt == 0:
            return self._rng.uniform(0, self.initial)
        ceiling = min(self.cap, self.initial * self.factor**attempt)
        return self._rng.uniform(ceiling / 2, ceiling)

    @property
    def attempts(self) -> int:
        return self._attempt

    def reset(self) -> None:
        self._attempt = 0


async def sleep_unless_stopped(stop: asyncio.Event, seconds: float) -> bool:
    """Sleep ``seconds`` unless ``stop`` fires first; True when it has fired."""
    if seconds <= 0:
        return stop.is_set()
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), seconds)
    return stop.is_set()


class RetryableError(Exception):
    """A failure that a later attempt can fix (protocol hiccup, missing welcome, REST 5xx)."""


class FatalError(Exception):
    """A failure no retry fixes (bad configuration, a 4xx the exchange will always answer)."""


def is_retryable(exc: BaseException) -> bool:
    """Retry network, websocket, timeout, REST-throttling and retryable sink failures; not bugs.

    An error that carries its own verdict (``retryable: bool``, as ``extractors.sinks.base.SinkError`` and
    ``extractors.rest.RestError`` do) is believed: a REST 4xx is ``RestError(retryable=False)``
    and must not be retried, even though ``RestError`` derives from :class:`RetryableError`.
    """
    if isinstance(exc, FatalError | InvalidURI):
        return False
    verdict = getattr(exc, "retryable", None)
    if isinstance(verdict, bool):
        return verdict
    return isinstance(
        exc,
        RetryableError
        | ConnectionClosed
        | InvalidHandshake
        | OSError
        | asyncio.TimeoutError
        | aiohttp.ClientError
        | EOFError,
    )
