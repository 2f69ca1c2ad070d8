"""Fetch every closed minute's 1-minute candle of every collected market and land it as ``klines``.

The exchange's own candles are the reference that ``gold.completeness_1m`` compares our trades
with (Binance even counts the trades of each minute). A minute ``[t, t + 60 s)`` is fetched once
the clock has passed ``t + 60 s + delay_s``: the delay lets late trades settle at the venue.

* Each market starts at the minute in which the poller first saw it (that first minute is
  partial on our side if the market traded before we subscribed: completeness says so).
* One request per market asks for every due minute at once (up to the venue's rows per
  request), so a poller that fell behind (throttled, or a REST outage) catches up by itself; a
  failed request is tried again on the next round and nothing is skipped.
* Requests go through the exchange's shared :class:`~extractors.rest.RestClient` (its token
  bucket and 429 handling) and are paced to ``rest_share`` of the exchange's REST rate, so gap
  fills keep most of the budget.
* Each response lands verbatim (one envelope, ``source="rest"``, the request in ``stream``).

The wire format of each venue (path, parameters, row shape) lives in its exchange module
(``klines_request``/``parse_klines``); this module does the timing and the I/O.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Sequence

from extractors.envelope import Envelope
from extractors.exchanges.base import Connector, UnknownFrame
from extractors.rest import RestClient, RestError

logger = logging.getLogger(__name__)

MINUTE_MS = 60_000


def minute_floor(ms: int) -> int:
    return ms - ms % MINUTE_MS


def due_range(first_ms: int, *, now_ms: int, delay_ms: int, max_rows: int) -> tuple[int, int] | None:
    """The minutes ``[start, end]`` (minute starts, ms) to fetch now, from ``first_ms`` on: those
    that closed at least ``delay_ms`` ago, at most ``max_rows``; ``None`` when none is due yet."""
    last_closed = minute_floor(now_ms - delay_ms) - MINUTE_MS
    if last_closed < first_ms:
        return None
    return first_ms, min(last_closed, first_ms + (max_rows - 1) * MINUTE_MS)


class KlinePoller:
    """Polls one exchange's candles; ``await run()`` returns when ``stop`` is set.

    ``markets`` returns the markets collected right now (rediscovery adds and drops them);
    ``clock`` is the time that decides when a minute closed (seconds since the epoch).
    """

    def __init__(
        self,
        connector: Connector,
        rest: RestClient,
        *,
        markets: Callable[[], Sequence[str]],
        emit: Callable[[Envelope], None],
        stop: asyncio.Event,
        delay_s: float,
        rest_share: float,
        tick_s: float = 1.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.c = connector
        self.rest = rest
        self._markets = markets
        self._emit = emit
        self._stop = stop
        self._delay_ms = int(delay_s * 1000)
        self._share = rest_share
        self._tick_s = tick_s
        self._clock = clock
        #: Per market: the start (ms) of the next minute to fetch.
        self.next_minute: dict[str, int] = {}
        self._seq = 0

    def _now_ms(self) -> int:
        return int(self._clock() * 1000)

    async def run(self) -> None:
        while not self._stop.is_set():
            await self.poll_once()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), self._tick_s)

    async def poll_once(self) -> int:
        """One round over the markets; returns how many candle pages landed."""
        landed = 0
        for symbol in list(self._markets()):
            if self._stop.is_set():
                break
            now_ms = self._now_ms()
            first = self.next_minute.setdefault(symbol, minute_floor(now_ms))
            due = due_range(first, now_ms=now_ms, delay_ms=self._delay_ms, max_rows=self.c.KLINES_MAX_ROWS)
            if due is None:
                continue
            start, end = due
            request = self.c.klines_request(symbol, start_ms=start, end_ms=end + MINUTE_MS - 1)
            try:
                response = await self.rest.call(request)
                self.c.parse_klines(response.body)
            except (RestError, UnknownFrame, ValueError, KeyError) as exc:
                logger.warning(
                    "klines %s failed (%s); tried again next round",
                    request.target,
                    exc,
                    extra={"exchange": self.c.NAME},
                )
                continue
            self._seq += 1
            self._emit(
                Envelope(
                    exchange=self.c.NAME,
                    channel="klines",
                    stream=request.target,
                    payload=response.body,
                    recv_ts_ns=response.recv_ts_ns,
                    conn_id=f"klines-{self.c.NAME}-{self._seq}",
                    conn_seq=1,
                    source="rest",
                    native_symbol=symbol,
                )
            )
            self.next_minute[symbol] = end + MINUTE_MS
            landed += 1
            # Pace to a share of the exchange's REST rate (the bucket still enforces the whole).
            await asyncio.sleep(request.weight / (self.rest.bucket.rate * self._share))
        return landed
