"""Binance spot: combined-stream websocket, ``exchangeInfo`` discovery, ``historicalTrades`` gap fill.

Wire facts (exchanges.md section 2): stream names are lower case, payload symbols upper case; the
combined endpoint ``/stream`` wraps each event as ``{"stream": ..., "data": ...}``. The server
sends protocol pings every 20 s (the websockets library answers them); at most 5 client messages
per second, 1024 streams per connection, and a forced close after 24 h. Trade ids ``t`` are
consecutive per symbol, and ``historicalTrades?fromId=`` serves that same id space.
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

NAME = "binance"
REST_URL = "https://data-api.binance.vision"
WS_URL = "wss://data-stream.binance.vision"

MAX_STREAMS_PER_CONNECTION = 1024
#: Streams per SUBSCRIBE request: keeps each message small; the limit that matters is per connection.
STREAMS_PER_REQUEST = 200
#: Documented 5 messages/s per connection (pings and pongs included): stay below it.
WS_MESSAGES_PER_S = 3.0
#: 6000 weight per minute per IP; burst up to a tenth of it.
REST_WEIGHT_PER_S = 6000 / 60
REST_WEIGHT_BURST = 600
MAX_CONNECTION_AGE_S = 23.5 * 3600
CONSECUTIVE_IDS = True
PER_SYMBOL_BATCH_CHANNELS: frozenset[str] = frozenset()
#: Two per-market streams (@trade, @bookTicker); one stream slot kept for !miniTicker@arr.
MARKETS_PER_CONNECTION = (MAX_STREAMS_PER_CONNECTION - 1) // 2

TICKER_STREAM = "!miniTicker@arr"
TRADES_PAGE_LIMIT = 1000
KLINES_MAX_ROWS = 1000
_WEIGHT_KLINES = 2
_WEIGHT_EXCHANGE_INFO = 20
_WEIGHT_TRADES = 25

_STREAM_SUFFIX: dict[str, Channel] = {"trade": "trades", "bookTicker": "l1", "miniTicker": "ticker"}


def discovery_request() -> RestRequest:
    return RestRequest("GET", "/api/v3/exchangeInfo", (("permissions", "SPOT"),), _WEIGHT_EXCHANGE_INFO)


def parse_markets(body: str) -> list[Market]:
    """``exchangeInfo``: ``{"symbols":[{"symbol","status","baseAsset","quoteAsset",...}]}``.

    ``trading`` needs status ``TRADING`` and, when present, ``isSpotTradingAllowed``.
    """
    doc = json.loads(body)
    markets = []
    for row in doc["symbols"]:
        trading = row.get("status") == "TRADING" and row.get("isSpotTradingAllowed", True) is not False
        markets.append(Market(str(row["symbol"]), str(row["baseAsset"]), str(row["quoteAsset"]), trading))
    return markets


def bootstrap_request() -> RestRequest | None:
    return None


def session(*, ws_url: str, bootstrap_body: str | None, conn_id: str) -> Session:
    """Combined-stream endpoint; subscriptions are sent after connecting. The server pings."""
    return Session(url=ws_url.rstrip("/") + "/stream", ping_interval_s=None)


def _streams(markets: Sequence[str], channels: Sequence[Channel], *, firehose: bool) -> list[str]:
    streams = [TICKER_STREAM] if firehose and "ticker" in channels else []
    for symbol in markets:
        if "trades" in channels:
            streams.append(f"{symbol.lower()}@trade")
        if "l1" in channels:
            streams.append(f"{symbol.lower()}@bookTicker")
    return streams


def _requests(method: str, streams: list[str], first_id: int) -> list[str]:
    return [
        json.dumps({"method": method, "params": part, "id": first_id + i}, separators=(",", ":"))
        for i, part in enumerate(chunks(streams, STREAMS_PER_REQUEST))
    ]


def subscribe_messages(markets: Sequence[str], channels: Sequence[Channel], *, firehose: bool) -> list[str]:
    """``{"method":"SUBSCRIBE","params":["btcusdt@trade","btcusdt@bookTicker"],"id":1}``, chunked."""
    return _requests("SUBSCRIBE", _streams(markets, channels, firehose=firehose), 1)


def unsubscribe_messages(markets: Sequence[str], channels: Sequence[Channel]) -> list[str]:
    return _requests("UNSUBSCRIBE", _streams(markets, channels, firehose=False), 1_000_000)


def ping_message(n: int) -> str | None:
    return None


def classify(text: str) -> Frame:
    """Sort a combined-stream frame; raises ``ValueError`` (bad JSON) or :class:`UnknownFrame`."""
    doc = loads(text)
    if isinstance(doc, dict) and "stream" in doc and "data" in doc:
        return _on_stream(str(doc["stream"]), doc["data"])
    if isinstance(doc, dict) and "id" in doc and "result" in doc:
        return Frame("ack" if doc["result"] is None else "control", detail="result")
    if isinstance(doc, dict) and "code" in doc and "msg" in doc:
        return Frame("error", detail=f"code {doc['code']}: {doc['msg']}")
    if isinstance(doc, dict) and doc.get("e") == "serverShutdown":
        return Frame("reconnect", detail="serverShutdown")
    raise UnknownFrame("not a combined-stream event, response or error")


def _on_stream(stream: str, data: Any) -> Frame:
    if stream == "!serverShutdown" or (isinstance(data, dict) and data.get("e") == "serverShutdown"):
        return Frame("reconnect", stream=stream, detail="serverShutdown")
    # "<symbol>@trade", "<symbol>@bookTicker", "<symbol>@miniTicker" or "!miniTicker@arr".
    name = stream[1:].split("@", 1)[0] if stream.startswith("!") else stream.partition("@")[2]
    channel = _STREAM_SUFFIX.get(name)
    if channel == "trades":
        return _on_trade(stream, data)
    if channel == "l1":
        return _on_book_ticker(stream, data)
    if channel == "ticker":
        return _on_mini_ticker(stream, data)
    raise UnknownFrame(f"unknown stream {stream!r}")


def _on_trade(stream: str, data: Any) -> Frame:
    """``{"e":"trade","E":1767225600456,"s":"BTCUSDT","t":5400012345,"p":"94210.02","q":"0.00150",
    "T":1767225600455,"m":false,"M":true}`` — ``t`` is consecutive per symbol."""
    if not isinstance(data, dict) or data.get("e") != "trade" or "s" not in data or "t" not in data:
        raise UnknownFrame("trade event without e=trade, s or t")
    return Frame("data", "trades", stream, str(data["s"]), trade_ids=(as_int(data["t"]),))


def _on_book_ticker(stream: str, data: Any) -> Frame:
    """``{"u":5120938471,"s":"BTCUSDT","b":"94210.01","B":"1.20400","a":"94210.02","A":"0.03110"}``."""
    if not isinstance(data, dict) or "s" not in data or "b" not in data or "a" not in data:
        raise UnknownFrame("bookTicker without s, b or a")
    return Frame("data", "l1", stream, str(data["s"]))


def _on_mini_ticker(stream: str, data: Any) -> Frame:
    """``[{"e":"24hrMiniTicker","E":1767225600123,"s":"ETHUSDT","c":"3120.55","o":"3050.00",
    "h":"3140.10","l":"3021.00","v":"184203.118","q":"572331882.44"}]`` (only changed symbols)."""
    if isinstance(data, list):
        return Frame("data", "ticker", stream)
    if isinstance(data, dict) and "s" in data:
        return Frame("data", "ticker", stream, str(data["s"]))
    raise UnknownFrame("miniTicker that is neither an array nor an object with s")


def recent_trades_request(native_symbol: str) -> RestRequest:
    return RestRequest(
        "GET",
        "/api/v3/trades",
        (("symbol", native_symbol), ("limit", str(TRADES_PAGE_LIMIT))),
        _WEIGHT_TRADES,
    )


def gap_fill_request(native_symbol: str, *, after_id: int, until_id: int | None) -> RestRequest:
    """``historicalTrades?fromId=after_id+1`` (same id space as the WS ``t``)."""
    params = (("symbol", native_symbol), ("fromId", str(after_id + 1)), ("limit", str(TRADES_PAGE_LIMIT)))
    return RestRequest("GET", "/api/v3/historicalTrades", params, _WEIGHT_TRADES)


def parse_trades_page(
    body: str,
    *,
    request: RestRequest,
    headers: Mapping[str, str],
    after_id: int,
    until_id: int | None,
) -> TradesPage:
    """Rows ``[{"id":28457,"price":"4.00","qty":"12.00","time":1499865549590,"isBuyerMaker":true}]``,
    oldest first. Pages on with ``fromId=max+1`` until a short page or ``until_id`` is reached."""
    rows = json.loads(body)
    if not isinstance(rows, list):
        raise UnknownFrame("historicalTrades response is not a list")
    ids = tuple(sorted(as_int(row["id"]) for row in rows))
    from_id = as_int(request.param("fromId") or after_id + 1)
    gap: tuple[int, int] | None = None
    if request.path == "/api/v3/historicalTrades":
        if ids and ids[0] > from_id:
            gap = (from_id - 1, ids[0])
        elif not ids and until_id is not None and until_id > from_id:
            gap = (from_id - 1, until_id)
    done = (
        request.path != "/api/v3/historicalTrades"
        or len(ids) < TRADES_PAGE_LIMIT
        or (until_id is not None and ids[-1] >= until_id - 1)
    )
    if done:
        return TradesPage(ids, None, gap)
    return TradesPage(
        ids, gap_fill_request(str(request.param("symbol")), after_id=ids[-1], until_id=until_id), gap
    )


def l1_poll_request(native_symbol: str) -> RestRequest | None:
    """No poller: @bookTicker pushes on every change."""
    return None


def klines_request(native_symbol: str, *, start_ms: int, end_ms: int) -> RestRequest:
    """``/api/v3/klines?symbol=&interval=1m&startTime=&endTime=`` (ms, both inclusive), weight 2."""
    rows = (end_ms - start_ms) // 60_000 + 1
    params = (
        ("symbol", native_symbol),
        ("interval", "1m"),
        ("startTime", str(start_ms)),
        ("endTime", str(end_ms)),
        ("limit", str(min(max(rows, 1), KLINES_MAX_ROWS))),
    )
    return RestRequest("GET", "/api/v3/klines", params, _WEIGHT_KLINES)


def parse_klines(body: str) -> list[Candle]:
    """``[[1767225600000,"94210.01","94230.00","94190.10","94220.55","12.40510",1767225659999,
    "1168771.2","1841","6.10200","574910.1","0"]]``: open time, OHLC, base volume, close time,
    quote volume, trade count, taker-buy base and quote; oldest first."""
    rows = json.loads(body)
    if not isinstance(rows, list) or not all(isinstance(r, list) and len(r) >= 9 for r in rows):
        raise UnknownFrame("klines response is not a list of 12-field rows")
    return [Candle(as_int(r[0]), str(r[5]), as_int(r[8])) for r in rows]
