"""Bybit spot (v5): websocket ``publicTrade``/``tickers``/``orderbook.1``, REST ``recent-trade``.

Wire facts (docs/exchanges.md, Bybit): symbols are ``BTCUSDT`` (split by discovery's
``baseCoin``/``quoteCoin``). Subscribe with ``{"op":"subscribe","args":[topic, ...]}``, at most 10
args per spot request; each request is answered ``{"success":true|false,"op":"subscribe",...}``.
Pushes are ``{"topic":"<name>.<symbol>","type":"snapshot"|"delta","ts":<ms>,"data":...}``. The
client sends ``{"op":"ping"}`` every 20 s (answered ``ret_msg`` ``pong``). Trade ids ``i`` are
numeric strings that increase but are not documented as consecutive, so they only order trades.
REST ``/v5/market/recent-trade`` serves the last 60 spot trades and nothing older: a longer
outage loses trades for good, and those become recorded gaps. Public REST: 600 requests per 5 s
per IP (a breach is HTTP 403 and a ban of at least 10 minutes).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
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

NAME = "bybit"
REST_URL = "https://api.bybit.com"
WS_URL = "wss://stream.bybit.com/v5/public/spot"

#: Spot: at most 10 args per subscribe request.
ARGS_PER_REQUEST = 10
#: No documented per-second message limit; subscribes and 20 s pings stay well under this.
WS_MESSAGES_PER_S = 5.0
#: 600 requests per 5 s per IP; a tenth of it leaves room for other clients on the host.
REST_WEIGHT_PER_S = 12.0
REST_WEIGHT_BURST = 20
#: Args of one connection total at most 21,000 characters: 3 topics (~60 chars) per market.
MARKETS_PER_CONNECTION = 100
MAX_CONNECTION_AGE_S = 23.5 * 3600
PING_INTERVAL_S = 20.0
CONSECUTIVE_IDS = False
PER_SYMBOL_BATCH_CHANNELS: frozenset[str] = frozenset()
#: Spot ``recent-trade`` limit is 1-60: the whole history REST can serve.
TRADES_PAGE_LIMIT = 60
KLINES_MAX_ROWS = 1000

_TOPICS: dict[str, Channel] = {"publicTrade": "trades", "tickers": "ticker", "orderbook": "l1"}
_CHANNEL_TOPIC: dict[str, str] = {"trades": "publicTrade", "ticker": "tickers", "l1": "orderbook.1"}


def _result(body: str, what: str) -> dict[str, Any]:
    """The ``result`` of ``{"retCode":0,"retMsg":"OK","result":{...},"time":...}``."""
    doc = json.loads(body)
    if not isinstance(doc, dict) or doc.get("retCode") != 0 or not isinstance(doc.get("result"), dict):
        raise UnknownFrame(f"{what}: error or no result: {str(doc)[:200]}")
    return doc["result"]


def discovery_request() -> RestRequest:
    return RestRequest("GET", "/v5/market/instruments-info", (("category", "spot"),))


def parse_markets(body: str) -> list[Market]:
    """``{"retCode":0,"result":{"category":"spot","list":[{"symbol":"BTCUSDT","baseCoin":"BTC",
    "quoteCoin":"USDT","status":"Trading",...}]}}``; ``trading`` needs status ``Trading``."""
    rows = _result(body, "instruments-info").get("list")
    if not isinstance(rows, list):
        raise UnknownFrame("instruments-info result without a list")
    return [
        Market(str(r["symbol"]), str(r["baseCoin"]), str(r["quoteCoin"]), r.get("status") == "Trading")
        for r in rows
    ]


def bootstrap_request() -> RestRequest | None:
    return None


def session(*, ws_url: str, bootstrap_body: str | None, conn_id: str) -> Session:
    """No token; the client pings every 20 s."""
    return Session(url=ws_url, ping_interval_s=PING_INTERVAL_S)


def _requests(op: str, markets: Sequence[str], channels: Sequence[Channel], first_id: int) -> list[str]:
    args = [f"{_CHANNEL_TOPIC[c]}.{m}" for m in markets for c in channels if c in _CHANNEL_TOPIC]
    return [
        json.dumps({"req_id": str(first_id + i), "op": op, "args": part}, separators=(",", ":"))
        for i, part in enumerate(chunks(args, ARGS_PER_REQUEST))
    ]


def subscribe_messages(markets: Sequence[str], channels: Sequence[Channel], *, firehose: bool) -> list[str]:
    """``{"req_id":"1","op":"subscribe","args":["publicTrade.BTCUSDT","tickers.BTCUSDT",...]}``,
    10 args per request (there is no all-market ticker topic)."""
    return _requests("subscribe", markets, channels, 1)


def unsubscribe_messages(markets: Sequence[str], channels: Sequence[Channel]) -> list[str]:
    return _requests("unsubscribe", markets, channels, 1_000_000)


def ping_message(n: int) -> str | None:
    return json.dumps({"req_id": f"p{n}", "op": "ping"}, separators=(",", ":"))


def classify(text: str) -> Frame:
    doc = loads(text)
    if not isinstance(doc, dict):
        raise UnknownFrame("not an object")
    topic = doc.get("topic")
    if isinstance(topic, str):
        name, _, symbol = topic.rpartition(".")
        channel = _TOPICS.get(name.partition(".")[0])
        if channel is None or not symbol:
            raise UnknownFrame(f"unknown topic {topic!r}")
        if channel == "trades":
            return _on_public_trade(doc, topic, symbol)
        if not isinstance(doc.get("data"), dict):
            raise UnknownFrame(f"{topic} frame without a data object")
        return Frame("data", channel, topic, symbol)
    op = doc.get("op")
    if op in ("subscribe", "unsubscribe", "ping", "pong"):
        if doc.get("success") is False:
            return Frame("error", detail=f"{op}: {doc.get('ret_msg')}")
        return Frame("ack" if op == "subscribe" else "control", detail=str(op))
    raise UnknownFrame(f"no topic and unknown op {op!r}")


def _on_public_trade(doc: dict[str, Any], topic: str, symbol: str) -> Frame:
    """``{"topic":"publicTrade.BTCUSDT","type":"snapshot","ts":1767225600457,"data":[{"T":1767225600455,
    "s":"BTCUSDT","S":"Buy","v":"0.0015","p":"94210.02","i":"2290000000061666327","BT":false}]}`` —
    ``S`` is the taker's side; trades ascending, one symbol per frame."""
    data = doc.get("data")
    if not isinstance(data, list) or not data or not all(isinstance(d, dict) and "i" in d for d in data):
        raise UnknownFrame("publicTrade frame without trades carrying an id")
    return Frame("data", "trades", topic, symbol, trade_ids=tuple(as_int(d["i"]) for d in data))


# Tickers: ``{"topic":"tickers.BTCUSDT","ts":1767225600123,"type":"snapshot","cs":44131234,
# "data":{"symbol":"BTCUSDT","lastPrice":"94210.02","highPrice24h":"94800","lowPrice24h":"91500",
# "prevPrice24h":"92000","volume24h":"1834.2","turnover24h":"171592311.5","price24hPcnt":"0.024"}}``.
# L1: ``{"topic":"orderbook.1.BTCUSDT","ts":1767225600201,"type":"snapshot","data":{"s":"BTCUSDT",
# "b":[["94210.01","0.812"]],"a":[["94210.02","0.044"]],"u":55102931,"seq":80811223344},
# "cts":1767225600199}``: both land as sent (classify only checks that ``data`` is an object).


# -- REST trades ------------------------------------------------------------------------------
def recent_trades_request(native_symbol: str) -> RestRequest:
    params = (("category", "spot"), ("symbol", native_symbol), ("limit", str(TRADES_PAGE_LIMIT)))
    return RestRequest("GET", "/v5/market/recent-trade", params)


def gap_fill_request(native_symbol: str, *, after_id: int, until_id: int | None) -> RestRequest:
    """The last 60 trades; there is no paging and no older history."""
    return recent_trades_request(native_symbol)


def parse_trades_page(
    body: str,
    *,
    request: RestRequest,
    headers: Mapping[str, str],
    after_id: int,
    until_id: int | None,
) -> TradesPage:
    """``{"retCode":0,"result":{"category":"spot","list":[{"execId":"2290000000061666327",
    "symbol":"BTCUSDT","price":"94210.02","size":"0.0015","side":"Buy","time":"1767225600455",
    "isBlockTrade":false}]}}``, newest first. Ids are not consecutive, so a page that does not
    reach back to the last seen id (``after_id``) may have missed trades: that span is a gap."""
    rows = _result(body, "recent-trade").get("list")
    if not isinstance(rows, list):
        raise UnknownFrame("recent-trade result without a list")
    ids = tuple(sorted(as_int(r["execId"]) for r in rows))
    gap = (after_id, ids[0]) if ids and ids[0] > after_id else None
    return TradesPage(ids, None, gap)


def l1_poll_request(native_symbol: str) -> RestRequest | None:
    """No poller: ``orderbook.1`` pushes on change and re-sends its snapshot every 3 s."""
    return None


def klines_request(native_symbol: str, *, start_ms: int, end_ms: int) -> RestRequest:
    """``/v5/market/kline?category=spot&symbol=&interval=1&start=&end=&limit=`` (ms)."""
    rows = (end_ms - start_ms) // 60_000 + 1
    params = (
        ("category", "spot"),
        ("symbol", native_symbol),
        ("interval", "1"),
        ("start", str(start_ms)),
        ("end", str(end_ms)),
        ("limit", str(min(max(rows, 1), KLINES_MAX_ROWS))),
    )
    return RestRequest("GET", "/v5/market/kline", params)


def parse_klines(body: str) -> list[Candle]:
    """``{"retCode":0,"result":{"symbol":"BTCUSDT","category":"spot","list":[["1767225600000",
    "94210.01","94230","94190.1","94220.55","12.4051","1168771.2"]]}}``: start (ms), OHLC, base
    volume, turnover; newest first; no trade count."""
    rows = _result(body, "kline").get("list")
    if not isinstance(rows, list) or not all(isinstance(r, list) and len(r) >= 6 for r in rows):
        raise UnknownFrame("kline result is not a list of 7-field rows")
    return sorted((Candle(as_int(r[0]), str(r[5])) for r in rows), key=lambda c: c.start_ms)
