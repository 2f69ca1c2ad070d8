"""Bybit spot v5 websocket and public REST (docs/exchanges.md, Bybit).

Websocket at ``/v5/public/spot`` (and the root of the port). ``{"req_id":..,"op":"subscribe",
"args":["publicTrade.BTCUSDT","tickers.BTCUSDT","orderbook.1.BTCUSDT"]}`` with at most 10 args is
answered ``{"success":true,"ret_msg":"subscribe","conn_id":..,"req_id":..,"op":"subscribe"}``
(``success:false`` naming an unknown topic or too many args); ``{"op":"ping"}`` gets ``ret_msg``
``pong``. Pushes: ``publicTrade`` ``{"topic","type":"snapshot","ts","data":[{T,s,S,v,p,i,BT}]}`` on
every trade (``i`` the trade id as a string), ``tickers`` snapshots (``cs``, ``data`` with
``lastPrice``, 24 h fields) on every trade, ``orderbook.1`` snapshots (``data`` ``{s,b,a,u,seq}``,
``cts``) on every book-top change.

REST (``{"retCode":0,"retMsg":"OK","result":{..},"retExtInfo":{},"time":..}``):
``/v5/market/instruments-info?category=spot`` (``symbol, baseCoin, quoteCoin, status``),
``/v5/market/recent-trade?category=spot&symbol=&limit=`` (the newest ``limit`` <= 60 trades, newest
first: the only history there is), ``/v5/market/kline?category=spot&symbol=&interval=1&start=&end=
&limit=`` (newest first). An exceeded budget (600 requests per 5 s) is HTTP 403.
"""

from __future__ import annotations

import json
import time
from typing import Any

from aiohttp import web

from infra.exchange_sim.markets import Market, Trade, fmt_units
from infra.exchange_sim.server import Connection, ExchangeServer, RestError, bars, int_param
from infra.exchange_sim.truth import TruthRecord

ARGS_PER_REQUEST = 10
HISTORY_DEPTH = 60
KLINES_MAX_ROWS = 1000
TOPICS = ("publicTrade", "tickers", "orderbook.1")


def _dumps(obj: Any) -> str:
    return json.dumps(obj, separators=(",", ":"))


def trade_item(market: Market, trade: Trade) -> dict[str, Any]:
    """``{T, s, S (taker Buy/Sell), v, p, i (string id), BT}``."""
    return {
        "T": trade.ts_us // 1000,
        "s": market.native,
        "S": "Buy" if trade.side == "buy" else "Sell",
        "v": market.fmt_size(trade.size),
        "p": market.fmt_price(trade.price),
        "i": str(trade.trade_id),
        "BT": False,
    }


def ticker_data(market: Market) -> dict[str, Any]:
    last = market.last.price if market.last is not None else market.open_price
    return {
        "symbol": market.native,
        "lastPrice": market.fmt_price(last),
        "highPrice24h": market.fmt_price(market.high),
        "lowPrice24h": market.fmt_price(market.low),
        "prevPrice24h": market.fmt_price(market.open_price),
        "volume24h": market.fmt_size(market.volume),
        "turnover24h": market.fmt_quote_volume(),
    }


def push(topic: str, ts_ms: int, data: Any, **extra: Any) -> str:
    return _dumps({"topic": topic, "ts": ts_ms, "type": "snapshot", **extra, "data": data})


def history_row(market: Market, trade: Trade) -> dict[str, Any]:
    """``recent-trade`` row ``{execId, symbol, price, size, side, time (ms string), isBlockTrade}``."""
    return {
        "execId": str(trade.trade_id),
        "symbol": market.native,
        "price": market.fmt_price(trade.price),
        "size": market.fmt_size(trade.size),
        "side": "Buy" if trade.side == "buy" else "Sell",
        "time": str(trade.ts_us // 1000),
        "isBlockTrade": False,
    }


def ok(result: Any) -> web.Response:
    body = {"retCode": 0, "retMsg": "OK", "result": result, "retExtInfo": {}, "time": time.time_ns() // 10**6}
    return web.Response(text=_dumps(body), content_type="application/json")


class BybitServer(ExchangeServer):
    name = "bybit"
    #: 600 requests per 5 s per IP.
    default_weight = (600, 5.0)
    #: ``u``/``seq`` of the last ``orderbook.1`` push (one counter for every market).
    _book_seq = 0

    def native_name(self, base: str, quote: str) -> str:
        return base + quote

    def routes(self, app: web.Application) -> None:
        app.router.add_get("/", self.handle_ws)
        app.router.add_get("/v5/public/spot", self.handle_ws)
        app.router.add_get("/v5/market/instruments-info", self.instruments)
        app.router.add_get("/v5/market/recent-trade", self.recent_trades)
        app.router.add_get("/v5/market/kline", self.kline)

    # -- websocket -------------------------------------------------------------------------
    def _reply(self, conn: Connection, op: Any, req_id: Any, *, success: bool, ret_msg: str) -> None:
        body: dict[str, Any] = {"success": success, "ret_msg": ret_msg, "conn_id": conn.id}
        if req_id is not None:
            body["req_id"] = req_id
        conn.send_control({**body, "op": op})

    async def on_text(self, conn: Connection, text: str) -> None:
        try:
            msg = json.loads(text)
        except ValueError:
            msg = None
        if not isinstance(msg, dict):
            self._reply(conn, None, None, success=False, ret_msg="Invalid request")
            return
        op, req_id, args = msg.get("op"), msg.get("req_id"), msg.get("args")
        if op == "ping":
            self._reply(conn, "ping", req_id, success=True, ret_msg="pong")
            return
        if op not in ("subscribe", "unsubscribe") or not isinstance(args, list) or not args:
            self._reply(conn, op, req_id, success=False, ret_msg=f"Invalid op or args: {op}")
            return
        if len(args) > ARGS_PER_REQUEST:
            self._reply(conn, op, req_id, success=False, ret_msg=f"args size >{ARGS_PER_REQUEST}")
            return
        keys = []
        for arg in args:
            name, _, symbol = str(arg).rpartition(".")
            if name not in TOPICS or symbol not in self.markets:
                self._reply(conn, op, req_id, success=False, ret_msg=f"Invalid symbol :[{arg}]")
                return
            keys.append((name, symbol))
        if op == "subscribe" and self.faults.take_reject():
            self._reply(conn, op, req_id, success=False, ret_msg="Subscription rejected")
            return
        for key in keys:
            (self.subscribe if op == "subscribe" else self.unsubscribe)(conn, key)
        self._reply(conn, op, req_id, success=True, ret_msg=op if op == "subscribe" else "")

    # -- data ------------------------------------------------------------------------------
    def on_trade(self, market: Market, trade: Trade, record: TruthRecord) -> None:
        native, ts_ms = market.native, trade.ts_us // 1000
        if ("publicTrade", native) in self.index:
            text = push(f"publicTrade.{native}", ts_ms + 1, [trade_item(market, trade)])
            self.publish(("publicTrade", native), text, (record,))
        if ("tickers", native) in self.index:
            text = push(f"tickers.{native}", ts_ms + 1, ticker_data(market), cs=trade.trade_id)
            self.publish(("tickers", native), text)

    def on_quote(self, market: Market) -> None:
        key = ("orderbook.1", market.native)
        if key in self.index:
            self._book_seq += 1
            data = {
                "s": market.native,
                "b": [[market.fmt_price(market.bid), market.fmt_size(market.bid_size)]],
                "a": [[market.fmt_price(market.ask), market.fmt_size(market.ask_size)]],
                "u": self._book_seq,
                "seq": self._book_seq,
            }
            ms = market.book_ts_us // 1000
            self.publish(key, push(f"orderbook.1.{market.native}", ms + 1, data, cts=ms))

    # -- REST ------------------------------------------------------------------------------
    def rest_error_body(self, status: int, message: str) -> Any:
        if status in (403, 429):
            return {"retCode": 10006, "retMsg": "Too many visits!", "result": {}}
        return {"retCode": 10016, "retMsg": f"Service unavailable {message}", "result": {}}

    def _market(self, request: web.Request) -> Market:
        if request.query.get("category") != "spot":
            raise RestError(200, {"retCode": 10001, "retMsg": "params error: category", "result": {}})
        market = self.markets.get(request.query.get("symbol", ""))
        if market is None:
            raise RestError(200, {"retCode": 10001, "retMsg": "params error: symbol invalid", "result": {}})
        return market

    async def instruments(self, request: web.Request) -> web.Response:
        rows = [
            {"symbol": m.native, "baseCoin": m.base, "quoteCoin": m.quote, "status": "Trading"
             if m.status == "trading" else "PreLaunch"}
            for m in self.markets.values()
            if m.status != "delisted"
        ]  # fmt: skip
        return ok({"category": "spot", "list": rows})

    async def recent_trades(self, request: web.Request) -> web.Response:
        market = self._market(request)
        try:
            limit = int_param(request, "limit", HISTORY_DEPTH, lo=1, hi=HISTORY_DEPTH) or HISTORY_DEPTH
        except ValueError as exc:
            raise RestError(200, {"retCode": 10001, "retMsg": f"params error: {exc}", "result": {}}) from None
        rows = [history_row(market, t) for t in reversed(market.history[-limit:])]
        return ok({"category": "spot", "list": rows})

    async def kline(self, request: web.Request) -> web.Response:
        market = self._market(request)
        if request.query.get("interval") != "1":
            raise RestError(
                200, {"retCode": 10001, "retMsg": "params error: interval (1 only)", "result": {}}
            )
        try:
            start = int_param(request, "start", 0, lo=0, hi=2**63 - 1) or 0
            end = int_param(request, "end", 2**62, lo=0, hi=2**63 - 1) or 2**62
            limit = int_param(request, "limit", 200, lo=1, hi=KLINES_MAX_ROWS) or 200
        except ValueError as exc:
            raise RestError(200, {"retCode": 10001, "retMsg": f"params error: {exc}", "result": {}}) from None
        candles = bars(market, interval_ms=60_000, lo_ms=start, hi_ms=end)[-limit:]
        quote_decimals = market.price_decimals + market.size_decimals
        rows = [
            [str(b.start_ms), *(market.fmt_price(v) for v in (b.open, b.high, b.low, b.close)),
             market.fmt_size(b.volume), fmt_units(b.quote_volume, quote_decimals)]
            for b in reversed(candles)
        ]  # fmt: skip
        return ok({"symbol": market.native, "category": "spot", "list": rows})
