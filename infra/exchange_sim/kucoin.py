"""KuCoin spot public market data: bullet token, websocket topics and REST (exchanges.md §3).

``POST /api/v1/bullet-public`` →
``{"code":"200000","data":{"token":"…","instanceServers":[{"endpoint":"ws://127.0.0.1:P/",
"encrypt":true,"protocol":"websocket","pingInterval":18000,"pingTimeout":10000}]}}``.
Connect ``<endpoint>?token=…&connectId=…``: an unknown token gets an error frame (code 401) and a
close; otherwise ``{"id":"<connectId>","type":"welcome"}``. Client ``{"type":"ping","id":x}`` →
``{"id":x,"type":"pong"}``; ``subscribe``/``unsubscribe`` → ``{"id":"<id>","type":"ack"}`` only
when ``response`` is true. Errors: ``{"id":"…","type":"error","code":n,"data":"…"}`` with 404
unknown topic, 406 topic required, 415 unknown type, 509 more than 100 symbols in one request or
400 per connection, 509 more than 100 client messages in 10 s (then close), 400 ping timeout
(nothing heard for pingInterval + pingTimeout; then close).

Data frames ``{"type":"message","topic":…,"subject":…,"data":{…}}``:
``/market/ticker:{syms}`` (subject ``trade.ticker``), ``/market/ticker:all`` (subject = the
symbol), at most one per symbol per 100 ms; ``/market/match:{syms}`` (``trade.l3match``, ``time``
in ns as a string, ``tradeId`` = ``sequence``, increasing but not consecutive);
``/spotMarket/level1:{syms}`` (``level1``, ``asks``/``bids`` = ``[price, size]``).

REST: ``GET /api/v2/symbols`` (and ``/api/v1/symbols``; delisted markets are absent, halted ones
have ``enableTrading`` false), ``/api/v1/market/orderbook/level1?symbol=``,
``/api/v1/market/histories?symbol=`` (the last 100 trades only, oldest first),
``/api/v1/market/allTickers``. Envelope ``{"code":"200000","data":…}``; budget overrun is HTTP
429 with ``{"code":"429000",…}``; every answer has ``gw-ratelimit-limit/-remaining/-reset``.
"""

from __future__ import annotations

import asyncio
import json
import random
import time
from typing import Any

from aiohttp import web

from infra.exchange_sim.markets import Market, Trade, fmt_units
from infra.exchange_sim.server import Bar, Connection, ExchangeServer, RestError, bars, int_param
from infra.exchange_sim.truth import TruthRecord

MAX_TOPICS_PER_REQUEST = 100
MAX_TOPICS_PER_SESSION = 400
HISTORY_DEPTH = 100
CANDLES_MAX_ROWS = 1500
_CANDLE_TYPES_S = {
    "1min": 60,
    "3min": 180,
    "5min": 300,
    "15min": 900,
    "30min": 1800,
    "1hour": 3600,
    "2hour": 7200,
    "4hour": 14400,
    "6hour": 21600,
    "8hour": 28800,
    "12hour": 43200,
    "1day": 86400,
    "1week": 604800,
}
TICKER_MIN_INTERVAL_US = 100_000
_PREFIXES = {"/market/ticker": "ticker", "/market/match": "match", "/spotMarket/level1": "level1"}


def _dumps(obj: Any) -> str:
    return json.dumps(obj, separators=(",", ":"))


def _order_id(trade_id: int, salt: int) -> str:
    """A deterministic 24-hex-digit order id."""
    return f"{(trade_id * 0x9E3779B97F4A7C15 + salt) % 16**24:024x}"


# -- payload builders (pure) -----------------------------------------------------------------
def message(topic: str, subject: str, data: dict[str, Any]) -> str:
    """The data-frame envelope ``{"type":"message","topic","subject","data"}``."""
    return _dumps({"type": "message", "topic": topic, "subject": subject, "data": data})


def ticker_data(market: Market, trade: Trade) -> dict[str, Any]:
    """``{bestAsk, bestAskSize, bestBid, bestBidSize, price, size, sequence, time(ms)}``."""
    return {
        "bestAsk": market.fmt_price(market.ask),
        "bestAskSize": market.fmt_size(market.ask_size),
        "bestBid": market.fmt_price(market.bid),
        "bestBidSize": market.fmt_size(market.bid_size),
        "price": market.fmt_price(trade.price),
        "size": market.fmt_size(trade.size),
        "sequence": str(trade.seq),
        "time": trade.ts_us // 1000,
    }


def match_data(market: Market, trade: Trade) -> dict[str, Any]:
    """``{symbol, sequence, tradeId, side (taker), price, size, type, makerOrderId, takerOrderId,
    time (ns, string)}``."""
    return {
        "symbol": market.native,
        "sequence": str(trade.trade_id),
        "tradeId": str(trade.trade_id),
        "side": trade.side,
        "price": market.fmt_price(trade.price),
        "size": market.fmt_size(trade.size),
        "type": "match",
        "makerOrderId": _order_id(trade.trade_id, 1),
        "takerOrderId": _order_id(trade.trade_id, 2),
        "time": str(trade.ts_us * 1000),
    }


def level1_data(market: Market) -> dict[str, Any]:
    """``{asks:[px,sz], bids:[px,sz], timestamp(ms)}``."""
    return {
        "asks": [market.fmt_price(market.ask), market.fmt_size(market.ask_size)],
        "bids": [market.fmt_price(market.bid), market.fmt_size(market.bid_size)],
        "timestamp": market.book_ts_us // 1000,
    }


def symbol_row(market: Market) -> dict[str, Any]:
    """One ``/api/v2/symbols`` element."""
    return {
        "symbol": market.native,
        "name": market.native,
        "baseCurrency": market.base,
        "quoteCurrency": market.quote,
        "feeCurrency": market.quote,
        "market": "USDS" if market.quote in ("USDT", "USDC") else market.quote,
        "baseMinSize": fmt_units(1, market.size_decimals),
        "quoteMinSize": "0.1",
        "baseMaxSize": "10000000000",
        "quoteMaxSize": "99999999",
        "baseIncrement": fmt_units(1, market.size_decimals),
        "quoteIncrement": fmt_units(1, market.price_decimals),
        "priceIncrement": fmt_units(1, market.price_decimals),
        "priceLimitRate": "0.1",
        "minFunds": "0.1",
        "isMarginEnabled": False,
        "enableTrading": market.status == "trading",
        "st": False,
        "callauctionIsEnabled": False,
    }


def history_row(market: Market, trade: Trade) -> dict[str, Any]:
    """``/api/v1/market/histories`` row ``{sequence, price, size, side(taker), time(ns)}``."""
    return {
        "sequence": str(trade.trade_id),
        "price": market.fmt_price(trade.price),
        "size": market.fmt_size(trade.size),
        "side": trade.side,
        "time": trade.ts_us * 1000,
    }


def candle_row(market: Market, bar: Bar) -> list[str]:
    """``/api/v1/market/candles`` row ``[time (s), open, close, high, low, volume, turnover]``."""
    return [
        str(bar.start_ms // 1000),
        market.fmt_price(bar.open),
        market.fmt_price(bar.close),
        market.fmt_price(bar.high),
        market.fmt_price(bar.low),
        market.fmt_size(bar.volume),
        fmt_units(bar.quote_volume, market.price_decimals + market.size_decimals),
    ]


def ok(data: Any) -> web.Response:
    return web.json_response({"code": "200000", "data": data})


class KucoinServer(ExchangeServer):
    name = "kucoin"
    default_weight = (2000, 30.0)
    default_incoming = (100, 10.0)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._tokens: set[str] = set()
        self._token_rng = random.Random(f"kucoin-tokens-{self.config.seed}")
        self._last_ticker_us: dict[str, int] = {}

    def native_name(self, base: str, quote: str) -> str:
        return f"{base}-{quote}"

    def first_ids(self) -> tuple[int, int, int]:
        first = self.rng.randint(10**15, 10**16)
        return (first, 1, first)

    def id_step(self, rng: random.Random) -> int:
        return rng.randint(1, 5)

    def ts_event(self, trade: Trade) -> str:
        return str(trade.ts_us * 1000)

    @property
    def ping_interval_ms(self) -> int:
        return int((self.config.ping_interval_s or 18.0) * 1000)

    @property
    def ping_timeout_ms(self) -> int:
        return int((self.config.ping_timeout_s or 10.0) * 1000)

    def routes(self, app: web.Application) -> None:
        app.router.add_get("/", self.handle_ws)
        app.router.add_post("/api/v1/bullet-public", self.bullet)
        app.router.add_get("/api/v2/symbols", self.symbols)
        app.router.add_get("/api/v1/symbols", self.symbols)
        app.router.add_get("/api/v1/market/orderbook/level1", self.level1)
        app.router.add_get("/api/v1/market/histories", self.histories)
        app.router.add_get("/api/v1/market/allTickers", self.all_tickers)
        app.router.add_get("/api/v1/market/candles", self.candles)

    # -- websocket -------------------------------------------------------------------------
    async def on_open(self, conn: Connection) -> None:
        connect_id = conn.request.query.get("connectId") or conn.id
        conn.props["connect_id"] = connect_id
        if conn.request.query.get("token") not in self._tokens:
            await conn.ws.send_str(
                _dumps({"id": connect_id, "type": "error", "code": 401, "data": "token is invalid"})
            )
            await conn.ws.close(code=1000, message=b"invalid token")
            return
        conn.send_control({"id": connect_id, "type": "welcome"})

    def _error(self, conn: Connection, req_id: Any, code: int, data: str) -> None:
        rid = str(req_id) if req_id is not None else conn.props["connect_id"]
        conn.send_control({"id": rid, "type": "error", "code": code, "data": data})

    async def on_text(self, conn: Connection, text: str) -> None:
        try:
            msg = json.loads(text)
        except ValueError:
            self._error(conn, None, 415, "invalid command type")
            return
        if not isinstance(msg, dict):
            self._error(conn, None, 415, "invalid command type")
            return
        kind, req_id = msg.get("type"), msg.get("id")
        if kind == "ping":
            if not conn.faults.no_pong:
                conn.send_control({"id": req_id, "type": "pong"})
        elif kind in ("subscribe", "unsubscribe"):
            self._on_subscribe(conn, msg)
        else:
            self._error(conn, req_id, 415, "invalid command type")

    def _on_subscribe(self, conn: Connection, msg: dict[str, Any]) -> None:
        req_id, topic = msg.get("id"), msg.get("topic")
        if not isinstance(topic, str) or not topic:
            self._error(conn, req_id, 406, "topic is required")
            return
        prefix, _, symbols_part = topic.partition(":")
        channel = _PREFIXES.get(prefix)
        symbols = [s for s in symbols_part.split(",") if s]
        if channel is None or not symbols or ("all" in symbols and (channel != "ticker" or len(symbols) > 1)):
            self._error(conn, req_id, 404, f"topic {topic} is not found")
            return
        keys = [("ticker_all",)] if symbols == ["all"] else [(channel, s) for s in symbols]
        if msg["type"] == "subscribe":
            if self.faults.take_reject():
                self._error(conn, req_id, 509, "service busy, subscription rejected")
                return
            if len(keys) > MAX_TOPICS_PER_REQUEST:
                limit = MAX_TOPICS_PER_REQUEST
                self._error(
                    conn, req_id, 509, f"exceed max subscription count limitation of {limit} per time"
                )
                return
            if len(conn.subs | set(keys)) > MAX_TOPICS_PER_SESSION:
                limit = MAX_TOPICS_PER_SESSION
                self._error(
                    conn, req_id, 509, f"exceed max subscription count limitation of {limit} per session"
                )
                return
            for key in keys:
                self.subscribe(conn, key)
        else:
            for key in keys:
                self.unsubscribe(conn, key)
        if msg.get("response") is True:
            conn.send_control({"id": str(req_id), "type": "ack"})

    async def on_flood(self, conn: Connection) -> None:
        await conn.ws.send_str(
            _dumps(
                {
                    "id": conn.props.get("connect_id", conn.id),
                    "type": "error",
                    "code": 509,
                    "data": "exceed max permits per second",
                }
            )
        )
        await conn.ws.close(code=1008, message=b"too many requests")

    async def keepalive(self, conn: Connection) -> None:
        idle_limit = (self.ping_interval_ms + self.ping_timeout_ms) / 1000
        while True:
            await asyncio.sleep(min(idle_limit / 4, 1.0))
            now = time.monotonic()
            if now - conn.opened >= self.config.max_connection_s:
                await conn.ws.close(code=1000, message=b"connection lifetime reached")
                return
            if conn.silent():
                conn.last_heard = now
                continue
            if now - conn.last_heard > idle_limit:
                await conn.ws.send_str(
                    _dumps(
                        {"id": conn.props["connect_id"], "type": "error", "code": 400, "data": "Ping timeout"}
                    )
                )
                await conn.ws.close(code=1000, message=b"ping timeout")
                return

    # -- data ------------------------------------------------------------------------------
    def on_trade(self, market: Market, trade: Trade, record: TruthRecord) -> None:
        sym = market.native
        key = ("match", sym)
        if key in self.index:
            self.publish(
                key, message(f"/market/match:{sym}", "trade.l3match", match_data(market, trade)), (record,)
            )
        if self.wants(("ticker", sym), ("ticker_all",)):
            if trade.ts_us - self._last_ticker_us.get(sym, 0) < TICKER_MIN_INTERVAL_US:
                return
            self._last_ticker_us[sym] = trade.ts_us
            data = ticker_data(market, trade)
            self.publish(("ticker", sym), message(f"/market/ticker:{sym}", "trade.ticker", data))
            self.publish(("ticker_all",), message("/market/ticker:all", sym, data))

    def on_quote(self, market: Market) -> None:
        key = ("level1", market.native)
        if key in self.index:
            self.publish(key, message(f"/spotMarket/level1:{market.native}", "level1", level1_data(market)))

    # -- REST ------------------------------------------------------------------------------
    def rest_weight(self, request: web.Request) -> int:
        return {
            "/api/v1/bullet-public": 10,
            "/api/v2/symbols": 4,
            "/api/v1/symbols": 4,
            "/api/v1/market/orderbook/level1": 2,
            "/api/v1/market/histories": 3,
            "/api/v1/market/allTickers": 15,
            "/api/v1/market/candles": 3,
        }.get(request.path, 1)

    def rate_headers(self, used: int, now: float) -> dict[str, str]:
        return {
            "gw-ratelimit-limit": str(self.weight.limit),
            "gw-ratelimit-remaining": str(max(0, self.weight.limit - used)),
            "gw-ratelimit-reset": str(int(self.weight.reset_in(now) * 1000)),
        }

    def rest_error_body(self, status: int, message: str) -> Any:
        if status == 429:
            return {"code": "429000", "msg": "Too Many Requests"}
        return {"code": "500000", "msg": f"Internal Server Error: {message}"}

    def _market_param(self, request: web.Request) -> Market | None:
        native = request.query.get("symbol")
        if not native:
            raise RestError(400, {"code": "400100", "msg": "symbol is required"})
        return self.markets.get(native)

    async def bullet(self, request: web.Request) -> web.Response:
        token = "".join(self._token_rng.choice("0123456789abcdefABCDEF") for _ in range(48))
        self._tokens.add(token)
        server = {
            "endpoint": self.ws_url,
            "encrypt": True,
            "protocol": "websocket",
            "pingInterval": self.ping_interval_ms,
            "pingTimeout": self.ping_timeout_ms,
        }
        return ok({"token": token, "instanceServers": [server]})

    async def symbols(self, request: web.Request) -> web.Response:
        return ok([symbol_row(m) for m in self.markets.values() if m.status != "delisted"])

    async def level1(self, request: web.Request) -> web.Response:
        market = self._market_param(request)
        if market is None:
            return ok(None)
        last = market.last
        return ok(
            {
                "time": int(time.time() * 1000),
                "sequence": str(market.seq),
                "price": market.fmt_price(last.price if last else market.open_price),
                "size": market.fmt_size(last.size if last else 0),
                "bestBid": market.fmt_price(market.bid),
                "bestBidSize": market.fmt_size(market.bid_size),
                "bestAsk": market.fmt_price(market.ask),
                "bestAskSize": market.fmt_size(market.ask_size),
            }
        )

    async def histories(self, request: web.Request) -> web.Response:
        market = self._market_param(request)
        if market is None:
            return ok([])
        return ok([history_row(market, t) for t in market.history[-HISTORY_DEPTH:]])

    async def all_tickers(self, request: web.Request) -> web.Response:
        rows = []
        for m in self.markets.values():
            if m.status == "delisted":
                continue
            last = m.last
            rows.append(
                {
                    "symbol": m.native,
                    "symbolName": m.native,
                    "buy": m.fmt_price(m.bid),
                    "bestBidSize": m.fmt_size(m.bid_size),
                    "sell": m.fmt_price(m.ask),
                    "bestAskSize": m.fmt_size(m.ask_size),
                    "last": m.fmt_price(last.price if last else m.open_price),
                    "high": m.fmt_price(m.high),
                    "low": m.fmt_price(m.low),
                    "vol": m.fmt_size(m.volume),
                    "volValue": m.fmt_quote_volume(),
                }
            )
        return ok({"time": int(time.time() * 1000), "ticker": rows})

    async def candles(self, request: web.Request) -> web.Response:
        """Candles with ``startAt <= time <= endAt`` (seconds), newest first, at most 1500."""
        market = self._market_param(request)
        interval_s = _CANDLE_TYPES_S.get(request.query.get("type", ""))
        if interval_s is None:
            raise RestError(400, {"code": "400100", "msg": "type is invalid"})
        try:
            start_s = int_param(request, "startAt", 0, lo=0, hi=2**40) or 0
            end_s = int_param(request, "endAt", 0, lo=0, hi=2**40) or 0
        except ValueError as exc:
            raise RestError(400, {"code": "400100", "msg": str(exc)}) from None
        if market is None:
            return ok([])
        hi_ms = end_s * 1000 + 999 if end_s else 2**63
        candles = bars(market, interval_ms=interval_s * 1000, lo_ms=start_s * 1000, hi_ms=hi_ms)
        candles = [b for b in candles if b.start_ms // 1000 <= (end_s or 2**40)]
        return ok([candle_row(market, b) for b in reversed(candles[-CANDLES_MAX_ROWS:])])
