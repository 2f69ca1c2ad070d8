"""Coinbase Exchange: ws-feed ``ticker``/``matches``/``heartbeat``, ``products``, ``trades`` cursor paging.

Wire facts (exchanges.md section 4A): subscribe within 5 s of connecting; the server answers with
``subscriptions``; unknown message types may appear. ``trade_id`` is consecutive per product and
``heartbeat.last_trade_id`` announces the newest one, so a missed ``match`` is detectable. REST
``/products/{id}/trades`` is newest first; ``after=<trade id>`` (the ``CB-AFTER`` header) pages to
older trades. L1 comes from the ticker's best bid/ask; quiet products are polled with
``book?level=1``. Public REST: 10 requests/s, bursts of 15.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote, unquote

from extractors.envelope import Channel
from extractors.exchanges.base import (
    Candle,
    Frame,
    Market,
    RestRequest,
    Session,
    TradesPage,
    UnknownFrame,
    as_int,
    loads,
)

NAME = "coinbase"
REST_URL = "https://api.exchange.coinbase.com"
WS_URL = "wss://ws-feed.exchange.coinbase.com"

#: Client messages: 100/s per IP documented; this is per connection, so stay far below.
WS_MESSAGES_PER_S = 10.0
#: 10 public requests/s, bursts up to 15 (each request weighs 1).
REST_WEIGHT_PER_S = 10.0
REST_WEIGHT_BURST = 15
#: No documented per-connection product limit; keep connections a reasonable size.
MARKETS_PER_CONNECTION = 100
MAX_CONNECTION_AGE_S = 23.5 * 3600
CONSECUTIVE_IDS = True
PER_SYMBOL_BATCH_CHANNELS: frozenset[str] = frozenset()
TRADES_PAGE_LIMIT = 1000
KLINES_MAX_ROWS = 300

_IGNORED_TYPES = frozenset({"status"})


def discovery_request() -> RestRequest:
    return RestRequest("GET", "/products")


def parse_markets(body: str) -> list[Market]:
    """``[{"id":"BTC-USD","base_currency":"BTC","quote_currency":"USD","status":"online",
    "trading_disabled":false,...}]``."""
    rows = json.loads(body)
    if not isinstance(rows, list):
        raise UnknownFrame("products response is not a list")
    return [
        Market(
            str(r["id"]),
            str(r["base_currency"]),
            str(r["quote_currency"]),
            r.get("status") == "online" and r.get("trading_disabled") is not True,
        )
        for r in rows
    ]


def bootstrap_request() -> RestRequest | None:
    return None


def session(*, ws_url: str, bootstrap_body: str | None, conn_id: str) -> Session:
    """The feed needs no token; the heartbeat channel keeps it alive (one frame per product per second)."""
    return Session(url=ws_url)


def _channels(channels: Sequence[Channel]) -> list[str]:
    names = ["heartbeat"]
    if "ticker" in channels or "l1" in channels:
        names.append("ticker")
    if "trades" in channels:
        names.append("matches")
    return names


def _message(kind: str, markets: Sequence[str], channels: Sequence[Channel]) -> list[str]:
    if not markets:
        return []
    doc = {"type": kind, "product_ids": list(markets), "channels": _channels(channels)}
    return [json.dumps(doc, separators=(",", ":"))]


def subscribe_messages(markets: Sequence[str], channels: Sequence[Channel], *, firehose: bool) -> list[str]:
    """``{"type":"subscribe","product_ids":["BTC-USD"],"channels":["heartbeat","ticker","matches"]}``."""
    return _message("subscribe", markets, channels)


def unsubscribe_messages(markets: Sequence[str], channels: Sequence[Channel]) -> list[str]:
    return _message("unsubscribe", markets, channels)


def ping_message(n: int) -> str | None:
    return None


def classify(text: str) -> Frame:
    doc = loads(text)
    if not isinstance(doc, dict) or "type" not in doc:
        raise UnknownFrame("not an object with a type")
    kind = doc["type"]
    if kind in ("match", "last_match"):
        return _on_match(doc)
    if kind == "ticker":
        return _on_ticker(doc)
    if kind == "heartbeat":
        return _on_heartbeat(doc)
    if kind == "subscriptions":
        return Frame("ack", detail="subscriptions")
    if kind == "error":
        return Frame("error", detail=f"{doc.get('message')}: {doc.get('reason')}")
    if kind in _IGNORED_TYPES:
        return Frame("control", detail=str(kind))
    raise UnknownFrame(f"unknown type {kind!r}")


def _on_match(doc: dict[str, Any]) -> Frame:
    """``{"type":"match","trade_id":801234567,"sequence":112233445566,"maker_order_id":"...",
    "taker_order_id":"...","time":"2026-01-01T00:00:00.412345Z","product_id":"BTC-USD","size":"0.0012",
    "price":"94210.01","side":"sell"}`` — ``side`` is the maker's; ``last_match`` comes first."""
    if "product_id" not in doc or "trade_id" not in doc:
        raise UnknownFrame("match without product_id or trade_id")
    return Frame("data", "trades", "matches", str(doc["product_id"]), trade_ids=(as_int(doc["trade_id"]),))


def _on_ticker(doc: dict[str, Any]) -> Frame:
    """``{"type":"ticker","sequence":112233445566,"product_id":"BTC-USD","price":"94210.01",
    "best_bid":"94210.00","best_bid_size":"0.41","best_ask":"94210.01","best_ask_size":"0.025",
    "side":"buy","time":"2026-01-01T00:00:00.412345Z","trade_id":801234567,"last_size":"0.0012"}``
    — lands as ``ticker``; its best bid/ask and sizes are also silver's Coinbase L1 source (there is
    no websocket L1). The first one after subscribing may lack side/time/trade_id/last_size."""
    if "product_id" not in doc:
        raise UnknownFrame("ticker without product_id")
    return Frame("data", "ticker", "ticker", str(doc["product_id"]))


def _on_heartbeat(doc: dict[str, Any]) -> Frame:
    """``{"type":"heartbeat","sequence":90,"last_trade_id":20,"product_id":"BTC-USD",
    "time":"2026-01-01T00:00:00.000000Z"}``: counted, and ``last_trade_id`` reveals missed matches."""
    last = doc.get("last_trade_id")
    return Frame(
        "control",
        stream="heartbeat",
        native_symbol=str(doc.get("product_id")) if "product_id" in doc else None,
        last_trade_id=as_int(last) if last is not None else None,
        detail="heartbeat",
    )


def _product_path(native_symbol: str, suffix: str) -> str:
    """``/products/<id>/<suffix>`` with the product id (it comes from the wire) as one escaped segment.

    ``quote(safe="")`` escapes ``/ ? # %`` and the rest, so the id cannot leave its segment; the
    dot segments ``.`` and ``..`` (which an HTTP client would resolve) are refused with ``ValueError``.
    """
    if native_symbol.strip(".") == "":
        raise ValueError(f"product id {native_symbol!r} cannot be a path segment")
    return f"/products/{quote(native_symbol, safe='')}/{suffix}"


def _trades_request(native_symbol: str, before_cursor: int | None) -> RestRequest:
    params: tuple[tuple[str, str], ...] = (("limit", str(TRADES_PAGE_LIMIT)),)
    if before_cursor is not None:
        params += (("after", str(before_cursor)),)
    return RestRequest("GET", _product_path(native_symbol, "trades"), params)


def recent_trades_request(native_symbol: str) -> RestRequest:
    return _trades_request(native_symbol, None)


def gap_fill_request(native_symbol: str, *, after_id: int, until_id: int | None) -> RestRequest:
    """Walk back from ``until_id`` (exclusive), or from the newest trade, to ``after_id``."""
    return _trades_request(native_symbol, until_id)


def parse_trades_page(
    body: str,
    *,
    request: RestRequest,
    headers: Mapping[str, str],
    after_id: int,
    until_id: int | None,
) -> TradesPage:
    """``[{"trade_id":74,"side":"buy","size":"0.01","price":"100.0","time":"..."}]``, newest first.
    Pages to older trades until ``after_id`` is reached; a gap if the history ends before it."""
    rows = json.loads(body)
    if not isinstance(rows, list):
        raise UnknownFrame("trades response is not a list")
    ids = tuple(sorted(as_int(r["trade_id"]) for r in rows))
    cursor = request.param("after")
    if not ids:
        upper = as_int(cursor) if cursor is not None else None
        gap = (after_id, upper) if upper is not None and upper > after_id + 1 else None
        return TradesPage(ids, None, gap)
    if ids[0] <= after_id + 1:
        return TradesPage(ids, None)
    if len(ids) < TRADES_PAGE_LIMIT:
        return TradesPage(ids, None, (after_id, ids[0]))
    header = {k.lower(): v for k, v in headers.items()}.get("cb-after")
    older = as_int(header) if header is not None else ids[0]
    symbol = unquote(request.path.split("/")[2])
    return TradesPage(ids, _trades_request(symbol, older))


def l1_poll_request(native_symbol: str) -> RestRequest | None:
    """``{"bids":[["94210.00","0.41",3]],"asks":[["94210.01","0.025",1]],"sequence":112233445601,
    "time":"2026-01-01T00:00:01.000123Z"}``: the inside quote of a product that has not ticked."""
    return RestRequest("GET", _product_path(native_symbol, "book"), (("level", "1"),))


def klines_request(native_symbol: str, *, start_ms: int, end_ms: int) -> RestRequest:
    """``/products/<id>/candles?granularity=60&start=&end=`` (ISO 8601, UTC); at most 300 rows."""
    params = (("granularity", "60"), ("start", _iso(start_ms)), ("end", _iso(end_ms)))
    return RestRequest("GET", _product_path(native_symbol, "candles"), params)


def _iso(ms: int) -> str:
    return datetime.fromtimestamp(ms // 1000, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_klines(body: str) -> list[Candle]:
    """``[[1767225600,94190.1,94230.0,94210.0,94220.55,12.4051]]``: start (s), low, high, open,
    close, base volume, as JSON numbers; newest first. The volume keeps the number's exact text."""
    rows = json.loads(body, parse_float=str, parse_int=str)
    if not isinstance(rows, list) or not all(isinstance(r, list) and len(r) >= 6 for r in rows):
        raise UnknownFrame("candles response is not a list of 6-field rows")
    return sorted((Candle(as_int(r[0]) * 1000, str(r[5])) for r in rows), key=lambda c: c.start_ms)
