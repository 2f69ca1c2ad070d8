"""The shared machinery of a simulated exchange: markets, trade loop, connections, faults, REST.

An :class:`ExchangeServer` subclass describes one exchange's wire protocol (payload builders,
subscribe handling, REST routes); everything else lives here once: the seeded market state and
trade generation, the subscription index and fan-out, each connection's send queue with fault
injection, incoming-message rate limits, REST weight budgets and error injection, and the
``/_sim/*`` control endpoints.
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import json
import logging
import math
import random
import time
from collections import deque
from collections.abc import Awaitable, Callable, Hashable, Iterator
from dataclasses import dataclass
from typing import Any, ClassVar

from aiohttp import WSMsgType, web

from infra.exchange_sim.faults import WS_FAULTS, ConnFaults, Fault, ServerFaults
from infra.exchange_sim.markets import (
    Market,
    PriceOracle,
    SimClock,
    Status,
    Trade,
    make_trade,
    new_market,
    requote,
    spoil,
    universe,
)
from infra.exchange_sim.truth import GroundTruth, TruthRecord

logger = logging.getLogger(__name__)

#: A connection whose client does not read is cut when this many frames are queued.
MAX_QUEUED_FRAMES = 200_000
_ACTION_STATUS: dict[str, Status] = {"delist": "delisted", "halt": "halted", "resume": "trading"}
#: How many trades one step of the "as fast as possible" loop generates before yielding.
MAX_RATE_BATCH = 200


@dataclass(frozen=True, slots=True, kw_only=True)
class SimConfig:
    """Knobs shared by every simulated exchange; ``None`` means the exchange's documented value.

    ``rate`` is trades per second per exchange (0 = as fast as possible). ``weight_limit`` and
    ``weight_window_s`` are the REST budget (Binance 6000 weight / 60 s, KuCoin 2000 / 30 s,
    Coinbase 15 requests / 1 s). ``ping_interval_s``/``ping_timeout_s``: Binance server ping
    cadence and pong deadline (20 s / 60 s); KuCoin ``pingInterval``/``pingTimeout`` (18 s / 10 s).
    ``max_incoming``/``incoming_window_s``: client message budget before a disconnect.
    ``max_connection_s`` is the forced connection lifetime (24 h on Binance and KuCoin).
    ``subscribe_deadline_s``: Coinbase closes a connection without a subscribe after 5 s.
    """

    symbols: int = 50
    rate: float = 200.0
    seed: int = 7
    host: str = "127.0.0.1"
    weight_limit: int | None = None
    weight_window_s: float | None = None
    ping_interval_s: float | None = None
    ping_timeout_s: float | None = None
    max_incoming: int | None = None
    incoming_window_s: float | None = None
    max_connection_s: float = 86_400.0
    subscribe_deadline_s: float = 5.0
    ticker_interval_s: float = 1.0
    #: Trade times run this many times faster than the wall clock, starting ``clock_lag_s``
    #: behind it (see :class:`~infra.exchange_sim.markets.SimClock`).
    clock_speed: float = 1.0
    clock_lag_s: float = 0.0


class RestError(Exception):
    """Raised by a REST handler: answered with ``status`` and the JSON ``body``."""

    def __init__(self, status: int, body: Any, headers: dict[str, str] | None = None) -> None:
        super().__init__(status, body)
        self.status = status
        self.body = body
        self.headers = headers or {}


class WindowCounter:
    """A fixed-window counter (weight per window), like Binance's per-minute IP weight."""

    def __init__(self, limit: int, window_s: float) -> None:
        self.limit = limit
        self.window_s = window_s
        self._window = -1
        self.used = 0

    def add(self, weight: int, now: float) -> int:
        window = int(now // self.window_s)
        if window != self._window:
            self._window, self.used = window, 0
        self.used += weight
        return self.used

    def reset_in(self, now: float) -> float:
        """Seconds until the current window ends."""
        return (int(now // self.window_s) + 1) * self.window_s - now


class SlidingRate:
    """At most ``limit`` events in any ``window_s`` seconds; ``hit`` says whether one more is over."""

    def __init__(self, limit: int, window_s: float) -> None:
        self.limit = limit
        self.window_s = window_s
        self._times: deque[float] = deque()

    def hit(self, now: float) -> bool:
        while self._times and now - self._times[0] >= self.window_s:
            self._times.popleft()
        self._times.append(now)
        return len(self._times) > self.limit


@dataclass(slots=True)
class OutFrame:
    text: str
    records: tuple[TruthRecord, ...]
    data: bool


class Connection:
    """One websocket client: its subscriptions, send queue and fault state.

    Frames go through one writer task in order (replies and data interleaved as produced).
    ``wrap``, when set, renders a data payload for this connection (Binance combined streams).
    """

    def __init__(self, server: ExchangeServer, ws: web.WebSocketResponse, request: web.Request) -> None:
        server.conn_counter += 1
        self.id = f"{server.name}-{server.conn_counter}"
        self.server = server
        self.ws = ws
        self.request = request
        self.subs: set[Hashable] = set()
        self.faults = ConnFaults()
        self.wrap: Callable[[str, str], str] | None = None
        self.props: dict[str, Any] = {}
        self.opened = time.monotonic()
        self.last_heard = self.opened
        self._queue: deque[OutFrame] = deque()
        self._wake = asyncio.Event()
        self._held: OutFrame | None = None
        self.data_sent = 0
        self.closing = False

    # -- producing -------------------------------------------------------------------------
    def send_data(self, text: str, records: tuple[TruthRecord, ...] = ()) -> None:
        self._enqueue(OutFrame(text, records, True))

    def send_control(self, payload: Any) -> None:
        """Queue a reply/control frame (dict → compact JSON); faults never touch these."""
        text = payload if isinstance(payload, str) else json.dumps(payload, separators=(",", ":"))
        self._enqueue(OutFrame(text, (), False))

    def _enqueue(self, frame: OutFrame) -> None:
        if self.closing:
            return
        if len(self._queue) >= MAX_QUEUED_FRAMES:
            logger.warning("slow consumer, closing %s", self.id, extra={"conn_id": self.id})
            self.closing = True
            asyncio.get_running_loop().create_task(self.ws.close(code=1008, message=b"slow consumer"))
            return
        for record in frame.records:
            record.pending += 1
        self._queue.append(frame)
        self._wake.set()

    def poke(self) -> None:
        self._wake.set()

    # -- fault state -----------------------------------------------------------------------
    def silent(self) -> bool:
        """True while stalled: nothing at all may be sent (data, replies, pings, pongs)."""
        f = self.faults
        if f.stalled_forever:
            return True
        if f.stall_until is not None:
            if time.monotonic() < f.stall_until:
                return True
            f.stall_until = None
        return False

    def _count_sent(self) -> None:
        self.data_sent += 1
        f = self.faults
        if f.close_after is not None:
            f.close_after -= 1
        if f.stall_after is not None:
            f.stall_after -= 1

    # -- writer ----------------------------------------------------------------------------
    async def run_writer(self) -> None:
        try:
            while not self.ws.closed:
                f = self.faults
                if f.close_after is not None and f.close_after <= 0:
                    await self._fault_close()
                    return
                if f.stall_after is not None and f.stall_after <= 0:
                    f.stall_after = None
                    if f.stall_seconds is None:
                        f.stalled_forever = True
                    else:
                        f.stall_until = time.monotonic() + f.stall_seconds
                    logger.info("fault: %s stalls", self.id, extra={"conn_id": self.id})
                if self.silent():
                    self._drop_all()
                    self._wake.clear()
                    if f.stall_until is not None:
                        await asyncio.sleep(min(0.05, max(0.0, f.stall_until - time.monotonic())))
                    else:
                        await self._wake.wait()
                    continue
                if not self._queue:
                    self._wake.clear()
                    await self._wake.wait()
                    continue
                frame = self._queue.popleft()
                if frame.data:
                    await self._send_data(frame)
                else:
                    await self.ws.send_str(frame.text)
        except (ConnectionError, RuntimeError) as exc:
            logger.debug("writer of %s stopped: %s", self.id, exc)
        finally:
            self._drop_all()

    async def _send_data(self, frame: OutFrame) -> None:
        f = self.faults
        if f.reorder > 0:
            if self._held is None:
                self._held = frame
                return
            held, self._held = self._held, None
            f.reorder -= 1
            await self._emit(frame)
            await self._emit(held)
            return
        await self._emit(frame)

    async def _emit(self, frame: OutFrame) -> None:
        f = self.faults
        if f.malformed > 0:
            f.malformed -= 1
            await self.ws.send_str(frame.text[: max(1, len(frame.text) // 2)])
            if f.malformed_replace:
                self._settle(frame, delivered=False)
                self._count_sent()
                return
        await self.ws.send_str(frame.text)
        self._settle(frame, delivered=True)
        if f.duplicate > 0:
            f.duplicate -= 1
            await self.ws.send_str(frame.text)
        self._count_sent()

    @staticmethod
    def _settle(frame: OutFrame, *, delivered: bool) -> None:
        for record in frame.records:
            record.pending -= 1
            if delivered:
                record.delivered = True

    def _drop_all(self) -> None:
        while self._queue:
            self._settle(self._queue.popleft(), delivered=False)
        if self._held is not None:
            self._settle(self._held, delivered=False)
            self._held = None

    async def _fault_close(self) -> None:
        f = self.faults
        f.close_after = None
        self.closing = True
        self._drop_all()
        logger.info("fault: closing %s after %d data frames", self.id, self.data_sent)
        if f.close_abrupt and self.request.transport is not None:
            self.request.transport.abort()
        else:
            await self.ws.close(code=f.close_code, message=b"simulated fault")


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class ExchangeServer:
    """Base class of one simulated exchange: one aiohttp app (REST + websocket) on one port.

    Subclasses set the class constants and implement the hooks below (``native_name``,
    ``routes``, ``on_open``, ``on_text``, ``on_trade``, ``on_quote``, ``on_second``,
    ``rest_error_body`` ...). Market state is kept in :class:`~infra.exchange_sim.markets.Market`.
    """

    name: ClassVar[str] = ""
    default_weight: ClassVar[tuple[int, float]] = (6000, 60.0)
    default_incoming: ClassVar[tuple[int, float] | None] = None

    def __init__(self, config: SimConfig, oracle: PriceOracle, truth: GroundTruth) -> None:
        self.config = config
        self.oracle = oracle
        self.truth = truth
        self.rng = random.Random(f"{self.name}-{config.seed}")
        self.markets: dict[str, Market] = {}
        self.trading: list[Market] = []
        self.index: dict[Hashable, set[Connection]] = {}
        self.conns: set[Connection] = set()
        self.conn_counter = 0
        self.faults = ServerFaults()
        #: (native symbol, bid, ask) of every book top published crossed (``crossed_book``).
        self.crossed_quotes: list[tuple[str, str, str]] = []
        limit, window = self.default_weight
        self.weight = WindowCounter(config.weight_limit or limit, config.weight_window_s or window)
        self.rest_url = ""
        self.ws_url = ""
        self.port = 0
        #: Stamps trades; :class:`~infra.exchange_sim.ExchangeSimulator` shares one across exchanges.
        self.clock = SimClock(config.clock_speed, config.clock_lag_s)
        self._tasks: list[asyncio.Task[None]] = []
        for base, quote in universe(self.name, config.symbols, config.seed):
            self.add_market(base, quote)

    # -- hooks (exchange-specific) ---------------------------------------------------------
    def native_name(self, base: str, quote: str) -> str:
        raise NotImplementedError

    def first_ids(self) -> tuple[int, int, int]:
        """First trade id, agg id and sequence of a new market."""
        return (
            self.rng.randint(10**6, 10**8),
            self.rng.randint(10**5, 10**7),
            self.rng.randint(10**9, 10**10),
        )

    def id_step(self, rng: random.Random) -> int:
        return 1

    def trade_id_str(self, trade: Trade) -> str:
        return str(trade.trade_id)

    def ts_event(self, trade: Trade) -> str:
        return str(trade.ts_us // 1000)

    def routes(self, app: web.Application) -> None:
        raise NotImplementedError

    def rest_weight(self, request: web.Request) -> int:
        return 1

    def rest_error_body(self, status: int, message: str) -> Any:
        raise NotImplementedError

    def rate_headers(self, used: int, now: float) -> dict[str, str]:
        return {}

    async def accept(self, request: web.Request) -> web.StreamResponse | None:
        """Validate a websocket handshake; return a response to refuse it."""
        return None

    async def on_open(self, conn: Connection) -> None:
        """Called after the handshake (send welcome, subscribe URL streams ...)."""

    async def on_text(self, conn: Connection, text: str) -> None:
        raise NotImplementedError

    def on_pong(self, conn: Connection, payload: bytes) -> None:
        """A websocket pong frame arrived."""

    async def on_flood(self, conn: Connection) -> None:
        """The client exceeded the incoming message rate; default: close with 1008."""
        await conn.ws.close(code=1008, message=b"too many requests")

    async def keepalive(self, conn: Connection) -> None:
        """Per-connection timer task (server pings, idle checks); default: lifetime cap only."""
        await asyncio.sleep(self.config.max_connection_s)
        await conn.ws.close(code=1000, message=b"connection lifetime reached")

    def on_trade(self, market: Market, trade: Trade, record: TruthRecord) -> None:
        raise NotImplementedError

    def on_quote(self, market: Market) -> None:
        """The book top of ``market`` changed."""

    def on_second(self) -> None:
        """Called every ``ticker_interval_s`` (all-market tickers, heartbeats)."""

    def on_status(self, market: Market) -> None:
        """A market's status changed or it was listed."""

    # -- markets ---------------------------------------------------------------------------
    def add_market(self, base: str, quote: str, *, usd_price: float | None = None) -> Market:
        """List a new market (trading at once); ``usd_price`` seeds an unknown base asset."""
        if usd_price is not None:
            self.oracle.add_asset(base, usd_price)
        native = self.native_name(base, quote)
        if native in self.markets:
            raise ValueError(f"{self.name}: market {native} already listed")
        market = new_market(self.name, native, base, quote, self.oracle, self.rng, first_ids=self.first_ids())
        self.markets[native] = market
        self.trading.append(market)
        self.on_status(market)
        return market

    def set_status(self, native: str, status: Status) -> Market:
        market = self.market(native)
        market.status = status
        self.trading = [m for m in self.markets.values() if m.status == "trading"]
        self.on_status(market)
        return market

    def market(self, native: str) -> Market:
        try:
            return self.markets[native]
        except KeyError:
            raise KeyError(f"{self.name}: no market {native!r}") from None

    # -- subscriptions and fan-out ---------------------------------------------------------
    def subscribe(self, conn: Connection, key: Hashable) -> None:
        conn.subs.add(key)
        self.index.setdefault(key, set()).add(conn)

    def unsubscribe(self, conn: Connection, key: Hashable) -> None:
        conn.subs.discard(key)
        conns = self.index.get(key)
        if conns is not None:
            conns.discard(conn)
            if not conns:
                del self.index[key]

    def wants(self, *keys: Hashable) -> bool:
        return any(key in self.index for key in keys)

    def publish(
        self, key: Hashable, text: str, records: tuple[TruthRecord, ...] = (), *, stream: str = ""
    ) -> None:
        for conn in self.index.get(key, ()):
            conn.send_data(text if conn.wrap is None else conn.wrap(stream, text), records)

    # -- faults ----------------------------------------------------------------------------
    def inject(self, fault: Fault) -> None:
        p = fault.params
        logger.info("%s: inject %s %s (%s)", self.name, fault.name, p, fault.scope)
        if fault.name == "reject_subscribe":
            self.faults.reject_subscribe += int(p.get("count", 1))
            return
        if fault.name == "bad_trade":
            self.faults.bad_trades.extend([p["kind"]] * int(p.get("count", 1)))
            return
        if fault.name == "crossed_book":
            self.faults.crossed_books += int(p.get("count", 1))
            return
        if fault.name == "rest_error":
            status, retry = int(p.get("status", 429)), int(p.get("retry_after", 1))
            self.faults.rest_errors.extend([(status, retry)] * int(p.get("count", 1)))
            return
        assert fault.name in WS_FAULTS
        targets = list(self.conns) if fault.scope in ("open", "all") else []
        if fault.scope == "all":
            self.faults.sticky.append(fault)
        elif not targets:
            self.faults.next_conn.append(fault)
        for conn in targets:
            conn.faults.apply(fault)
            conn.poke()

    # -- websocket -------------------------------------------------------------------------
    async def handle_ws(self, request: web.Request) -> web.StreamResponse:
        refused = await self.accept(request)
        if refused is not None:
            return refused
        ws = web.WebSocketResponse(autoping=False, max_msg_size=1 << 22)
        await ws.prepare(request)
        conn = Connection(self, ws, request)
        for fault in self.faults.for_new_connection():
            conn.faults.apply(fault)
        self.conns.add(conn)
        limit = self._incoming_limit()
        rate = SlidingRate(*limit) if limit else None
        tasks = [asyncio.create_task(conn.run_writer()), asyncio.create_task(self.keepalive(conn))]
        logger.debug("%s: open %s", self.name, conn.id)
        try:
            await self.on_open(conn)
            async for msg in ws:
                conn.last_heard = time.monotonic()
                if rate is not None and rate.hit(conn.last_heard):
                    logger.info("%s: %s exceeded the incoming message rate", self.name, conn.id)
                    await self.on_flood(conn)
                    break
                if msg.type == WSMsgType.TEXT:
                    await self.on_text(conn, msg.data)
                elif msg.type == WSMsgType.PING:
                    if not conn.faults.no_pong and not conn.silent():
                        await ws.pong(msg.data)
                elif msg.type == WSMsgType.PONG:
                    self.on_pong(conn, msg.data)
                elif msg.type == WSMsgType.BINARY:
                    await self.on_text(conn, msg.data.decode("utf-8", "replace"))
        except (ConnectionError, RuntimeError) as exc:
            logger.debug("%s: %s reader stopped: %s", self.name, conn.id, exc)
        finally:
            conn.closing = True
            self.conns.discard(conn)
            for key in list(conn.subs):
                self.unsubscribe(conn, key)
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            if not ws.closed:
                await ws.close()
            logger.debug("%s: closed %s", self.name, conn.id)
        return ws

    def _incoming_limit(self) -> tuple[int, float] | None:
        if self.default_incoming is None:
            return None
        n, window = self.default_incoming
        return (self.config.max_incoming or n, self.config.incoming_window_s or window)

    # -- REST ------------------------------------------------------------------------------
    @web.middleware
    async def _rest_middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.path.startswith("/_sim/") or request.headers.get("Upgrade", "").lower() == "websocket":
            return await handler(request)
        now = time.time()
        injected = self.faults.take_rest_error()
        if injected is not None:
            status, retry_after = injected
            return self._error_response(status, retry_after, "injected fault", now)
        used = self.weight.add(self.rest_weight(request), now)
        if used > self.weight.limit:
            retry = max(1, math.ceil(self.weight.reset_in(now)))
            return self._error_response(429, retry, "rate limit exceeded", now)
        try:
            response = await handler(request)
        except RestError as exc:
            response = web.json_response(exc.body, status=exc.status, headers=exc.headers)
        response.headers.update(self.rate_headers(used, now))
        return response

    def _error_response(self, status: int, retry_after: int, why: str, now: float) -> web.Response:
        headers = self.rate_headers(self.weight.used, now)
        if status == 429:
            headers["Retry-After"] = str(retry_after)
        return web.json_response(self.rest_error_body(status, why), status=status, headers=headers)

    async def _control_faults(self, request: web.Request) -> web.Response:
        """``POST /_sim/faults`` ``{"fault": name, "scope": ..., params...}``; ``DELETE`` clears."""
        if request.method == "DELETE":
            self.clear_faults()
            return web.json_response({"ok": True})
        try:
            body = await request.json()
            name = body.pop("fault")
            scope = body.pop("scope", "open")
            self.inject(Fault.build(name, scope=scope, **body))
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            return web.json_response({"ok": False, "error": str(exc)}, status=400)
        return web.json_response({"ok": True})

    async def _control_markets(self, request: web.Request) -> web.Response:
        """``POST /_sim/markets`` ``{"action": "delist"|"halt"|"resume"|"list", ...}``."""
        try:
            body = await request.json()
            action = body["action"]
            if action == "list":
                market = self.add_market(body["base"], body["quote"], usd_price=body.get("usd_price"))
            elif action in ("delist", "halt", "resume"):
                status = _ACTION_STATUS[action]
                market = self.set_status(body["symbol"], status)
            else:
                raise ValueError(f"unknown action {action!r}")
        except (ValueError, KeyError, TypeError) as exc:
            return web.json_response({"ok": False, "error": str(exc)}, status=400)
        return web.json_response({"ok": True, "symbol": market.native, "status": market.status})

    def clear_faults(self) -> None:
        self.faults.clear()
        for conn in self.conns:
            conn.faults = ConnFaults()
            conn.poke()

    def build_app(self) -> web.Application:
        app = web.Application(middlewares=[self._rest_middleware])
        app.router.add_route("POST", "/_sim/faults", self._control_faults)
        app.router.add_route("DELETE", "/_sim/faults", self._control_faults)
        app.router.add_route("POST", "/_sim/markets", self._control_markets)
        self.routes(app)
        return app

    # -- generation loops ------------------------------------------------------------------
    def emit_trade(self) -> None:
        if not self.trading:
            return
        market = self.trading[self.rng.randrange(len(self.trading))]
        trade = make_trade(market, self.oracle, self.rng, self.clock.now_us(), id_step=self.id_step)
        fault = self.faults.take_bad_trade()
        if fault is not None:
            trade = market.history[-1] = spoil(trade, fault)
        record = TruthRecord(
            exchange=self.name,
            native_symbol=market.native,
            symbol=market.symbol,
            base=market.base,
            quote=market.quote,
            trade_id=self.trade_id_str(trade),
            price=market.fmt_price(trade.price),
            size=market.fmt_size(trade.size),
            side=trade.side,
            ts_ms=trade.ts_us // 1000,
            ts_event=self.ts_event(trade),
            fault=fault,
        )
        self.truth.append(record)
        crossed = self.faults.take_crossed_book()
        with self._book_crossed(market, crossed):
            self.on_trade(market, trade, record)
        requote(market, self.oracle, self.rng, trade.ts_us)
        with self._book_crossed(market, crossed):
            self.on_quote(market)

    @contextlib.contextmanager
    def _book_crossed(self, market: Market, crossed: bool) -> Iterator[None]:
        """While publishing, swap the market's bid and ask when ``crossed`` (the fault)."""
        if not crossed:
            yield
            return
        market.bid, market.ask = market.ask, market.bid
        quote = (market.native, market.fmt_price(market.bid), market.fmt_price(market.ask))
        self.crossed_quotes.append(quote)
        try:
            yield
        finally:
            market.bid, market.ask = market.ask, market.bid

    async def _trade_loop(self) -> None:
        loop = asyncio.get_running_loop()
        tick = 0.05
        carry = 0.0
        last = loop.time()
        while True:
            if self.config.rate <= 0:
                for _ in range(MAX_RATE_BATCH):
                    self.emit_trade()
                await asyncio.sleep(0)
                continue
            await asyncio.sleep(tick)
            now = loop.time()
            carry += self.config.rate * (now - last)
            last = now
            count = int(carry)
            carry -= count
            for _ in range(count):
                self.emit_trade()

    async def _second_loop(self) -> None:
        while True:
            await asyncio.sleep(self.config.ticker_interval_s)
            self.on_second()

    def start_loops(self) -> None:
        self._tasks = [
            asyncio.create_task(self._trade_loop(), name=f"{self.name}-trades"),
            asyncio.create_task(self._second_loop(), name=f"{self.name}-timer"),
        ]

    async def stop_loops(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        for conn in list(self.conns):
            conn.closing = True
            await conn.ws.close(code=1001, message=b"server shutdown")


# -- shared REST helpers ---------------------------------------------------------------------
def history_from(market: Market, trade_id: int) -> int:
    """Index of the first trade with id >= ``trade_id`` in the market's history."""
    return bisect.bisect_left(market.history, trade_id, key=lambda t: t.trade_id)


@dataclass(slots=True)
class Bar:
    """One candle in tick/step units: start (ms), OHLC, base and quote volume, trade count, and the
    taker-buy part of the volumes (Binance's ``takerBuyBase``/``takerBuyQuote``)."""

    start_ms: int
    open: int
    high: int
    low: int
    close: int
    volume: int = 0
    quote_volume: int = 0
    count: int = 0
    buy_volume: int = 0
    buy_quote_volume: int = 0


def bars(market: Market, *, interval_ms: int, lo_ms: int = 0, hi_ms: int = 2**63) -> list[Bar]:
    """Candles of ``interval_ms`` from the market's trades with ``lo_ms <= time <= hi_ms``, oldest
    first; intervals without trades are omitted (as every venue documents). Computed from the
    same history the ground truth records, so a candle is exactly what was traded."""
    out: list[Bar] = []
    for trade in market.history:
        ms = trade.ts_us // 1000
        if not lo_ms <= ms <= hi_ms:
            continue
        start = ms - ms % interval_ms
        if not out or out[-1].start_ms != start:
            out.append(Bar(start, trade.price, trade.price, trade.price, trade.price))
        bar = out[-1]
        bar.high = max(bar.high, trade.price)
        bar.low = min(bar.low, trade.price)
        bar.close = trade.price
        bar.volume += trade.size
        bar.quote_volume += trade.size * trade.price
        bar.count += 1
        if trade.side == "buy":
            bar.buy_volume += trade.size
            bar.buy_quote_volume += trade.size * trade.price
    return out


def int_param(request: web.Request, name: str, default: int | None, *, lo: int, hi: int) -> int | None:
    """Parse an integer query parameter in ``[lo, hi]``; raises ``ValueError`` with the name."""
    raw = request.query.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ValueError(f"parameter {name} must be an integer") from None
    if not lo <= value <= hi:
        raise ValueError(f"parameter {name} must be between {lo} and {hi}")
    return value
