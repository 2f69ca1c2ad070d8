"""Coinbase Exchange public feed and REST (exchanges.md §4A).

Websocket at the root of the port (like ``wss://ws-feed.exchange.coinbase.com``). The client
must send ``{"type":"subscribe","product_ids":[…],"channels":["ticker",{"name":"matches",
"product_ids":[…]}, "heartbeat"]}`` within ``subscribe_deadline_s`` (5 s) or is closed (1008).
The server answers with ``{"type":"subscriptions","channels":[{"name":…,"product_ids":[…]}]}``
(the connection's full subscription set), then, per newly subscribed product, a ``last_match``
(matches) and a current ``ticker`` (ticker) when the product has traded. Errors:
``{"type":"error","message":"Failed to subscribe","reason":"…"}`` (unknown channel or product,
authenticated channels level2/level3/full/user). Channels: ``matches`` (one ``match`` per
trade, ``side`` = **maker** side), ``ticker`` (``side`` = taker side), ``heartbeat`` (per
product every ``ticker_interval_s`` with ``last_trade_id``). Times are ISO-8601 UTC with µs.

REST: ``GET /products``, ``/products/{id}``, ``/products/{id}/book?level=1|2`` (top of book as
``[price, size, num_orders]``), ``/products/{id}/trades?limit&before&after`` (newest first,
``CB-BEFORE`` = newest id of the page, ``CB-AFTER`` = oldest; ``after=X`` → ids < X,
``before=X`` → the ``limit`` ids right above X), ``/products/{id}/ticker``. Errors
``{"message":"…"}``; budget overrun (15 requests / s) is HTTP 429.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from datetime import datetime
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

CHANNELS = ("heartbeat", "matches", "ticker")
AUTH_CHANNELS = frozenset({"level2", "level3", "full", "user"})


def _dumps(obj: Any) -> str:
    return json.dumps(obj, separators=(",", ":"))


def iso_us(ts_us: int) -> str:
    """``2026-01-01T00:00:00.412345Z`` from microseconds since the epoch (exact)."""
    secs, micros = divmod(ts_us, 1_000_000)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(secs)) + f".{micros:06d}Z"


def _order_uuid(trade_id: int, salt: int) -> str:
    return str(uuid.UUID(int=(trade_id * 0x9E3779B97F4A7C15 * 7919 + salt) % 2**128))


def maker_side(trade: Trade) -> str:
    return "sell" if trade.side == "buy" else "buy"


# -- payload builders (pure) -----------------------------------------------------------------
def match_payload(market: Market, trade: Trade, kind: str = "match") -> dict[str, Any]:
    """``{type:"match"|"last_match", trade_id, maker_order_id, taker_order_id, side(maker), size,
    price, product_id, sequence, time}``."""
    return {
        "type": kind,
        "trade_id": trade.trade_id,
        "maker_order_id": _order_uuid(trade.trade_id, 1),
        "taker_order_id": _order_uuid(trade.trade_id, 2),
        "side": maker_side(trade),
        "size": market.fmt_size(trade.size),
        "price": market.fmt_price(trade.price),
        "product_id": market.native,
        "sequence": trade.seq,
        "time": iso_us(trade.ts_us),
    }


def ticker_payload(market: Market, trade: Trade) -> dict[str, Any]:
    """``{type:"ticker", sequence, product_id, price, open_24h, volume_24h, low_24h, high_24h,
    volume_30d, best_bid, best_bid_size, best_ask, best_ask_size, side(taker), time, trade_id,
    last_size}``."""
    return {
        "type": "ticker",
        "sequence": trade.seq,
        "product_id": market.native,
        "price": market.fmt_price(trade.price),
        "open_24h": market.fmt_price(market.open_price),
        "volume_24h": market.fmt_size(market.volume),
        "low_24h": market.fmt_price(market.low),
        "high_24h": market.fmt_price(market.high),
        "volume_30d": market.fmt_size(market.volume * 30),
        "best_bid": market.fmt_price(market.bid),
        "best_bid_size": market.fmt_size(market.bid_size),
        "best_ask": market.fmt_price(market.ask),
        "best_ask_size": market.fmt_size(market.ask_size),
        "side": trade.side,
        "time": iso_us(trade.ts_us),
        "trade_id": trade.trade_id,
        "last_size": market.fmt_size(trade.size),
    }


def heartbeat_payload(market: Market, now_us: int) -> dict[str, Any]:
    """``{type:"heartbeat", sequence, last_trade_id, product_id, time}``."""
    last = market.last
    return {
        "type": "heartbeat",
        "sequence": market.seq,
        "last_trade_id": last.trade_id if last is not None else 0,
        "product_id": market.native,
        "time": iso_us(now_us),
    }


def product_row(market: Market) -> dict[str, Any]:
    """One ``/products`` element; halted = ``trading_disabled``, delisted = status ``delisted``."""
    return {
        "id": market.native,
        "base_currency": market.base,
        "quote_currency": market.quote,
        "quote_increment": fmt_units(1, market.price_decimals),
        "base_increment": fmt_units(1, market.size_decimals),
        "display_name": f"{market.base}/{market.quote}",
        "min_market_funds": "1",
        "margin_enabled": False,
        "post_only": False,
        "limit_only": False,
        "cancel_only": market.status == "halted",
        "status": "delisted" if market.status == "delisted" else "online",
        "status_message": "",
        "trading_disabled": market.status != "trading",
        "fx_stablecoin": market.base in ("USDT", "USDC") and market.quote == "USD",
        "max_slippage_percentage": "0.03000000",
        "auction_mode": False,
        "high_bid_limit_percentage": "",
    }


def trade_row(market: Market, trade: Trade) -> dict[str, Any]:
    """``/products/{id}/trades`` row ``{time, trade_id, price, size, side(maker)}``."""
    return {
        "time": iso_us(trade.ts_us),
        "trade_id": trade.trade_id,
        "price": market.fmt_price(trade.price),
        "size": market.fmt_size(trade.size),
        "side": maker_side(trade),
    }


CANDLE_GRANULARITIES_S = frozenset({60, 300, 900, 3600, 21600, 86400})
MAX_CANDLES = 300


def candle_row(market: Market, bar: Bar) -> str:
    """``[time (s), low, high, open, close, volume]`` as JSON numbers. Rendered from the exact
    decimal texts (a JSON number is arbitrary precision; a float would round the volume)."""
    values = (bar.low, bar.high, bar.open, bar.close)
    cells = [str(bar.start_ms // 1000), *(market.fmt_price(v) for v in values), market.fmt_size(bar.volume)]
    return "[" + ",".join(cells) + "]"


def parse_time_s(text: str) -> int:
    """A candles ``start``/``end``: Unix seconds or ISO 8601 (both accepted by the venue)."""
    if text.lstrip("-").isdigit():
        return int(text)
    return int(datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp())


class CoinbaseServer(ExchangeServer):
    name = "coinbase"
    default_weight = (15, 1.0)
    default_incoming = (100, 1.0)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._last_record: dict[str, TruthRecord] = {}

    def native_name(self, base: str, quote: str) -> str:
        return f"{base}-{quote}"

    def ts_event(self, trade: Trade) -> str:
        return iso_us(trade.ts_us)

    def routes(self, app: web.Application) -> None:
        app.router.add_get("/", self.handle_ws)
        app.router.add_get("/products", self.products)
        app.router.add_get("/products/{product_id}", self.product)
        app.router.add_get("/products/{product_id}/book", self.book)
        app.router.add_get("/products/{product_id}/trades", self.trades)
        app.router.add_get("/products/{product_id}/ticker", self.ticker)
        app.router.add_get("/products/{product_id}/candles", self.candles)

    # -- websocket -------------------------------------------------------------------------
    async def on_open(self, conn: Connection) -> None:
        conn.props["subscribed"] = False

    async def keepalive(self, conn: Connection) -> None:
        await asyncio.sleep(self.config.subscribe_deadline_s)
        if not conn.props.get("subscribed"):
            await conn.ws.close(code=1008, message=b"no subscribe received")
            return
        await asyncio.sleep(max(0.0, self.config.max_connection_s - self.config.subscribe_deadline_s))
        await conn.ws.close(code=1000, message=b"connection lifetime reached")

    def _fail(self, conn: Connection, reason: str) -> None:
        conn.send_control({"type": "error", "message": "Failed to subscribe", "reason": reason})

    async def on_text(self, conn: Connection, text: str) -> None:
        try:
            msg = json.loads(text)
        except ValueError:
            conn.send_control(
                {"type": "error", "message": "Failed to parse message", "reason": "invalid JSON"}
            )
            return
        kind = msg.get("type") if isinstance(msg, dict) else None
        if kind not in ("subscribe", "unsubscribe"):
            conn.send_control({"type": "error", "message": f"Unsupported message type {kind}", "reason": ""})
            return
        wanted = self._parse_channels(conn, msg)
        if wanted is None:
            return
        if kind == "subscribe":
            if self.faults.take_reject():
                self._fail(conn, "subscription rejected")
                return
            conn.props["subscribed"] = True
            fresh = [key for key in wanted if key not in conn.subs]
            for key in wanted:
                self.subscribe(conn, key)
        else:
            fresh = []
            for key in wanted:
                self.unsubscribe(conn, key)
        conn.send_control(self._subscriptions(conn))
        for channel, pid in fresh:
            self._send_snapshot(conn, channel, self.markets[pid])

    def _parse_channels(self, conn: Connection, msg: dict[str, Any]) -> list[tuple[str, str]] | None:
        """The (channel, product) keys a (un)subscribe names, or ``None`` after an error reply."""
        top = msg.get("product_ids", [])
        channels = msg.get("channels")
        if not isinstance(channels, list) or not channels or not isinstance(top, list):
            self._fail(conn, "channels must be a non-empty list")
            return None
        keys: list[tuple[str, str]] = []
        for item in channels:
            name = item.get("name") if isinstance(item, dict) else item
            pids = item.get("product_ids", top) if isinstance(item, dict) else top
            if name in AUTH_CHANNELS:
                self._fail(conn, f"{name} channel requires authentication")
                return None
            if name not in CHANNELS:
                self._fail(conn, f"{name} is not a valid channel")
                return None
            if not pids:
                self._fail(conn, f"No product ids provided for {name}")
                return None
            for pid in pids:
                if pid not in self.markets:
                    self._fail(conn, f"{pid} is not a valid product")
                    return None
                keys.append((name, pid))
        return keys

    @staticmethod
    def _subscriptions(conn: Connection) -> dict[str, Any]:
        by_channel: dict[str, list[str]] = {}
        for channel, pid in sorted(k for k in conn.subs if isinstance(k, tuple)):
            by_channel.setdefault(channel, []).append(pid)
        return {
            "type": "subscriptions",
            "channels": [{"name": name, "product_ids": pids} for name, pids in by_channel.items()],
        }

    def _send_snapshot(self, conn: Connection, channel: str, market: Market) -> None:
        last = market.last
        if last is None:
            return
        if channel == "matches":
            record = self._last_record.get(market.native)
            records = (record,) if record is not None else ()
            conn.send_data(_dumps(match_payload(market, last, "last_match")), records)
        elif channel == "ticker":
            conn.send_data(_dumps(ticker_payload(market, last)))

    # -- data ------------------------------------------------------------------------------
    def on_trade(self, market: Market, trade: Trade, record: TruthRecord) -> None:
        pid = market.native
        self._last_record[pid] = record
        if ("matches", pid) in self.index:
            self.publish(("matches", pid), _dumps(match_payload(market, trade)), (record,))
        if ("ticker", pid) in self.index:
            self.publish(("ticker", pid), _dumps(ticker_payload(market, trade)))

    def on_second(self) -> None:
        now = time.time_ns() // 1000
        for key in [k for k in self.index if isinstance(k, tuple) and k[0] == "heartbeat"]:
            market = self.markets.get(key[1])
            if market is not None:
                self.publish(key, _dumps(heartbeat_payload(market, now)))

    # -- REST ------------------------------------------------------------------------------
    def rest_error_body(self, status: int, message: str) -> Any:
        if status == 429:
            return {"message": "Public rate limit exceeded"}
        return {"message": f"Internal server error: {message}"}

    def _product(self, request: web.Request) -> Market:
        market = self.markets.get(request.match_info["product_id"])
        if market is None:
            raise RestError(404, {"message": "NotFound"})
        return market

    async def products(self, request: web.Request) -> web.Response:
        return web.json_response([product_row(m) for m in self.markets.values()])

    async def product(self, request: web.Request) -> web.Response:
        return web.json_response(product_row(self._product(request)))

    async def book(self, request: web.Request) -> web.Response:
        market = self._product(request)
        level = request.query.get("level", "1")
        if level not in ("1", "2"):
            raise RestError(400, {"message": "Invalid level (the simulator serves levels 1 and 2)"})
        return web.json_response(
            {
                "bids": [[market.fmt_price(market.bid), market.fmt_size(market.bid_size), 1]],
                "asks": [[market.fmt_price(market.ask), market.fmt_size(market.ask_size), 1]],
                "sequence": market.seq,
                "auction_mode": False,
                "auction": None,
                "time": iso_us(time.time_ns() // 1000),
            }
        )

    async def ticker(self, request: web.Request) -> web.Response:
        market = self._product(request)
        last = market.last
        return web.json_response(
            {
                "ask": market.fmt_price(market.ask),
                "bid": market.fmt_price(market.bid),
                "volume": market.fmt_size(market.volume),
                "trade_id": last.trade_id if last else 0,
                "price": market.fmt_price(last.price if last else market.open_price),
                "size": market.fmt_size(last.size if last else 0),
                "time": iso_us(last.ts_us if last else time.time_ns() // 1000),
            }
        )

    async def trades(self, request: web.Request) -> web.Response:
        """Newest first. ``after=X``: the ``limit`` trades below id X; ``before=X``: the ``limit``
        trades just above X; neither: the newest ``limit``."""
        market = self._product(request)
        try:
            limit = int_param(request, "limit", 1000, lo=1, hi=1000) or 1000
            before = int_param(request, "before", None, lo=0, hi=2**63 - 1)
            after = int_param(request, "after", None, lo=0, hi=2**63 - 1)
        except ValueError as exc:
            raise RestError(400, {"message": str(exc)}) from None
        history = market.history
        if after is not None:
            end = history_from(market, after)
            page = history[max(0, end - limit) : end]
        elif before is not None:
            start = history_from(market, before + 1)
            page = history[start : start + limit]
        else:
            page = history[-limit:]
        page = page[::-1]
        headers = {}
        if page:
            headers = {"CB-BEFORE": str(page[0].trade_id), "CB-AFTER": str(page[-1].trade_id)}
        return web.json_response([trade_row(market, t) for t in page], headers=headers)

    async def candles(self, request: web.Request) -> web.Response:
        """Candles with ``start <= time <= end``, newest first; more than 300 is rejected."""
        market = self._product(request)
        try:
            granularity = int(request.query.get("granularity", "60"))
            start_s = parse_time_s(request.query["start"]) if "start" in request.query else None
            end_s = parse_time_s(request.query["end"]) if "end" in request.query else None
        except ValueError:
            raise RestError(400, {"message": "Invalid start, end or granularity"}) from None
        if granularity not in CANDLE_GRANULARITIES_S:
            raise RestError(400, {"message": "Unsupported granularity"})
        if end_s is None:
            end_s = int(self.clock.now())
        if start_s is None:
            start_s = end_s - granularity * MAX_CANDLES
        if (end_s - start_s) // granularity + 1 > MAX_CANDLES:
            raise RestError(400, {"message": "granularity too small for the requested time range"})
        candles = bars(market, interval_ms=granularity * 1000, lo_ms=start_s * 1000, hi_ms=end_s * 1000 + 999)
        rows = [candle_row(market, b) for b in reversed(candles) if b.start_ms // 1000 <= end_s]
        return web.Response(text="[" + ",".join(rows) + "]", content_type="application/json")
