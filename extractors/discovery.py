"""Discovery: markets found over REST and rediscovered, spread over connections, watched for quiet.

:class:`Discovery` decides which markets one exchange runner extracts and which
:class:`~extractors.connection.Connection` carries each:

* discovery asks the exchange's REST for its markets (the response lands in channel ``markets``)
  and keeps the configured ones of this shard (:func:`~extractors.settings.select_markets`),
  retrying with backoff until it succeeds or the stop event fires;
* markets are spread over connections of at most ``markets_per_connection`` each; only the
  first connection of shard 0 takes the exchange's ticker firehose;
* rediscovery (every ``rediscover_interval_s``, or at once when a market went quiet) subscribes
  new listings and unsubscribes delisted markets on the live connections;
* the market watch ticks the trade tracker once a second, counts quiet markets, and polls L1
  over REST for markets whose socket sent none for ``l1_poll_interval_s`` (when the exchange
  has such a request and the REST budget allows).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence

from extractors.backoff import Backoff, RetryableError, is_retryable, sleep_unless_stopped
from extractors.connection import Connection
from extractors.envelope import Channel
from extractors.exchanges.base import Connector, Market, RestRequest, takes_firehose
from extractors.metrics import Metrics
from extractors.rest import RestClient, RestError
from extractors.settings import ExchangeSettings, ExtractorSettings, select_markets
from extractors.tracking import Action, TradeTracker

logger = logging.getLogger(__name__)

#: Lands a REST response: (channel, request, body, recv_ts_ns, native symbol or None).
LandRest = Callable[[Channel, RestRequest, str, int, str | None], None]


class Discovery:
    """One exchange runner's markets and their connections; see the module docstring.

    ``conn_of`` (native symbol -> its connection) and ``last_data``/``last_l1`` (symbol ->
    ``time.monotonic()`` of its latest data / L1 frame) are shared with the runner's other
    parts. ``start`` starts the loop of a connection added while the runner runs.
    """

    def __init__(
        self,
        connector: Connector,
        *,
        ext: ExtractorSettings,
        xs: ExchangeSettings,
        channels: tuple[Channel, ...],
        shard: tuple[int, int],
        rest: RestClient,
        tracker: TradeTracker,
        conn_of: dict[str, Connection],
        last_data: dict[str, float],
        last_l1: dict[str, float],
        land_rest: LandRest,
        handle: Callable[[Sequence[Action]], None],
        start: Callable[[Connection], None],
        metrics: Metrics,
        stop: asyncio.Event,
    ) -> None:
        self.c = connector
        self.name = connector.NAME
        self.ext = ext
        self.xs = xs
        self.channels = channels
        self.shard = shard
        self.rest = rest
        self.tracker = tracker
        self.per_conn = xs.markets_per_connection or connector.MARKETS_PER_CONNECTION
        self.connections: list[Connection] = []
        self.conn_of = conn_of
        self._last_data = last_data
        self._last_l1 = last_l1
        self._land_rest = land_rest
        self._handle = handle
        self._start = start
        self.m = metrics
        self._stop = stop
        self._rediscover_now = asyncio.Event()

    # --- discovery --------------------------------------------------------------------------------

    async def discover(self) -> list[Market]:
        request = self.c.discovery_request()
        response = await self.rest.call(request)
        self._land_rest("markets", request, response.body, response.recv_ts_ns, None)
        try:
            return self.c.parse_markets(response.body)
        except (ValueError, KeyError, TypeError) as exc:
            raise RetryableError(f"discovery response not understood: {exc}") from exc

    async def discover_until_ok(self) -> list[str] | None:
        """This shard's selected markets; None when the stop event fired first. A REST 403/404
        is retried (a geo-block or a moved endpoint may clear), other 4xx raise."""
        backoff = Backoff(initial=self.ext.backoff_initial_s, cap=self.ext.backoff_max_s)
        while not self._stop.is_set():
            try:
                found = await self.discover()
            except Exception as exc:
                if not is_retryable(exc) and not (isinstance(exc, RestError) and exc.status in (403, 404)):
                    raise
                delay = next(backoff)
                logger.warning(
                    "discovery failed (%s); retry in %.2fs", exc, delay, extra={"exchange": self.name}
                )
                if await sleep_unless_stopped(self._stop, delay):
                    return None
                continue
            chosen = select_markets(found, self.xs, shard=self.shard)
            logger.info(
                "discovered %d markets, %d selected (shard %s)",
                len(found),
                len(chosen),
                self.ext.shard,
                extra={"exchange": self.name},
            )
            return chosen
        return None

    async def rediscovery_loop(self) -> None:
        while not self._stop.is_set():
            waiters = [
                asyncio.create_task(self._stop.wait()),
                asyncio.create_task(self._rediscover_now.wait()),
            ]
            try:
                await asyncio.wait(
                    waiters, timeout=self.ext.rediscover_interval_s, return_when="FIRST_COMPLETED"
                )
            finally:
                for waiter in waiters:
                    waiter.cancel()
            self._rediscover_now.clear()
            if self._stop.is_set():
                return
            try:
                found = await self.discover()
            except Exception as exc:
                if not is_retryable(exc):
                    raise
                logger.warning("rediscovery failed: %s", exc, extra={"exchange": self.name})
                continue
            self.apply(select_markets(found, self.xs, shard=self.shard))

    # --- connections ------------------------------------------------------------------------------

    def add_connection(self, markets: list[str]) -> Connection:
        """A new connection slot for ``markets`` (started at once if the runner runs)."""
        conn = Connection(
            index=len(self.connections),
            markets=list(markets),
            firehose=takes_firehose(shard=self.shard, connection_index=len(self.connections)),
        )
        self.connections.append(conn)
        for symbol in markets:
            self.conn_of[symbol] = conn
        self.m.markets.labels(self.name).set(len(self.conn_of))
        self._start(conn)
        return conn

    def apply(self, wanted: Sequence[str]) -> None:
        """Subscribe new listings and unsubscribe delisted/halted markets on live connections."""
        current = set(self.conn_of)
        added = [s for s in wanted if s not in current]
        removed = sorted(current - set(wanted))
        by_conn: dict[int, list[str]] = {}
        for symbol in removed:
            conn = self.conn_of.pop(symbol)
            conn.markets.remove(symbol)
            by_conn.setdefault(conn.index, []).append(symbol)
            self.tracker.forget(symbol)
            self._last_data.pop(symbol, None)
        for index, symbols in by_conn.items():
            for message in self.c.unsubscribe_messages(symbols, self.channels):
                self.connections[index].outbox.put_nowait(message)
        if removed:
            self.m.delisted.labels(self.name).inc(len(removed))
            logger.info("dropping %d markets: %s", len(removed), removed[:20], extra={"exchange": self.name})
        fresh: list[str] = []
        for symbol in added:
            spare = next((c for c in self.connections if len(c.markets) < self.per_conn), None)
            if spare is None:
                self.tracker.track([symbol])
                fresh.append(symbol)
                if len(fresh) == self.per_conn:
                    self.add_connection(fresh)
                    fresh = []
                continue
            spare.markets.append(symbol)
            self.conn_of[symbol] = spare
            for message in self.c.subscribe_messages([symbol], self.channels, firehose=False):
                spare.outbox.put_nowait(message)
            self._handle(self.tracker.listed(symbol))
        if fresh:
            self.add_connection(fresh)
        if added:
            self.m.listed.labels(self.name).inc(len(added))
            logger.info("adding %d markets: %s", len(added), added[:20], extra={"exchange": self.name})
        self.m.markets.labels(self.name).set(len(self.conn_of))

    # --- quiet markets and the L1 poller ------------------------------------------------------------

    async def watch_loop(self) -> None:
        started = time.monotonic()
        stale_before: set[str] = set()
        poll = self.ext.l1_poll_interval_s
        polled: dict[str, float] = {}
        while not await sleep_unless_stopped(self._stop, 1.0):
            now = time.monotonic()
            self._handle(self.tracker.tick(now))
            quiet = {
                s
                for s in self.conn_of
                if now - self._last_data.get(s, started) > self.ext.market_quiet_after_s
            }
            self.m.stale_markets.labels(self.name).set(len(quiet))
            if quiet - stale_before:
                logger.info(
                    "%d markets quiet for %.0fs; rediscovering",
                    len(quiet - stale_before),
                    self.ext.market_quiet_after_s,
                    extra={"exchange": self.name},
                )
                self._rediscover_now.set()
            stale_before = quiet
            if not poll or "l1" not in self.channels:
                continue
            for symbol in list(self.conn_of):
                request = self.c.l1_poll_request(symbol)
                if request is None:
                    break
                last = max(self._last_l1.get(symbol, started), polled.get(symbol, started))
                if now - last < poll or self.rest.bucket.available() < self.c.REST_WEIGHT_BURST / 2:
                    continue
                polled[symbol] = now
                try:
                    response = await self.rest.call(request)
                except RestError as exc:
                    logger.warning("L1 poll %s failed: %s", symbol, exc, extra={"exchange": self.name})
                    continue
                self._land_rest("l1", request, response.body, response.recv_ts_ns, symbol)
