"""OKX spot v5 public websocket and REST (docs/exchanges.md, OKX).

Websocket at ``/ws/v5/public`` (like ``wss://ws.okx.com:8443/ws/v5/public``) and at the root of
the port (the URL the simulator hands out).
``{"op":"subscribe"|"unsubscribe","args":[{"channel":"trades"|"tickers"|"bbo-tbt","instId":…}]}``
is answered once per arg (``{"event":"subscribe","arg":…,"connId":…}``, or ``{"event":"error",
"code":"60018","msg":…}`` for an unknown instrument); no snapshot follows. Data frames are
``{"arg":{"channel":…,"instId":…},"data":[…]}`` with every number a string and ``ts`` in ms: one
trade per ``trades`` frame (``count`` ``1``: the simulator never aggregates fills), a ``tickers``
frame on every trade, a ``bbo-tbt`` frame on every book top change. The text ``ping`` is answered
with ``pong``; a link the client is silent on for 30 s (``ping_timeout_s``) is closed.

REST (answers ``{"code":"0","msg":"","data":[…]}``): ``/api/v5/public/instruments?instType=SPOT``,
``/api/v5/market/trades?instId=&limit=`` (the newest, at most 500),
``/api/v5/market/history-trades?instId=&type=1&after=&before=&limit=`` (newest first, at most 100,
``after``/``before`` exclusive trade ids) and ``/api/v5/market/candles?instId=&bar=1m&after=&before=``
(ms, exclusive; newest first, at most 300). An exceeded budget (20 requests per 2 s) is HTTP 429
with code ``50011``.
"""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

from aiohttp import web

from infra.exchange_sim.markets import Market, Trade, fmt_units
from infra.exchange_sim.server import Connection, ExchangeServer, RestError, bars, history_from, int_param
from infra.exchange_sim.truth import TruthRecord

CHANNELS = ("trades", "tickers", "bbo-tbt")
MAX_RECENT = 500
MAX_HISTORY = 100
MAX_CANDLES = 300
IDLE_LIMIT_S = 30.0


def _body(rows: list[Any]) -> web.Response:
    return web.json_response({"code": "0", "msg": "", "data": rows})


def trade_item(market: Market, trade: Trade) -> dict[str, str]:
    """``{instId, tradeId, px, sz, side, ts}`` (the websocket adds ``count``)."""
    return {
        "instId": market.native,
        "tradeId": str(trade.trade_id),
        "px": market.fmt_price(trade.price),
        "sz": market.fmt_size(trade.size),
        "side": trade.side,
        "ts": str(trade.ts_us // 1000),
    }


def ticker_item(market: Market, ts_us: int) -> dict[str, str]:
    last = market.last
    return {
        "instType": "SPOT",
        "instId": market.native,
        "last": market.fmt_price(last.price if last is not None else market.open_price),
        "lastSz": market.fmt_size(last.size if last is not None else 0),
        "askPx": market.fmt_price(market.ask),
        "askSz": market.fmt_size(market.ask_size),
        "bidPx": market.fmt_price(market.bid),
        "bidSz": market.fmt_size(market.bid_size),
        "open24h": market.fmt_price(market.open_price),
        "high24h": market.fmt_price(market.high),
        "low24h": market.fmt_price(market.low),
        "volCcy24h": market.fmt_quote_volume(),
        "vol24h": market.fmt_size(market.volume),
        "ts": str(ts_us // 1000),
    }


def bbo_item(market: Market, seq: int) -> dict[str, Any]:
    return {
        "asks": [[market.fmt_price(market.ask), market.fmt_size(market.ask_size), "0", "1"]],
        "bids": [[market.fmt_price(market.bid), market.fmt_size(market.bid_size), "0", "1"]],
        "ts": str(market.book_ts_us // 1000),
        "seqId": seq,
    }


def frame(channel: str, inst_id: str, items: list[Any]) -> str:
    return json.dumps({"arg": {"channel": channel, "instId": inst_id}, "data": items}, separators=(",", ":"))


class OkxServer(ExchangeServer):
    name = "okx"
    #: history-trades: 20 requests per 2 s per IP.
    default_weight = (20, 2.0)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        #: ``seqId`` of the last ``bbo-tbt`` item per market.
        self.bbo_seq: dict[str, int] = {}
        super().__init__(*args, **kwargs)

    def native_name(self, base: str, quote: str) -> str:
        return f"{base}-{quote}"

    def routes(self, app: web.Application) -> None:
        app.router.add_get("/", self.handle_ws)
        app.router.add_get("/ws/v5/public", self.handle_ws)
        app.router.add_get("/api/v5/public/instruments", self.instruments)
        app.router.add_get("/api/v5/market/trades", self.recent_trades)
        app.router.add_get("/api/v5/market/history-trades", self.history_trades)
        app.router.add_get("/api/v5/market/candles", self.candles)

    # -- websocket -------------------------------------------------------------------------
    async def on_text(self, conn: Connection, text: str) -> None:
        conn_id = str(conn.id)
        if text == "ping":
            if not conn.faults.no_pong:
                await conn.ws.send_str("pong")
            return
        try:
            msg = json.loads(text)
        except ValueError:
            msg = None
        op = msg.get("op") if isinstance(msg, dict) else None
        args = msg.get("args") if isinstance(msg, dict) else None
        if op not in ("subscribe", "unsubscribe") or not isinstance(args, list):
            conn.send_control({"event": "error", "code": "60012", "msg": f"Invalid request: {text[:200]}",
                               "connId": conn_id})  # fmt: skip
            return
        for arg in args:
            channel = arg.get("channel") if isinstance(arg, dict) else None
            inst_id = arg.get("instId") if isinstance(arg, dict) else None
            if channel not in CHANNELS:
                why = f"Wrong URL or channel:{channel}"
                conn.send_control({"event": "error", "code": "60018", "msg": why,
                                   "connId": conn_id})  # fmt: skip
                continue
            if inst_id not in self.markets or (op == "subscribe" and self.faults.take_reject()):
                conn.send_control({"event": "error", "code": "60018",
                                   "msg": f"Wrong URL or channel:{channel},instId:{inst_id} doesn't exist",
                                   "connId": conn_id})  # fmt: skip
                continue
            if op == "subscribe":
                self.subscribe(conn, (channel, inst_id))
            else:
                self.unsubscribe(conn, (channel, inst_id))
            conn.send_control(
                {"event": op, "arg": {"channel": channel, "instId": inst_id}, "connId": conn_id}
            )

    async def keepalive(self, conn: Connection) -> None:
        """Close a link the client has been silent on for 30 s (or the configured timeout)."""
        idle_limit = self.config.ping_timeout_s or IDLE_LIMIT_S
        while True:
            await asyncio.sleep(min(idle_limit / 4, 1.0))
            now = time.monotonic()
            if now - conn.opened >= self.config.max_connection_s:
                await conn.ws.close(code=1000, message=b"connection lifetime reached")
                return
            if conn.silent():
                conn.last_heard = now
            elif now - conn.last_heard > idle_limit:
                await conn.ws.close(code=4004, message=b"No data received in 30s.")
                return

    # -- data ------------------------------------------------------------------------------
    def on_trade(self, market: Market, trade: Trade, record: TruthRecord) -> None:
        native = market.native
        if ("trades", native) in self.index:
            item = {**trade_item(market, trade), "count": "1"}
            self.publish(("trades", native), frame("trades", native, [item]), (record,))
        if ("tickers", native) in self.index:
            self.publish(("tickers", native), frame("tickers", native, [ticker_item(market, trade.ts_us)]))

    def on_quote(self, market: Market) -> None:
        key = ("bbo-tbt", market.native)
        if key in self.index:
            seq = self.bbo_seq[market.native] = self.bbo_seq.get(market.native, 0) + 1
            self.publish(key, frame("bbo-tbt", market.native, [bbo_item(market, seq)]))

    # -- REST ------------------------------------------------------------------------------
    def rest_error_body(self, status: int, message: str) -> Any:
        if status == 429:
            return {"code": "50011", "msg": "Too Many Requests", "data": []}
        return {"code": "50001", "msg": f"Service temporarily unavailable {message}", "data": []}

    def _market(self, request: web.Request) -> Market:
        market = self.markets.get(request.query.get("instId", ""))
        if market is None:
            raise RestError(200, {"code": "51001", "msg": "Instrument ID does not exist", "data": []})
        return market

    def _int(self, request: web.Request, name: str, default: int | None, hi: int) -> int | None:
        try:
            return int_param(request, name, default, lo=0, hi=hi)
        except ValueError as exc:
            raise RestError(200, {"code": "51000", "msg": f"Parameter {exc} error", "data": []}) from None

    async def instruments(self, request: web.Request) -> web.Response:
        if request.query.get("instType") != "SPOT":
            raise RestError(200, {"code": "51000", "msg": "Parameter instType error", "data": []})
        state = {"trading": "live", "halted": "suspend"}
        return _body(
            [
                {"instType": "SPOT", "instId": m.native, "baseCcy": m.base, "quoteCcy": m.quote,
                 "tickSz": m.fmt_price(1), "lotSz": m.fmt_size(1), "state": state.get(m.status, "expired")}
                for m in self.markets.values()
                if m.status != "delisted"
            ]
        )  # fmt: skip

    async def recent_trades(self, request: web.Request) -> web.Response:
        market = self._market(request)
        limit = self._int(request, "limit", 100, MAX_RECENT) or 100
        return _body([trade_item(market, t) for t in reversed(market.history[-limit:])])

    async def history_trades(self, request: web.Request) -> web.Response:
        """``type=1``: ``after``/``before`` are trade ids (exclusive); newest first."""
        market = self._market(request)
        if request.query.get("type", "1") != "1":
            raise RestError(200, {"code": "51000", "msg": "Parameter type error (the simulator pages by id)",
                                  "data": []})  # fmt: skip
        limit = self._int(request, "limit", MAX_HISTORY, MAX_HISTORY) or MAX_HISTORY
        after = self._int(request, "after", None, 2**63 - 1)
        before = self._int(request, "before", None, 2**63 - 1)
        history = market.history
        hi = len(history) if after is None else history_from(market, after)
        lo = 0 if before is None else history_from(market, before + 1)
        page = (
            history[max(lo, hi - limit) : hi]
            if before is None or after is not None
            else history[lo : lo + limit]
        )
        return _body([trade_item(market, t) for t in reversed(page)])

    async def candles(self, request: web.Request) -> web.Response:
        market = self._market(request)
        if request.query.get("bar", "1m") != "1m":
            raise RestError(200, {"code": "51000", "msg": "Parameter bar error (the simulator serves 1m)",
                                  "data": []})  # fmt: skip
        after = self._int(request, "after", 2**63 - 1, 2**63 - 1) or 2**63 - 1
        before = self._int(request, "before", 0, 2**63 - 1) or 0
        limit = self._int(request, "limit", MAX_CANDLES, MAX_CANDLES) or MAX_CANDLES
        q = market.price_decimals + market.size_decimals
        rows = [b for b in bars(market, interval_ms=60_000) if before < b.start_ms < after][-limit:]
        return _body(
            [
                [str(b.start_ms), *(market.fmt_price(v) for v in (b.open, b.high, b.low, b.close)),
                 market.fmt_size(b.volume), *[fmt_units(b.quote_volume, q)] * 2, "1"]
                for b in reversed(rows)
            ]
        )  # fmt: skip
