"""KuCoin spot: a public token before every connect, JSON ping/pong, ``histories`` gap fill.

Wire facts (exchanges.md section 3): ``POST /api/v1/bullet-public`` returns a token and the
websocket endpoint with ``pingInterval`` (ms); connect with ``?token=...&connectId=...`` and wait
for ``welcome`` before subscribing. At most 100 topics per subscribe request, 100 symbols per
topic string, 300-400 topics per connection, 100 client messages per 10 s. Match ``sequence`` is
monotonic but not consecutive, and REST ``histories`` only returns the last 100 trades, so a long
outage can lose trades for good: those become recorded gaps.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any
from urllib.parse import urlencode

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

NAME = "kucoin"
REST_URL = "https://api.kucoin.com"
#: Empty: use the endpoint the token response names (it may change); a value overrides it.
WS_URL = ""

#: The lower of the documented per-connection topic limits (300 on the error page, 400 elsewhere).
TOPICS_PER_CONNECTION = 300
SYMBOLS_PER_TOPIC = 100
#: 100 client messages per 10 s, pings included.
WS_MESSAGES_PER_S = 5.0
#: Public pool: 2000 weight per 30 s per IP.
REST_WEIGHT_PER_S = 2000 / 30
REST_WEIGHT_BURST = 200
MAX_CONNECTION_AGE_S = 23.5 * 3600
CONSECUTIVE_IDS = False
#: ``/market/ticker:all`` pushes one frame per symbol: batch it per symbol.
PER_SYMBOL_BATCH_CHANNELS: frozenset[str] = frozenset({"ticker"})
#: Two topics per market (match, level1); one kept for ticker:all.
MARKETS_PER_CONNECTION = (TOPICS_PER_CONNECTION - 1) // 2
HISTORY_LIMIT = 100
KLINES_MAX_ROWS = 1500

_TOPIC_PREFIX: dict[Channel, str] = {
    "ticker": "/market/ticker",
    "trades": "/market/match",
    "l1": "/spotMarket/level1",
}
_OK = "200000"


def discovery_request() -> RestRequest:
    return RestRequest("GET", "/api/v2/symbols", (), 4)


def parse_markets(body: str) -> list[Market]:
    """``{"code":"200000","data":[{"symbol":"BTC-USDT","baseCurrency":"BTC","quoteCurrency":"USDT",
    "enableTrading":true,...}]}``."""
    rows = _data(body)
    return [
        Market(
            str(r["symbol"]), str(r["baseCurrency"]), str(r["quoteCurrency"]), r.get("enableTrading") is True
        )
        for r in rows
    ]


def _data(body: str) -> Any:
    doc = json.loads(body)
    if not isinstance(doc, dict) or str(doc.get("code")) != _OK or "data" not in doc:
        code = doc.get("code") if isinstance(doc, dict) else None
        raise UnknownFrame(f"KuCoin REST error code {code!r}")
    return doc["data"]


def bootstrap_request() -> RestRequest | None:
    """A fresh public token before every (re)connect."""
    return RestRequest("POST", "/api/v1/bullet-public", (), 10)


def session(*, ws_url: str, bootstrap_body: str | None, conn_id: str) -> Session:
    """From ``{"code":"200000","data":{"token":"...","instanceServers":[{"endpoint":"wss://...",
    "pingInterval":18000,"pingTimeout":10000}]}}``: URL with token and connectId, ping cadence."""
    if bootstrap_body is None:
        raise ValueError("KuCoin needs the bullet-public response to connect")
    data = _data(bootstrap_body)
    server = data["instanceServers"][0]
    base = ws_url or str(server["endpoint"])
    query = urlencode({"token": data["token"], "connectId": conn_id})
    url = f"{base}{'&' if '?' in base else '?'}{query}"
    return Session(
        url=url, ping_interval_s=float(server.get("pingInterval", 18000)) / 1000, await_welcome=True
    )


def _topics(markets: Sequence[str], channels: Sequence[Channel], *, firehose: bool) -> list[str]:
    topics = ["/market/ticker:all"] if firehose and "ticker" in channels else []
    for channel in ("trades", "l1"):
        if channel in channels:
            topics += [f"{_TOPIC_PREFIX[channel]}:{','.join(p)}" for p in chunks(markets, SYMBOLS_PER_TOPIC)]
    return topics


def _requests(kind: str, topics: list[str], first_id: int) -> list[str]:
    return [
        json.dumps(
            {"id": first_id + i, "type": kind, "topic": t, "privateChannel": False, "response": True},
            separators=(",", ":"),
        )
        for i, t in enumerate(topics)
    ]


def subscribe_messages(markets: Sequence[str], channels: Sequence[Channel], *, firehose: bool) -> list[str]:
    """``{"id":1,"type":"subscribe","topic":"/market/match:BTC-USDT,ETH-USDT","privateChannel":false,
    "response":true}``: one message per topic string (each up to 100 symbols)."""
    return _requests("subscribe", _topics(markets, channels, firehose=firehose), 1)


def unsubscribe_messages(markets: Sequence[str], channels: Sequence[Channel]) -> list[str]:
    return _requests("unsubscribe", _topics(markets, channels, firehose=False), 1_000_000)


def ping_message(n: int) -> str | None:
    return json.dumps({"id": f"ping-{n}", "type": "ping"}, separators=(",", ":"))


def classify(text: str) -> Frame:
    doc = loads(text)
    if not isinstance(doc, dict) or "type" not in doc:
        raise UnknownFrame("not an object with a type")
    kind = doc["type"]
    if kind == "message":
        return _on_message(doc)
    if kind in ("welcome", "pong"):
        return Frame("control", detail=str(kind))
    if kind == "ack":
        return Frame("ack", detail=str(doc.get("id", "")))
    if kind == "error":
        return Frame("error", detail=f"code {doc.get('code')}: {doc.get('data')}")
    if kind == "notice" or kind == "ping":
        return Frame("control", detail=str(kind))
    raise UnknownFrame(f"unknown type {kind!r}")


def _on_message(doc: dict[str, Any]) -> Frame:
    topic = str(doc.get("topic", ""))
    prefix, _, symbols = topic.partition(":")
    data = doc.get("data")
    if not isinstance(data, dict):
        raise UnknownFrame("message without a data object")
    if prefix == _TOPIC_PREFIX["ticker"]:
        return _on_ticker(topic, symbols, doc, data)
    if prefix == _TOPIC_PREFIX["trades"]:
        return _on_match(topic, data)
    if prefix == _TOPIC_PREFIX["l1"]:
        return _on_level1(topic, symbols, data)
    raise UnknownFrame(f"unknown topic {topic!r}")


def _on_ticker(topic: str, symbols: str, doc: dict[str, Any], data: dict[str, Any]) -> Frame:
    """``{"type":"message","topic":"/market/ticker:all","subject":"ETH-USDT","data":{"bestAsk":"3120.56",
    "bestAskSize":"4.1","bestBid":"3120.55","bestBidSize":"0.72","price":"3120.55","size":"0.0131",
    "sequence":"21874411923","time":1767225600789}}`` — for ``:all`` the subject is the symbol. Lands
    as ``ticker``; the inside quote and its sizes in it are silver's KuCoin L1 source too."""
    symbol = str(doc.get("subject", "")) if symbols == "all" else symbols
    if not symbol or "," in symbol:
        raise UnknownFrame("ticker without a single symbol")
    return Frame("data", "ticker", topic, symbol)


def _on_match(topic: str, data: dict[str, Any]) -> Frame:
    """``{"type":"message","topic":"/market/match:BTC-USDT","subject":"trade.l3match","data":{"symbol":
    "BTC-USDT","sequence":"12840019911847401","tradeId":"12840019911847401","side":"sell","price":"94209.9",
    "size":"0.0021","type":"match","time":"1767225600801000000"}}`` — ``sequence`` orders trades."""
    if "symbol" not in data or "sequence" not in data:
        raise UnknownFrame("match without symbol or sequence")
    return Frame("data", "trades", topic, str(data["symbol"]), trade_ids=(as_int(data["sequence"]),))


def _on_level1(topic: str, symbols: str, data: dict[str, Any]) -> Frame:
    """``{"type":"message","topic":"/spotMarket/level1:BTC-USDT","subject":"level1","data":{"asks":["94210",
    "0.51"],"bids":["94209.9","1.07"],"timestamp":1767225600803}}``."""
    if not symbols or "," in symbols or "asks" not in data or "bids" not in data:
        raise UnknownFrame("level1 without a single symbol, asks or bids")
    return Frame("data", "l1", topic, symbols)


def recent_trades_request(native_symbol: str) -> RestRequest:
    return RestRequest("GET", "/api/v1/market/histories", (("symbol", native_symbol),), 3)


def gap_fill_request(native_symbol: str, *, after_id: int, until_id: int | None) -> RestRequest:
    """The last 100 trades; there is no paging."""
    return recent_trades_request(native_symbol)


def parse_trades_page(
    body: str,
    *,
    request: RestRequest,
    headers: Mapping[str, str],
    after_id: int,
    until_id: int | None,
) -> TradesPage:
    """``{"code":"200000","data":[{"sequence":"1545896668571","price":"0.07","size":"0.004","side":"buy",
    "time":1545904567062140823}]}``. A gap when the last seen sequence is older than the whole page."""
    rows = _data(body)
    if not isinstance(rows, list):
        raise UnknownFrame("histories data is not a list")
    ids = tuple(sorted(as_int(r["sequence"]) for r in rows))
    gap = (after_id, ids[0]) if ids and ids[0] > after_id else None
    return TradesPage(ids, None, gap)


def l1_poll_request(native_symbol: str) -> RestRequest | None:
    """No poller: level1 pushes on every change."""
    return None


def klines_request(native_symbol: str, *, start_ms: int, end_ms: int) -> RestRequest:
    """``/api/v1/market/candles?symbol=&type=1min&startAt=&endAt=`` in **seconds**, weight 3."""
    params = (
        ("symbol", native_symbol),
        ("type", "1min"),
        ("startAt", str(start_ms // 1000)),
        ("endAt", str(end_ms // 1000)),
    )
    return RestRequest("GET", "/api/v1/market/candles", params, 3)


def parse_klines(body: str) -> list[Candle]:
    """``{"code":"200000","data":[["1767225600","94210.0","94220.5","94230.0","94190.1","12.405",
    "1168771.2"]]}``: start (s), open, **close**, high, low, base volume, turnover; newest first;
    no trade count."""
    rows = _data(body)
    if not isinstance(rows, list) or not all(isinstance(r, list) and len(r) >= 6 for r in rows):
        raise UnknownFrame("candles data is not a list of 7-field rows")
    return sorted((Candle(as_int(r[0]) * 1000, str(r[5])) for r in rows), key=lambda c: c.start_ms)
