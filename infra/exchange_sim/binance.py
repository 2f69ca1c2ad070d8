"""Binance spot public market data: REST ``/api/v3/*`` and websocket streams (exchanges.md §2).

Websocket (same port as REST):

* raw ``/ws/<stream>`` (or ``/ws`` + ``SUBSCRIBE``): each frame is the bare payload;
* combined ``/stream?streams=a/b``: each frame is ``{"stream":"<name>","data":<payload>}``.

Streams: ``<sym>@trade``, ``<sym>@aggTrade``, ``<sym>@bookTicker``, ``<sym>@miniTicker`` and
``!miniTicker@arr`` (every ``ticker_interval_s``, only markets that traded since the last one).
Method frames ``SUBSCRIBE``/``UNSUBSCRIBE``/``LIST_SUBSCRIPTIONS``/``SET_PROPERTY``/
``GET_PROPERTY`` answer ``{"result":…,"id":…}``; errors ``{"code":n,"msg":"…","id":…}`` with
0 unknown property, 1 bad value type, 2 invalid request, 3 invalid JSON. The server pings every
``ping_interval_s`` (20 s) and closes (1008) when no pong echoing a ping arrives within
``ping_timeout_s`` (60 s); more than 5 incoming messages (text, ping, pong) in one second close
the connection with 1008; at most 1024 streams per connection (a longer ``/stream`` URL is
refused with HTTP 400, a ``SUBSCRIBE`` beyond it gets error code 2).

REST weights and shapes follow §2.5; every answer carries ``X-MBX-USED-WEIGHT-1M`` (the unit
follows the configured window) and a budget overrun is HTTP 429 + ``Retry-After`` +
``{"code":-1003,…}``.
"""

from __future__ import annotations

import asyncio
import bisect
import json
import re
import time
from typing import Any

from aiohttp import web

from infra.exchange_sim.markets import Market, Trade, fmt_units
from infra.exchange_sim.server import (
    Bar,
    Connection,
    ExchangeServer,
    RestError,
    bars,
    history_from,
    int_param,
)
from infra.exchange_sim.truth import TruthRecord

MAX_STREAMS = 1024
ALL_MINI = "!miniTicker@arr"
_STREAM_RE = re.compile(r"^([a-z0-9]+)@(trade|aggTrade|bookTicker|miniTicker)$")
_STATUS = {"trading": "TRADING", "halted": "HALT", "delisted": "BREAK"}
_INTERVAL_MS = {
    "1s": 1_000,
    "1m": 60_000,
    "3m": 180_000,
    "5m": 300_000,
    "15m": 900_000,
    "30m": 1_800_000,
    "1h": 3_600_000,
    "2h": 7_200_000,
    "4h": 14_400_000,
    "6h": 21_600_000,
    "8h": 28_800_000,
    "12h": 43_200_000,
    "1d": 86_400_000,
}


def _dumps(obj: Any) -> str:
    return json.dumps(obj, separators=(",", ":"))


# -- payload builders (pure) -----------------------------------------------------------------
def trade_payload(market: Market, trade: Trade, event_ms: int) -> str:
    """``{"e":"trade","E":ms,"s":"BTCUSDT","t":id,"p":"…","q":"…","T":ms,"m":bool,"M":true}``."""
    return _dumps(
        {
            "e": "trade",
            "E": event_ms,
            "s": market.native,
            "t": trade.trade_id,
            "p": market.fmt_price(trade.price),
            "q": market.fmt_size(trade.size),
            "T": trade.ts_us // 1000,
            "m": trade.side == "sell",
            "M": True,
        }
    )


def agg_trade_payload(market: Market, trade: Trade, event_ms: int) -> str:
    """``{"e":"aggTrade","E","s","a","p","q","f","l","T","m","M"}``; one agg per trade here."""
    return _dumps(
        {
            "e": "aggTrade",
            "E": event_ms,
            "s": market.native,
            "a": trade.agg_id,
            "p": market.fmt_price(trade.price),
            "q": market.fmt_size(trade.size),
            "f": trade.trade_id,
            "l": trade.trade_id,
            "T": trade.ts_us // 1000,
            "m": trade.side == "sell",
            "M": True,
        }
    )


def book_ticker_payload(market: Market) -> dict[str, Any]:
    """``{"u":update_id,"s","b","B","a","A"}`` (no event type, no event time)."""
    return {
        "u": market.book_seq,
        "s": market.native,
        "b": market.fmt_price(market.bid),
        "B": market.fmt_size(market.bid_size),
        "a": market.fmt_price(market.ask),
        "A": market.fmt_size(market.ask_size),
    }


def mini_ticker_payload(market: Market, event_ms: int) -> dict[str, Any]:
    """``{"e":"24hrMiniTicker","E","s","c","o","h","l","v","q"}``."""
    last = market.last
    close = last.price if last is not None else market.open_price
    return {
        "e": "24hrMiniTicker",
        "E": event_ms,
        "s": market.native,
        "c": market.fmt_price(close),
        "o": market.fmt_price(market.open_price),
        "h": market.fmt_price(market.high),
        "l": market.fmt_price(market.low),
        "v": market.fmt_size(market.volume),
        "q": market.fmt_quote_volume(),
    }


def trade_row(market: Market, trade: Trade) -> dict[str, Any]:
    """``/api/v3/trades`` and ``historicalTrades`` row."""
    return {
        "id": trade.trade_id,
        "price": market.fmt_price(trade.price),
        "qty": market.fmt_size(trade.size),
        "quoteQty": fmt_units(trade.price * trade.size, market.price_decimals + market.size_decimals),
        "time": trade.ts_us // 1000,
        "isBuyerMaker": trade.side == "sell",
        "isBestMatch": True,
    }


def agg_row(market: Market, trade: Trade) -> dict[str, Any]:
    return {
        "a": trade.agg_id,
        "p": market.fmt_price(trade.price),
        "q": market.fmt_size(trade.size),
        "f": trade.trade_id,
        "l": trade.trade_id,
        "T": trade.ts_us // 1000,
        "m": trade.side == "sell",
        "M": True,
    }


def symbol_info(market: Market) -> dict[str, Any]:
    """One ``exchangeInfo.symbols[]`` element."""
    tick = fmt_units(1, market.price_decimals)
    step = fmt_units(1, market.size_decimals)
    return {
        "symbol": market.native,
        "status": _STATUS[market.status],
        "baseAsset": market.base,
        "baseAssetPrecision": 8,
        "quoteAsset": market.quote,
        "quotePrecision": 8,
        "quoteAssetPrecision": 8,
        "orderTypes": ["LIMIT", "LIMIT_MAKER", "MARKET", "STOP_LOSS_LIMIT", "TAKE_PROFIT_LIMIT"],
        "icebergAllowed": True,
        "ocoAllowed": True,
        "isSpotTradingAllowed": True,
        "isMarginTradingAllowed": False,
        "filters": [
            {"filterType": "PRICE_FILTER", "minPrice": tick, "maxPrice": "10000000.00", "tickSize": tick},
            {"filterType": "LOT_SIZE", "minQty": step, "maxQty": "9000000.00", "stepSize": step},
        ],
        "permissions": [],
        "permissionSets": [["SPOT"]],
        "defaultSelfTradePreventionMode": "EXPIRE_MAKER",
        "allowedSelfTradePreventionModes": ["EXPIRE_TAKER", "EXPIRE_MAKER", "EXPIRE_BOTH"],
    }


def kline_rows(market: Market, candles: list[Bar], interval_ms: int) -> list[list[Any]]:
    """``[openTime, open, high, low, close, baseVol, closeTime, quoteVol, numTrades,
    takerBuyBase, takerBuyQuote, "0"]`` per bar (exchanges.md 2.5)."""
    scale = market.price_decimals + market.size_decimals
    return [
        [
            b.start_ms,
            market.fmt_price(b.open),
            market.fmt_price(b.high),
            market.fmt_price(b.low),
            market.fmt_price(b.close),
            market.fmt_size(b.volume),
            b.start_ms + interval_ms - 1,
            fmt_units(b.quote_volume, scale),
            b.count,
            market.fmt_size(b.buy_volume),
            fmt_units(b.buy_quote_volume, scale),
            "0",
        ]
        for b in candles
    ]


def wrap_combined(stream: str, payload: str) -> str:
    """Combined-stream wrapper ``{"stream":"<name>","data":<payload>}``."""
    return f'{{"stream":"{stream}","data":{payload}}}'


def _stream_key(name: str) -> str | None:
    """Normalise a stream name (symbol part lower case) or ``None`` when it is not one we serve."""
    if name == ALL_MINI:
        return name
    sym, _, kind = name.partition("@")
    key = f"{sym.lower()}@{kind}"
    return key if _STREAM_RE.match(key) else None


class BinanceServer(ExchangeServer):
    name = "binance"
    default_weight = (6000, 60.0)
    default_incoming = (5, 1.0)

    def native_name(self, base: str, quote: str) -> str:
        return f"{base}{quote}"

    # -- websocket -------------------------------------------------------------------------
    def routes(self, app: web.Application) -> None:
        app.router.add_get("/ws", self.handle_ws)
        app.router.add_get("/ws/{stream}", self.handle_ws)
        app.router.add_get("/stream", self.handle_ws)
        app.router.add_get("/api/v3/ping", self.ping)
        app.router.add_get("/api/v3/time", self.server_time)
        app.router.add_get("/api/v3/exchangeInfo", self.exchange_info)
        app.router.add_get("/api/v3/ticker/bookTicker", self.book_ticker)
        app.router.add_get("/api/v3/trades", self.trades)
        app.router.add_get("/api/v3/historicalTrades", self.historical_trades)
        app.router.add_get("/api/v3/aggTrades", self.agg_trades)
        app.router.add_get("/api/v3/klines", self.klines)

    def _url_streams(self, request: web.Request) -> list[str]:
        if request.path == "/stream":
            return [s for s in request.query.get("streams", "").split("/") if s]
        stream = request.match_info.get("stream")
        return [stream] if stream else []

    async def accept(self, request: web.Request) -> web.StreamResponse | None:
        streams = self._url_streams(request)
        if len(streams) > MAX_STREAMS:
            msg = f"Too many streams: {len(streams)} requested, at most {MAX_STREAMS} per connection."
            return web.json_response({"code": -1, "msg": msg}, status=400)
        if any(_stream_key(s) is None for s in streams):
            return web.json_response({"code": -1, "msg": "Invalid stream name."}, status=400)
        return None

    async def on_open(self, conn: Connection) -> None:
        if conn.request.path == "/stream":
            conn.wrap = wrap_combined
        for name in self._url_streams(conn.request):
            key = _stream_key(name)
            if key is not None:
                self.subscribe(conn, key)
        conn.props["pings"] = set()
        conn.props["last_pong"] = time.monotonic()

    async def on_text(self, conn: Connection, text: str) -> None:
        try:
            msg = json.loads(text)
        except ValueError:
            conn.send_control({"code": 3, "msg": "Invalid JSON: the frame is not valid JSON.", "id": None})
            return
        if not isinstance(msg, dict) or not isinstance(msg.get("method"), str):
            req_id = msg.get("id") if isinstance(msg, dict) else None
            conn.send_control({"code": 2, "msg": "Invalid request: method is required.", "id": req_id})
            return
        req_id, method, params = msg.get("id"), msg["method"], msg.get("params", [])
        if method in ("SUBSCRIBE", "UNSUBSCRIBE"):
            self._on_subscribe(conn, req_id, method, params)
        elif method == "LIST_SUBSCRIPTIONS":
            conn.send_control({"result": sorted(str(k) for k in conn.subs), "id": req_id})
        elif method in ("SET_PROPERTY", "GET_PROPERTY"):
            self._on_property(conn, req_id, method, params)
        else:
            conn.send_control({"code": 2, "msg": f"Invalid request: unknown method {method}.", "id": req_id})

    def _on_subscribe(self, conn: Connection, req_id: Any, method: str, params: Any) -> None:
        if not isinstance(params, list) or not all(isinstance(p, str) for p in params):
            conn.send_control({"code": 1, "msg": "Invalid value type: params must be strings.", "id": req_id})
            return
        keys = [_stream_key(p) for p in params]
        if any(k is None for k in keys):
            conn.send_control({"code": 2, "msg": "Invalid request: invalid stream name.", "id": req_id})
            return
        if method == "SUBSCRIBE":
            if self.faults.take_reject():
                conn.send_control({"code": 2, "msg": "Invalid request: subscription rejected.", "id": req_id})
                return
            if len(conn.subs | set(keys)) > MAX_STREAMS:
                msg = f"Invalid request: at most {MAX_STREAMS} streams per connection."
                conn.send_control({"code": 2, "msg": msg, "id": req_id})
                return
            for key in keys:
                self.subscribe(conn, key)
        else:
            for key in keys:
                self.unsubscribe(conn, key)
        conn.send_control({"result": None, "id": req_id})

    def _on_property(self, conn: Connection, req_id: Any, method: str, params: Any) -> None:
        if not isinstance(params, list) or not params or params[0] != "combined":
            conn.send_control({"code": 0, "msg": "Unknown property.", "id": req_id})
            return
        if method == "GET_PROPERTY":
            conn.send_control({"result": conn.wrap is not None, "id": req_id})
            return
        if len(params) != 2 or not isinstance(params[1], bool):
            conn.send_control({"code": 1, "msg": "Invalid value type: expected Boolean.", "id": req_id})
            return
        conn.wrap = wrap_combined if params[1] else None
        conn.send_control({"result": None, "id": req_id})

    def on_pong(self, conn: Connection, payload: bytes) -> None:
        pings: set[bytes] = conn.props["pings"]
        if bytes(payload) in pings:  # unsolicited pongs do not keep the link alive
            pings.clear()
            conn.props["last_pong"] = time.monotonic()

    async def keepalive(self, conn: Connection) -> None:
        interval = self.config.ping_interval_s or 20.0
        timeout = self.config.ping_timeout_s or 60.0
        while True:
            await asyncio.sleep(min(interval, timeout / 4))
            now = time.monotonic()
            if now - conn.opened >= self.config.max_connection_s:
                await conn.ws.close(code=1000, message=b"connection lifetime reached")
                return
            if conn.silent():
                conn.props["last_pong"] = now
                continue
            if now - conn.props["last_pong"] > timeout:
                await conn.ws.close(code=1008, message=b"pong timeout")
                return
            if now - conn.props.get("last_ping", 0.0) >= interval:
                payload = str(int(time.time() * 1000)).encode()
                conn.props["pings"].add(payload)
                conn.props["last_ping"] = now
                await conn.ws.ping(payload)

    # -- data ------------------------------------------------------------------------------
    def on_trade(self, market: Market, trade: Trade, record: TruthRecord) -> None:
        sym = market.native.lower()
        event_ms = int(time.time() * 1000)
        key = f"{sym}@trade"
        if key in self.index:
            self.publish(key, trade_payload(market, trade, event_ms), (record,), stream=key)
        key = f"{sym}@aggTrade"
        if key in self.index:
            self.publish(key, agg_trade_payload(market, trade, event_ms), (record,), stream=key)

    def on_quote(self, market: Market) -> None:
        key = f"{market.native.lower()}@bookTicker"
        if key in self.index:
            self.publish(key, _dumps(book_ticker_payload(market)), stream=key)

    def on_second(self) -> None:
        event_ms = int(time.time() * 1000)
        changed = [m for m in self.markets.values() if m.changed]
        for market in changed:
            market.changed = False
        if changed and ALL_MINI in self.index:
            payload = _dumps([mini_ticker_payload(m, event_ms) for m in changed])
            self.publish(ALL_MINI, payload, stream=ALL_MINI)
        for market in changed:
            key = f"{market.native.lower()}@miniTicker"
            if key in self.index:
                self.publish(key, _dumps(mini_ticker_payload(market, event_ms)), stream=key)

    # -- REST ------------------------------------------------------------------------------
    def rest_weight(self, request: web.Request) -> int:
        path = request.path
        if path.endswith("/ticker/bookTicker"):
            return 2 if "symbol" in request.query else 4
        return {
            "/api/v3/exchangeInfo": 20,
            "/api/v3/trades": 25,
            "/api/v3/historicalTrades": 25,
            "/api/v3/aggTrades": 4,
            "/api/v3/klines": 2,
        }.get(path, 1)

    def _interval_name(self) -> str:
        window = self.weight.window_s
        return f"{int(window // 60)}M" if window % 60 == 0 else f"{int(window)}S"

    def rate_headers(self, used: int, now: float) -> dict[str, str]:
        return {f"X-MBX-USED-WEIGHT-{self._interval_name()}": str(used)}

    def rest_error_body(self, status: int, message: str) -> Any:
        if status == 429:
            msg = f"Too many requests; weight budget {self.weight.limit} per {self._interval_name()} used up."
            return {"code": -1003, "msg": msg}
        return {"code": -1001, "msg": f"Internal error; {message}."}

    def _market_param(self, request: web.Request) -> Market:
        native = request.query.get("symbol")
        if not native:
            raise RestError(400, {"code": -1102, "msg": "Mandatory parameter 'symbol' was not sent."})
        market = self.markets.get(native)
        if market is None:
            raise RestError(400, {"code": -1121, "msg": "Invalid symbol."})
        return market

    @staticmethod
    def _int(request: web.Request, name: str, default: int | None, lo: int, hi: int) -> int | None:
        try:
            return int_param(request, name, default, lo=lo, hi=hi)
        except ValueError as exc:
            raise RestError(400, {"code": -1100, "msg": f"Illegal parameter: {exc}."}) from None

    async def ping(self, request: web.Request) -> web.Response:
        return web.json_response({})

    async def server_time(self, request: web.Request) -> web.Response:
        return web.json_response({"serverTime": int(time.time() * 1000)})

    async def exchange_info(self, request: web.Request) -> web.Response:
        markets = list(self.markets.values())
        if "symbol" in request.query:
            markets = [self._market_param(request)]
        elif "symbols" in request.query:
            try:
                wanted = json.loads(request.query["symbols"])
            except ValueError:
                raise RestError(400, {"code": -1100, "msg": "Illegal characters in 'symbols'."}) from None
            if not isinstance(wanted, list) or any(w not in self.markets for w in wanted):
                raise RestError(400, {"code": -1121, "msg": "Invalid symbol."})
            markets = [self.markets[w] for w in wanted]
        status = request.query.get("symbolStatus")
        if status:
            markets = [m for m in markets if _STATUS[m.status] == status]
        window = self.weight.window_s
        interval = ("MINUTE", int(window // 60)) if window % 60 == 0 else ("SECOND", int(window))
        body = {
            "timezone": "UTC",
            "serverTime": int(time.time() * 1000),
            "rateLimits": [
                {
                    "rateLimitType": "REQUEST_WEIGHT",
                    "interval": interval[0],
                    "intervalNum": interval[1],
                    "limit": self.weight.limit,
                },
                {"rateLimitType": "RAW_REQUESTS", "interval": "MINUTE", "intervalNum": 5, "limit": 300000},
            ],
            "exchangeFilters": [],
            "symbols": [symbol_info(m) for m in markets],
        }
        return web.json_response(body)

    async def book_ticker(self, request: web.Request) -> web.Response:
        def row(m: Market) -> dict[str, str]:
            p = book_ticker_payload(m)
            return {
                "symbol": m.native,
                "bidPrice": p["b"],
                "bidQty": p["B"],
                "askPrice": p["a"],
                "askQty": p["A"],
            }

        if "symbol" in request.query:
            return web.json_response(row(self._market_param(request)))
        markets = list(self.markets.values())
        if "symbols" in request.query:
            try:
                wanted = json.loads(request.query["symbols"])
            except ValueError:
                raise RestError(400, {"code": -1100, "msg": "Illegal characters in 'symbols'."}) from None
            if not isinstance(wanted, list) or any(w not in self.markets for w in wanted):
                raise RestError(400, {"code": -1121, "msg": "Invalid symbol."})
            markets = [self.markets[w] for w in wanted]
        return web.json_response([row(m) for m in markets])

    async def trades(self, request: web.Request) -> web.Response:
        market = self._market_param(request)
        limit = self._int(request, "limit", 500, 1, 1000) or 500
        return web.json_response([trade_row(market, t) for t in market.history[-limit:]])

    async def historical_trades(self, request: web.Request) -> web.Response:
        """Trades from ``fromId`` (inclusive) onwards, or the most recent ones, oldest first."""
        market = self._market_param(request)
        limit = self._int(request, "limit", 500, 1, 1000) or 500
        from_id = self._int(request, "fromId", None, 0, 2**63 - 1)
        if from_id is None:
            page = market.history[-limit:]
        else:
            start = history_from(market, from_id)
            page = market.history[start : start + limit]
        return web.json_response([trade_row(market, t) for t in page])

    async def agg_trades(self, request: web.Request) -> web.Response:
        market = self._market_param(request)
        limit = self._int(request, "limit", 500, 1, 1000) or 500
        from_id = self._int(request, "fromId", None, 0, 2**63 - 1)
        start_ms = self._int(request, "startTime", None, 0, 2**63 - 1)
        end_ms = self._int(request, "endTime", None, 0, 2**63 - 1)
        history = market.history
        if from_id is not None:
            start = bisect.bisect_left(history, from_id, key=lambda t: t.agg_id)
            page = history[start : start + limit]
        elif start_ms is not None or end_ms is not None:
            lo, hi = start_ms or 0, end_ms if end_ms is not None else 2**63
            page = [t for t in history if lo <= t.ts_us // 1000 <= hi][:limit]
        else:
            page = history[-limit:]
        return web.json_response([agg_row(market, t) for t in page])

    async def klines(self, request: web.Request) -> web.Response:
        market = self._market_param(request)
        interval = request.query.get("interval", "")
        if interval not in _INTERVAL_MS:
            raise RestError(400, {"code": -1120, "msg": "Invalid interval."})
        limit = self._int(request, "limit", 500, 1, 1000) or 500
        start_ms = self._int(request, "startTime", None, 0, 2**63 - 1)
        end_ms = self._int(request, "endTime", None, 0, 2**63 - 1)
        lo, hi = start_ms or 0, end_ms if end_ms is not None else 2**63
        candles = bars(market, interval_ms=_INTERVAL_MS[interval], lo_ms=lo, hi_ms=hi)
        rows = kline_rows(market, candles, _INTERVAL_MS[interval])
        return web.json_response(rows[:limit] if start_ms is not None else rows[-limit:])
