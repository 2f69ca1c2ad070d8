"""Kraken spot websocket v2 and public REST (docs/exchanges.md, Kraken).

Websocket at the root of the port (like ``wss://ws.kraken.com/v2``). On connect the server sends a
``status`` frame. ``{"method":"subscribe","params":{"channel":"trade"|"ticker","symbol":[…],
"event_trigger":"bbo"|"trades","snapshot":true},"req_id":n}`` is acknowledged once per symbol
(``{"method":"subscribe","result":{…},"success":true,"time_in":…,"time_out":…,"req_id":n}``, or
``success:false`` with ``error`` for an unknown pair), then a snapshot follows: the last 50 trades
(``trade``) or the current ticker (``ticker``). Updates are ``{"channel":…,"type":"update","data":[…]}``
with prices and quantities as JSON numbers; ``trade_id`` is sequential per pair, ``side`` the taker's.
A ticker is sent on every trade (``event_trigger`` ``trades``, the default) or on every best bid/offer
change (``bbo``). Subscribed connections get ``{"channel":"heartbeat"}`` every ``ticker_interval_s``;
``{"method":"ping","req_id":n}`` is answered with ``pong``.

REST (``/0/public/…``, answers ``{"error":[…],"result":…}``): ``AssetPairs`` (keys and ``altname``
use the legacy codes ``XBT``/``XDG``, ``wsname`` ``XBT/USD``), ``Trades?pair=&since=&count=`` (the
``count`` oldest trades at or after ``since`` nanoseconds, or the newest ``count``; ``last`` is the
newest trade's time, the next ``since``: inclusive here, so a page repeats the last trade of the one
before and no trade sharing its time is skipped; the venue's exact boundary is not documented),
``OHLC?pair=&interval=1&since=`` (the newest 720 bars). ``pair`` may be the key, the ``altname`` or
the ``wsname``. An exceeded budget (20 requests/s) is HTTP 429 with ``EGeneral:Too many requests``.
"""

from __future__ import annotations

import bisect
import json
import time
from decimal import Decimal
from typing import Any

from aiohttp import web

from infra.exchange_sim.coinbase import iso_us
from infra.exchange_sim.markets import Market, Trade
from infra.exchange_sim.server import Bar, Connection, ExchangeServer, RestError, bars, int_param
from infra.exchange_sim.truth import TruthRecord

#: Modern asset code -> the legacy code of REST pair names (``XBT/USD``, ``XBTUSD``).
LEGACY = {"BTC": "XBT", "DOGE": "XDG"}
#: Assets whose REST pair key takes the X/Z-prefixed code (``XXBTZUSD``).
PREFIXED = {"BTC": "XXBT", "ETH": "XETH", "DOGE": "XXDG", "XRP": "XXRP", "LTC": "XLTC", "XLM": "XXLM",
            "USD": "ZUSD", "EUR": "ZEUR"}  # fmt: skip
SNAPSHOT_TRADES = 50
MAX_TRADES = 1000
MAX_OHLC = 720
CHANNELS = ("trade", "ticker")


def _json(parts: dict[str, str]) -> str:
    """A JSON object from rendered JSON values: a decimal string is written as a JSON number with
    exactly its digits (no float in between)."""
    return "{" + ",".join(f'"{k}":{v}' for k, v in parts.items()) + "}"


def _s(text: str) -> str:
    return '"' + text + '"'


def trade_item(market: Market, trade: Trade) -> str:
    """``{symbol, side, price, qty, ord_type, trade_id, timestamp}``: price and qty JSON numbers."""
    return _json(
        {
            "symbol": _s(market.native),
            "side": _s(trade.side),
            "price": market.fmt_price(trade.price),
            "qty": market.fmt_size(trade.size),
            "ord_type": _s("market" if trade.trade_id % 3 else "limit"),
            "trade_id": str(trade.trade_id),
            "timestamp": _s(iso_us(trade.ts_us)),
        }
    )


def ticker_item(market: Market, ts_us: int) -> str:
    """``{symbol, bid, bid_qty, ask, ask_qty, last, volume, vwap, low, high, change, change_pct,
    timestamp}``."""
    last = market.last.price if market.last is not None else market.open_price
    change = last - market.open_price
    pct = (
        (Decimal(change) * 100 / Decimal(market.open_price)).quantize(Decimal("0.01"))
        if market.open_price
        else 0
    )
    vwap = market.quote_volume // market.volume if market.volume else last
    return _json(
        {
            "symbol": _s(market.native),
            "bid": market.fmt_price(market.bid),
            "bid_qty": market.fmt_size(market.bid_size),
            "ask": market.fmt_price(market.ask),
            "ask_qty": market.fmt_size(market.ask_size),
            "last": market.fmt_price(last),
            "volume": market.fmt_size(market.volume),
            "vwap": market.fmt_price(vwap),
            "low": market.fmt_price(market.low),
            "high": market.fmt_price(market.high),
            "change": market.fmt_price(change),
            "change_pct": str(pct),
            "timestamp": _s(iso_us(ts_us)),
        }
    )


def frame(channel: str, kind: str, items: list[str]) -> str:
    return f'{{"channel":"{channel}","type":"{kind}","data":[{",".join(items)}]}}'


def legacy_names(market: Market) -> tuple[str, str, str]:
    """REST key, ``altname`` and ``wsname`` of a market: ``XXBTZUSD``, ``XBTUSD``, ``XBT/USD``."""
    base, quote = LEGACY.get(market.base, market.base), LEGACY.get(market.quote, market.quote)
    prefixed = market.base in PREFIXED and market.quote in PREFIXED
    key = PREFIXED[market.base] + PREFIXED[market.quote] if prefixed else base + quote
    return key, base + quote, f"{base}/{quote}"


def asset_pair(market: Market) -> dict[str, Any]:
    _key, altname, wsname = legacy_names(market)
    return {
        "altname": altname,
        "wsname": wsname,
        "aclass_base": "currency",
        "base": PREFIXED.get(market.base, market.base),
        "aclass_quote": "currency",
        "quote": PREFIXED.get(market.quote, market.quote),
        "pair_decimals": market.price_decimals,
        "lot_decimals": market.size_decimals,
        "status": {"trading": "online", "halted": "cancel_only"}.get(market.status, "delisted"),
    }


def trade_row(market: Market, trade: Trade) -> str:
    """``["94210.10000","0.00150000",1767225600.455123,"b","m","",81234567]``: strings for price
    and volume, the time in seconds as a number (µs), the sequential trade id."""
    secs, micros = divmod(trade.ts_us, 1_000_000)
    side = "b" if trade.side == "buy" else "s"
    kind = "m" if trade.trade_id % 3 else "l"
    price, size = market.fmt_price(trade.price), market.fmt_size(trade.size)
    return f'["{price}","{size}",{secs}.{micros:06d},"{side}","{kind}","",{trade.trade_id}]'


def ohlc_row(market: Market, bar: Bar) -> str:
    """``[time s, "open", "high", "low", "close", "vwap", "volume", count]``."""
    vwap = bar.quote_volume // bar.volume if bar.volume else bar.close
    cells = [market.fmt_price(v) for v in (bar.open, bar.high, bar.low, bar.close, vwap)]
    texts = ",".join(f'"{c}"' for c in (*cells, market.fmt_size(bar.volume)))
    return f"[{bar.start_ms // 1000},{texts},{bar.count}]"


class KrakenServer(ExchangeServer):
    name = "kraken"
    #: Kraken publishes no number for public REST ("about one call per second" is safe, which the
    #: connector keeps); the simulator allows bursts so tests may configure a faster client.
    default_weight = (20, 1.0)
    default_incoming = (50, 1.0)

    def native_name(self, base: str, quote: str) -> str:
        return f"{base}/{quote}"

    def ts_event(self, trade: Trade) -> str:
        return iso_us(trade.ts_us)

    def routes(self, app: web.Application) -> None:
        app.router.add_get("/", self.handle_ws)
        app.router.add_get("/0/public/AssetPairs", self.asset_pairs)
        app.router.add_get("/0/public/Trades", self.trades)
        app.router.add_get("/0/public/OHLC", self.ohlc)

    # -- websocket -------------------------------------------------------------------------
    async def on_open(self, conn: Connection) -> None:
        status = {
            "api_version": "v2",
            "connection_id": self.conn_counter,
            "system": "online",
            "version": "2.0.10",
        }
        conn.send_control({"channel": "status", "type": "update", "data": [status]})

    def _reply(self, conn: Connection, method: str, req_id: Any, time_in: str, **fields: Any) -> None:
        body = {"method": method, **fields, "time_in": time_in, "time_out": iso_us(time.time_ns() // 1000)}
        conn.send_control(body if req_id is None else {**body, "req_id": req_id})

    async def on_text(self, conn: Connection, text: str) -> None:
        time_in = iso_us(time.time_ns() // 1000)
        try:
            msg = json.loads(text)
        except ValueError:
            conn.send_control({"error": "Malformed request", "success": False, "time_in": time_in})
            return
        method = msg.get("method") if isinstance(msg, dict) else None
        req_id = msg.get("req_id") if isinstance(msg, dict) else None
        if method == "ping":
            self._reply(conn, "pong", req_id, time_in)
            return
        if method not in ("subscribe", "unsubscribe"):
            conn.send_control({"error": f"Method not found {method}", "success": False, "time_in": time_in})
            return
        params = msg.get("params") if isinstance(msg.get("params"), dict) else {}
        channel, symbols = params.get("channel"), params.get("symbol")
        if channel not in CHANNELS or not isinstance(symbols, list) or not symbols:
            self._reply(conn, method, req_id, time_in, success=False, error=f"Unsupported channel {channel}")
            return
        for symbol in symbols:
            market = self.markets.get(symbol) if isinstance(symbol, str) else None
            if market is None or (method == "subscribe" and self.faults.take_reject()):
                why = "Currency pair not supported" if market is None else "Subscription rejected"
                self._reply(
                    conn, method, req_id, time_in, success=False, error=f"{why} {symbol}", symbol=symbol
                )
                continue
            trigger = params.get("event_trigger", "trades") if channel == "ticker" else ""
            keys = [(channel, symbol, t) for t in ("", "trades", "bbo")]
            fresh = (channel, symbol, trigger) not in conn.subs
            for key in keys:
                self.unsubscribe(conn, key)
            result: dict[str, Any] = {"channel": channel, "symbol": symbol}
            if method == "subscribe":
                self.subscribe(conn, (channel, symbol, trigger))
                result["snapshot"] = params.get("snapshot", True) is not False
            self._reply(conn, method, req_id, time_in, result=result, success=True)
            if method == "subscribe" and fresh and result["snapshot"]:
                self._snapshot(conn, channel, market)

    def _snapshot(self, conn: Connection, channel: str, market: Market) -> None:
        if channel == "trade":
            recent = market.history[-SNAPSHOT_TRADES:]
            if recent:
                conn.send_data(frame("trade", "snapshot", [trade_item(market, t) for t in recent]))
        else:
            conn.send_data(frame("ticker", "snapshot", [ticker_item(market, market.book_ts_us)]))

    # -- data ------------------------------------------------------------------------------
    def on_trade(self, market: Market, trade: Trade, record: TruthRecord) -> None:
        native = market.native
        if ("trade", native, "") in self.index:
            self.publish(
                ("trade", native, ""), frame("trade", "update", [trade_item(market, trade)]), (record,)
            )
        if ("ticker", native, "trades") in self.index:
            self.publish(
                ("ticker", native, "trades"), frame("ticker", "update", [ticker_item(market, trade.ts_us)])
            )

    def on_quote(self, market: Market) -> None:
        key = ("ticker", market.native, "bbo")
        if key in self.index:
            self.publish(key, frame("ticker", "update", [ticker_item(market, market.book_ts_us)]))

    def on_second(self) -> None:
        for conn in list(self.conns):
            if conn.subs:
                conn.send_control({"channel": "heartbeat"})

    # -- REST ------------------------------------------------------------------------------
    def rest_error_body(self, status: int, message: str) -> Any:
        if status == 429:
            return {"error": ["EGeneral:Too many requests"]}
        return {"error": [f"EService:Unavailable {message}"]}

    def _pair(self, request: web.Request) -> tuple[str, Market]:
        wanted = request.query.get("pair", "")
        for market in self.markets.values():
            names = legacy_names(market)
            if wanted in (*names, market.native):
                return names[0], market
        raise RestError(200, {"error": ["EQuery:Unknown asset pair"]})

    async def asset_pairs(self, request: web.Request) -> web.Response:
        result = {legacy_names(m)[0]: asset_pair(m) for m in self.markets.values() if m.status != "delisted"}
        return web.json_response({"error": [], "result": result})

    async def trades(self, request: web.Request) -> web.Response:
        key, market = self._pair(request)
        try:
            count = int_param(request, "count", MAX_TRADES, lo=1, hi=MAX_TRADES) or MAX_TRADES
            since = int_param(request, "since", None, lo=0, hi=2**63 - 1)
        except ValueError as exc:
            raise RestError(200, {"error": [f"EGeneral:Invalid arguments:{exc}"]}) from None
        history = market.history
        if since is None:
            page = history[-count:]
        else:
            since_ns = since if since >= 10**15 else since * 1_000_000_000  # nanoseconds, or seconds
            start = bisect.bisect_left(history, since_ns, key=lambda t: t.ts_us * 1000)
            page = history[start : start + count]
        last = page[-1].ts_us * 1000 if page else (since or 0)
        rows = ",".join(trade_row(market, t) for t in page)
        body = f'{{"error":[],"result":{{"{key}":[{rows}],"last":"{last}"}}}}'
        return web.Response(text=body, content_type="application/json")

    async def ohlc(self, request: web.Request) -> web.Response:
        key, market = self._pair(request)
        if request.query.get("interval", "1") != "1":
            raise RestError(200, {"error": ["EGeneral:Invalid arguments:interval (the simulator serves 1)"]})
        since_s = int(request.query.get("since", "0") or 0)
        candles = [b for b in bars(market, interval_ms=60_000) if b.start_ms // 1000 > since_s][-MAX_OHLC:]
        last = candles[-1].start_ms // 1000 if candles else since_s
        rows = ",".join(ohlc_row(market, b) for b in candles)
        body = f'{{"error":[],"result":{{"{key}":[{rows}],"last":{last}}}}}'
        return web.Response(text=body, content_type="application/json")
