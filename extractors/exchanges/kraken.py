"""Kraken spot: websocket v2 ``trade``/``ticker``, REST ``AssetPairs`` and ``Trades`` walked by time.

Wire facts (docs/exchanges.md, Kraken): v2 symbols are ``BASE/QUOTE`` with modern asset codes
(``BTC/USD``), the native symbol here; REST names the same pair by its ``altname`` with legacy codes
(``XBTUSD``: ``XBT`` is BTC, ``XDG`` is DOGE). Frames are ``{"channel":…,"type":"snapshot"|"update",
"data":[…]}``; prices and quantities are JSON *numbers* (read as their exact text downstream). A
subscribe is acknowledged once per symbol (``{"method":"subscribe","success":true,"result":{…}}``).
Subscribed connections get a ``heartbeat`` frame about once a second, so no client ping is needed.
``trade_id`` is a sequential integer per book. The ticker carries the best bid/ask and sizes: it is
the L1 source too, triggered on every best bid/offer change (``event_trigger: bbo``) when L1 is asked.

REST ``/0/public/Trades?pair=&since=&count=`` pages *forward from a time* (``since``: nanoseconds;
the response's ``last`` is the cursor of the next page), not from a trade id, so a gap fill starts
at the newest page and walks back in time until a page reaches the last trade seen, then forward
with ``last`` to where it started. Public REST: about one call per second per IP.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from decimal import Decimal
from typing import Any

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
    chunks,
    loads,
)

NAME = "kraken"
REST_URL = "https://api.kraken.com"
WS_URL = "wss://ws.kraken.com/v2"

#: The message rate limit is not published as a number (an error frame says when it is exceeded).
WS_MESSAGES_PER_S = 2.0
#: "About one call per second" keeps public REST safe; small bursts.
REST_WEIGHT_PER_S = 1.0
REST_WEIGHT_BURST = 3
#: No documented per-connection symbol limit; one subscribe message names this many symbols.
SYMBOLS_PER_REQUEST = 50
MARKETS_PER_CONNECTION = 200
MAX_CONNECTION_AGE_S = 23.5 * 3600
CONSECUTIVE_IDS = True
PER_SYMBOL_BATCH_CHANNELS: frozenset[str] = frozenset()
TRADES_PAGE_LIMIT = 1000
#: OHLC serves the newest 720 bars of an interval.
KLINES_MAX_ROWS = 720

#: v2 (and canonical) asset code -> the legacy code REST pair names use.
_LEGACY = {"BTC": "XBT", "DOGE": "XDG"}
_MODERN = {v: k for k, v in _LEGACY.items()}
_NS = 1_000_000_000


def modern_symbol(wsname: str) -> str:
    """``XBT/USD`` -> ``BTC/USD``: the v2 symbol of a REST ``wsname`` (or a v1 pair)."""
    base, _, quote = wsname.partition("/")
    return f"{_MODERN.get(base, base)}/{_MODERN.get(quote, quote)}"


def rest_pair(native_symbol: str) -> str:
    """``BTC/USD`` -> ``XBTUSD``: the REST ``altname`` of a v2 symbol (a name without ``/`` is
    taken as a REST name already)."""
    base, sep, quote = native_symbol.partition("/")
    if not sep:
        return native_symbol
    return _LEGACY.get(base, base) + _LEGACY.get(quote, quote)


def discovery_request() -> RestRequest:
    return RestRequest("GET", "/0/public/AssetPairs")


def parse_markets(body: str) -> list[Market]:
    """``{"error":[],"result":{"XXBTZUSD":{"altname":"XBTUSD","wsname":"XBT/USD","base":"XXBT",
    "quote":"ZUSD","status":"online",...}}}``. Pairs without a ``wsname`` (dark pools ``….d``) are
    skipped; ``trading`` needs status ``online`` (``cancel_only``, ``post_only``, … are not)."""
    doc = json.loads(body)
    if not isinstance(doc, dict) or doc.get("error") or not isinstance(doc.get("result"), dict):
        raise UnknownFrame(f"AssetPairs error or no result: {str(doc)[:200]}")
    markets = []
    for row in doc["result"].values():
        wsname = row.get("wsname") if isinstance(row, dict) else None
        if not isinstance(wsname, str) or "/" not in wsname:
            continue
        symbol = modern_symbol(wsname)
        base, _, quote = symbol.partition("/")
        markets.append(Market(symbol, base, quote, row.get("status", "online") == "online"))
    return markets


def bootstrap_request() -> RestRequest | None:
    return None


def session(*, ws_url: str, bootstrap_body: str | None, conn_id: str) -> Session:
    """No token; the heartbeat channel keeps a subscribed connection alive."""
    return Session(url=ws_url)


def _requests(method: str, markets: Sequence[str], channels: Sequence[Channel]) -> list[str]:
    params: list[dict[str, Any]] = []
    for part in chunks(markets, SYMBOLS_PER_REQUEST):
        if "trades" in channels:
            params.append({"channel": "trade", "symbol": part})
        if "ticker" in channels or "l1" in channels:
            ticker: dict[str, Any] = {"channel": "ticker", "symbol": part}
            if method == "subscribe" and "l1" in channels:
                ticker["event_trigger"] = "bbo"
            params.append(ticker)
    first = 1 if method == "subscribe" else 1_000_000
    return [
        json.dumps({"method": method, "params": p, "req_id": first + i}, separators=(",", ":"))
        for i, p in enumerate(params)
    ]


def subscribe_messages(markets: Sequence[str], channels: Sequence[Channel], *, firehose: bool) -> list[str]:
    """``{"method":"subscribe","params":{"channel":"trade","symbol":["BTC/USD"]},"req_id":1}`` per
    channel and chunk of symbols (a snapshot follows by default: recent trades, the current ticker)."""
    return _requests("subscribe", markets, channels)


def unsubscribe_messages(markets: Sequence[str], channels: Sequence[Channel]) -> list[str]:
    return _requests("unsubscribe", markets, channels)


def ping_message(n: int) -> str | None:
    return None


def classify(text: str) -> Frame:
    doc = loads(text)
    if not isinstance(doc, dict):
        raise UnknownFrame("not an object")
    channel = doc.get("channel")
    if channel == "trade":
        return _on_trade(doc)
    if channel == "ticker":
        return _on_ticker(doc)
    if channel in ("heartbeat", "status"):
        return Frame("control", stream=str(channel), detail=str(channel))
    method = doc.get("method")
    if method in ("subscribe", "unsubscribe", "pong"):
        if doc.get("success") is False:
            return Frame("error", detail=f"{method}: {doc.get('error')}")
        return Frame("ack" if method == "subscribe" else "control", detail=str(method))
    if "error" in doc:
        return Frame("error", detail=str(doc["error"]))
    raise UnknownFrame(f"unknown channel {channel!r} / method {method!r}")


def _items(doc: dict[str, Any]) -> list[dict[str, Any]]:
    data = doc.get("data")
    if not isinstance(data, list) or not data or not all(isinstance(d, dict) and "symbol" in d for d in data):
        raise UnknownFrame(f"{doc.get('channel')} frame without data items carrying a symbol")
    return data


def _on_trade(doc: dict[str, Any]) -> Frame:
    """``{"channel":"trade","type":"update","data":[{"symbol":"BTC/USD","side":"buy","price":94210.1,
    "qty":0.0015,"ord_type":"market","trade_id":81234567,"timestamp":"2026-01-01T00:00:00.455123Z"}]}``
    — ``side`` is the taker's; the subscribe snapshot repeats recent trades (duplicates)."""
    items = _items(doc)
    symbols = {str(d["symbol"]) for d in items}
    if len(symbols) != 1 or not all("trade_id" in d for d in items):
        raise UnknownFrame("trade frame mixing symbols or without trade_id")
    ids = tuple(as_int(d["trade_id"]) for d in items)
    return Frame("data", "trades", "trade", symbols.pop(), trade_ids=ids)


def _on_ticker(doc: dict[str, Any]) -> Frame:
    """``{"channel":"ticker","type":"update","data":[{"symbol":"BTC/USD","bid":94210.0,"bid_qty":0.5,
    "ask":94210.1,"ask_qty":1.2,"last":94210.1,"volume":1834.2,"vwap":93555.4,"low":91500.0,
    "high":94800.0,"change":2210.1,"change_pct":2.4,"timestamp":"2026-01-01T00:00:00.123456Z"}]}``
    — one item; lands as ``ticker``, and its best bid/ask is silver's Kraken L1 source."""
    items = _items(doc)
    return Frame("data", "ticker", "ticker", str(items[0]["symbol"]))


# -- REST trades ------------------------------------------------------------------------------
def _trades_request(pair: str, since_ns: int | None, walk: str) -> RestRequest:
    params: tuple[tuple[str, str], ...] = (("pair", pair),)
    if since_ns is not None:
        params += (("since", str(since_ns)),)
    return RestRequest("GET", "/0/public/Trades", (*params, ("count", str(TRADES_PAGE_LIMIT))), walk=walk)


def recent_trades_request(native_symbol: str) -> RestRequest:
    return _trades_request(rest_pair(native_symbol), None, "")


def gap_fill_request(native_symbol: str, *, after_id: int, until_id: int | None) -> RestRequest:
    """The newest page first: it shows where the walk back in time has to reach."""
    return _trades_request(rest_pair(native_symbol), None, "back")


def _rows(body: str) -> tuple[list[tuple[int, int]], int | None]:
    """``(trade id, time ns)`` of each row, sorted by id, and the ``last`` cursor."""
    doc = json.loads(body, parse_float=Decimal)
    if not isinstance(doc, dict) or doc.get("error") or not isinstance(doc.get("result"), dict):
        raise UnknownFrame(f"Trades error or no result: {str(doc)[:200]}")
    result = doc["result"]
    pages = [v for k, v in result.items() if k != "last"]
    if len(pages) != 1 or not isinstance(pages[0], list):
        raise UnknownFrame("Trades result without exactly one pair")
    rows = sorted((as_int(r[6]), int(Decimal(r[2]) * _NS)) for r in pages[0])
    last = result.get("last")
    return rows, as_int(last) if last is not None else None


def parse_trades_page(
    body: str,
    *,
    request: RestRequest,
    headers: Mapping[str, str],
    after_id: int,
    until_id: int | None,
) -> TradesPage:
    """``{"error":[],"result":{"XXBTZUSD":[["94210.10000","0.00150000",1767225600.455123,"b","m","",
    81234567]],"last":"1767225600455123000"}}``: price, volume, time (s), side, order type, misc,
    trade id; oldest first.

    The walk (``request.walk``): ``back[:<upper>]`` pages step back in time (each ``since`` further
    behind the page's oldest trade) until a page holds ``after_id + 1`` or older; then ``fwd:<upper>``
    pages follow ``last`` until they reach ``upper`` (the oldest id the walk already holds from the
    newest page) or ``until_id``. A ``since=0`` page that still starts after ``after_id + 1`` is the
    oldest history there is: the trades before it are a gap.
    """
    rows, last = _rows(body)
    pair = str(request.param("pair"))
    mode, _, upper_text = request.walk.partition(":")
    if not rows:
        lost = mode != "" and until_id is not None and until_id > after_id + 1
        return TradesPage((), None, (after_id, until_id) if lost and until_id is not None else None)
    ids = tuple(i for i, _ in rows)
    if not mode:
        return TradesPage(ids, None)  # a baseline: the newest page only
    upper = as_int(upper_text) if upper_text else ids[0]
    end = upper if until_id is None else min(upper, until_id)
    gap: tuple[int, int] | None = None
    if mode == "back" and ids[0] > after_id + 1:
        since = request.param("since")
        if (since is None and len(rows) < TRADES_PAGE_LIMIT) or since == "0":
            gap = (after_id, min(ids[0], end))  # nothing older: the history starts here
        else:
            step = 4 * max(rows[-1][1] - rows[0][1], _NS)
            return TradesPage(ids, _trades_request(pair, max(0, rows[0][1] - step), f"back:{upper}"))
    done = ids[-1] >= end - 1 or len(rows) < TRADES_PAGE_LIMIT or last is None
    return TradesPage(ids, None if done else _trades_request(pair, last, f"fwd:{upper}"), gap)


def l1_poll_request(native_symbol: str) -> RestRequest | None:
    """No poller: the ticker subscription re-sends the current book top on every subscribe."""
    return None


def klines_request(native_symbol: str, *, start_ms: int, end_ms: int) -> RestRequest:
    """``/0/public/OHLC?pair=&interval=1&since=<s>``: 1-minute bars after ``since`` (the newest 720)."""
    since_s = max(0, start_ms // 1000 - 1)
    params = (("pair", rest_pair(native_symbol)), ("interval", "1"), ("since", str(since_s)))
    return RestRequest("GET", "/0/public/OHLC", params)


def parse_klines(body: str) -> list[Candle]:
    """``{"error":[],"result":{"XXBTZUSD":[[1767225600,"94210.0","94230.0","94190.1","94220.5",
    "94211.2","12.40510000",1841]],"last":1767225600}}``: time (s), OHLC, vwap, volume, count."""
    doc = json.loads(body)
    if not isinstance(doc, dict) or doc.get("error") or not isinstance(doc.get("result"), dict):
        raise UnknownFrame("OHLC error or no result")
    pages = [v for k, v in doc["result"].items() if k != "last"]
    if len(pages) != 1 or not all(isinstance(r, list) and len(r) >= 8 for r in pages[0]):
        raise UnknownFrame("OHLC result is not one pair of 8-field rows")
    return [Candle(as_int(r[0]) * 1000, str(r[6]), as_int(r[7])) for r in pages[0]]
