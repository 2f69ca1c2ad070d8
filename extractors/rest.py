"""A rate-limited REST client for one exchange (discovery, tokens, gap fill, L1 polls).

Requests draw their weight from a token bucket sized from the exchange's documented limit. A 429
or 418 answer pauses *every* request to that exchange for ``Retry-After`` seconds (or a backoff
step when the header is missing) and is retried; 5xx and network errors are retried with backoff
up to ``max_attempts``; other 4xx answers fail at once (:class:`RestError`, not retryable).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass

import aiohttp

from extractors.backoff import Backoff, RetryableError
from extractors.exchanges.base import RestRequest
from extractors.metrics import Metrics

logger = logging.getLogger(__name__)


class RestError(RetryableError):
    """A REST call failed for good (after retries, or a 4xx); ``retryable`` says if later may work."""

    def __init__(self, message: str, *, status: int = 0, retryable: bool = True) -> None:
        super().__init__(message)
        self.status = status
        self.retryable = retryable


@dataclass(frozen=True, slots=True)
class RestResponse:
    status: int
    body: str
    headers: Mapping[str, str]
    recv_ts_ns: int


class TokenBucket:
    """``rate`` units per second, at most ``burst`` saved up; ``acquire`` waits for its weight."""

    def __init__(self, rate: float, burst: float) -> None:
        self.rate = rate
        self.burst = max(burst, 1.0)
        self._tokens = self.burst
        self._updated = time.monotonic()
        self._blocked_until = 0.0
        self._lock = asyncio.Lock()

    def _refill(self, now: float) -> None:
        self._tokens = min(self.burst, self._tokens + (now - self._updated) * self.rate)
        self._updated = now

    def block_for(self, seconds: float) -> None:
        self._blocked_until = max(self._blocked_until, time.monotonic() + seconds)

    def available(self) -> float:
        now = time.monotonic()
        self._refill(now)
        return 0.0 if now < self._blocked_until else self._tokens

    async def acquire(self, weight: float) -> None:
        weight = min(weight, self.burst)
        async with self._lock:
            while True:
                now = time.monotonic()
                if now < self._blocked_until:
                    await asyncio.sleep(self._blocked_until - now)
                    continue
                self._refill(now)
                if self._tokens >= weight:
                    self._tokens -= weight
                    return
                await asyncio.sleep((weight - self._tokens) / self.rate)


class RestClient:
    def __init__(
        self,
        session: aiohttp.ClientSession,
        *,
        exchange: str,
        base_url: str,
        weight_per_s: float,
        burst: float,
        timeout_s: float,
        max_attempts: int,
        metrics: Metrics,
    ) -> None:
        self.exchange = exchange
        self.base_url = base_url.rstrip("/")
        self.bucket = TokenBucket(weight_per_s, burst)
        self._session = session
        self._timeout = aiohttp.ClientTimeout(total=timeout_s)
        self._max_attempts = max_attempts
        self._metrics = metrics

    async def call(self, request: RestRequest) -> RestResponse:
        """Send ``request`` (waiting for rate-limit budget); the response of a 2xx answer."""
        backoff = Backoff(initial=0.2, cap=10.0)
        url = self.base_url + request.path
        last_error = ""
        for attempt in range(1, self._max_attempts + 1):
            await self.bucket.acquire(request.weight)
            try:
                async with self._session.request(
                    request.method, url, params=list(request.params), timeout=self._timeout
                ) as response:
                    body = await response.text()
                    status = response.status
                    headers = {k: v for k, v in response.headers.items()}
            except (aiohttp.ClientError, TimeoutError) as exc:
                self._metrics.rest_requests.labels(self.exchange, "0").inc()
                last_error = f"{type(exc).__name__}: {exc}"
                delay = next(backoff)
                logger.warning(
                    "REST %s failed (%s), retry %d in %.2fs",
                    request.target,
                    last_error,
                    attempt,
                    delay,
                    extra={"exchange": self.exchange},
                )
                await asyncio.sleep(delay)
                continue
            self._metrics.rest_requests.labels(self.exchange, str(status)).inc()
            if 200 <= status < 300:
                return RestResponse(status, body, headers, time.time_ns())
            last_error = f"HTTP {status}: {body[:200]}"
            if status in (429, 418):
                wait = _retry_after(headers) or next(backoff)
                self._metrics.rest_throttled.labels(self.exchange).inc()
                self.bucket.block_for(wait)
                logger.warning(
                    "REST %s throttled (HTTP %d), every request to %s waits %.2fs",
                    request.target,
                    status,
                    self.exchange,
                    wait,
                    extra={"exchange": self.exchange},
                )
                continue
            if status >= 500:
                delay = next(backoff)
                logger.warning(
                    "REST %s: HTTP %d, retry in %.2fs",
                    request.target,
                    status,
                    delay,
                    extra={"exchange": self.exchange},
                )
                await asyncio.sleep(delay)
                continue
            raise RestError(f"{self.exchange} {request.target}: {last_error}", status=status, retryable=False)
        raise RestError(
            f"{self.exchange} {request.target}: gave up after {self._max_attempts} attempts: {last_error}"
        )


def _retry_after(headers: Mapping[str, str]) -> float | None:
    for key, value in headers.items():
        if key.lower() == "retry-after":
            try:
                return max(float(value), 0.0)
            except ValueError:
                return None
    return None
