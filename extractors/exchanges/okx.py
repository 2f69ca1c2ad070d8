"""OKX spot (v5): websocket ``trades``/``tickers``/``bbo-tbt``, REST instruments and history-trades.

Wire facts (docs/exchanges.md, OKX): symbols are already ``BASE-QUOTE`` (``instId`` ``BTC-USDT``).
A subscribe is ``{"op":"subscribe","args":[{"channel":"trades","instId":"BTC-USDT"},…]}`` (one
``{"event":"subscribe","arg":…}`` ack per arg; ``{"event":"error","code":…,"msg":…}`` on failure);
data frames are ``{"arg":{"channel":…,"instId":…},"data":[…]}`` with every number a string and
``ts`` in milliseconds. The server closes a link that carries no data for 30 s: the client sends the
text ``ping`` and gets the text ``pong``. ``{"event":"notice","code":"64008"}`` announces a restart.
Limits: 3 connection attempts per second per IP, 480 subscribe/unsubscribe requests per hour per
connection, 64 KB of args per request.

``trades`` may aggregate one taker order's fills at one price (``count`` > 1, ``tradeId`` the last
fill's), so websocket ids only order trades (``CONSECUTIVE_IDS`` false). REST
``/api/v5/market/history-trades?type=1&after=<tradeId>`` pages *back* from a trade id (newest
first, 100 a page, about the last three months), which is how a gap fill walks to the last trade
seen. Public REST limits are per endpoint: history-trades 20 requests per 2 s per IP.
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
    loads,
)

NAME = "okx"
REST_URL = "https://www.okx.com"
WS_URL = "wss://ws.okx.com:8443/ws/v5/public"

#: 480 subscribe/unsubscribe requests an hour per connection; pings are not counted there.
WS_MESSAGES_PER_S = 1.0
#: history-trades allows 20 requests per 2 s (IP); kept at half of it.
REST_WEIGHT_PER_S = 5.0
REST_WEIGHT_BURST = 5
#: Args per subscribe request (far below the 64 KB limit); no documented per-connection limit.
ARGS_PER_REQUEST = 100
MARKETS_PER_CONNECTION = 100
MAX_CONNECTION_AGE_S = 23.5 * 3600
#: Under 30 s of silence, after which the server closes the link.
PING_INTERVAL_S = 20.0
CONSECUTIVE_IDS = False
PER_SYMBOL_BATCH_CHANNELS: frozenset[str] = frozenset()
TRADES_PAGE_LIMIT = 100
RECENT_TRADES_LIMIT = 500
KLINES_MAX_ROWS = 300

#: Websocket channel -> the channel it lands in.
_LANDS: dict[str, Channel] = {"trades": "trades", "tickers": "ticker", "bbo-tbt": "l1"}
_SUBSCRIBES: dict[Channel, str] = {v: k for k, v in _LANDS.items()}
#: ``notice`` code of a coming service restart.
_RESTART_NOTICE = "64008"


def _data(body: str, what: str) -> list[Any]:
    """The ``data`` list of a REST answer ``{"code":"0","msg":"","data":[…]}``; any other code is an error."""
    doc = json.loads(body)
    if not isinstance(doc, dict) or str(doc.get("code")) != "0" or not isinstance(doc.get("data"), list):
        raise UnknownFrame(f"{what} error or no data: {str(doc)[:200]}")
    return doc["data"]


def discovery_request() -> RestRequest:
    return RestRequest("GET", "/api/v5/public/instruments", (("instType", "SPOT"),))


def parse_markets(body: str) -> list[Market]:
    """``{"code":"0","data":[{"instType":"SPOT","instId":"BTC-USDT","baseCcy":"BTC","quoteCcy":"USDT",
    "state":"live",...}]}``; trading needs ``state`` ``live`` (``suspend``, ``preopen``, ``test`` are not)."""
    return [
        Market(str(r["instId"]), str(r["baseCcy"]), str(r["quoteCcy"]), r.get("state") == "live")
        for r in _data(body, "instruments")
        if isinstance(r, dict) and r.get("instId") and r.get("baseCcy") and r.get("quoteCcy")
    ]


def bootstrap_request() -> RestRequest | None:
    return None


def session(*, ws_url: str, bootstrap_body: str | None, conn_id: str) -> Session:
    """No token; the text ``ping`` every 20 s keeps a quiet link under the 30 s cut."""
    return Session(url=ws_url, ping_interval_s=PING_INTERVAL_S)


def _requests(op: str, markets: Sequence[str], channels: Sequence[Channel]) -> list[str]:
    args = [{"channel": _SUBSCRIBES[c], "instId": m} for c in channels if c in _SUBSCRIBES for m in markets]
    parts = [args[i : i + ARGS_PER_REQUEST] for i in range(0, len(args), ARGS_PER_REQUEST)]
    return [json.dumps({"op": op, "args": part}, separators=(",", ":")) for part in parts]


def subscribe_messages(markets: Sequence[str], channels: Sequence[Channel], *, firehose: bool) -> list[str]:
    """``{"op":"subscribe","args":[{"channel":"trades","instId":"BTC-USDT"},…]}``, 100 args a message."""
    return _requests("subscribe", markets, channels)


def unsubscribe_messages(markets: Sequence[str], channels: Sequence[Channel]) -> list[str]:
    return _requests("unsubscribe", markets, channels)


def ping_message(n: int) -> str | None:
    return "ping"


def classify(text: str) -> Frame:
    if text == "pong":
        return Frame("control", stream="pong", detail="pong")
    doc = loads(text)
    if not isinstance(doc, dict):
        raise UnknownFrame("not an object")
    event = doc.get("event")
    if event is not None:
        return _on_event(str(event), doc)
    arg = doc.get("arg")
    channel = arg.get("channel") if isinstance(arg, dict) else None
    if channel not in _LANDS or not isinstance(arg, dict) or not isinstance(arg.get("instId"), str):
        raise UnknownFrame(f"unknown channel {channel!r}")
    data = doc.get("data")
    if not isinstance(data, list) or not data or not all(isinstance(d, dict) for d in data):
        raise UnknownFrame(f"{channel} frame without data items")
    if channel == "trades":
        return _on_trades(arg["instId"], data)
    return Frame("data", _LANDS[channel], str(channel), arg["instId"])


def _on_event(event: str, doc: dict[str, Any]) -> Frame:
    """``{"event":"subscribe","arg":{"channel":"trades","instId":"BTC-USDT"},"connId":"a4d3ae55"}``;
    ``{"event":"error","code":"60012","msg":"Invalid request: …","connId":"a4d3ae55"}``;
    ``{"event":"notice","code":"64008","msg":"The connection will soon be closed for a service
    upgrade…","connId":"a4d3ae55"}`` (reconnect now)."""
    if event == "subscribe":
        return Frame("ack", detail=json.dumps(doc.get("arg"), separators=(",", ":")))
    if event == "error":
        return Frame("error", detail=f"{doc.get('code')}: {doc.get('msg')}")
    if event == "notice" and str(doc.get("code")) == _RESTART_NOTICE:
        return Frame("reconnect", detail=str(doc.get("msg")))
    return Frame("control", stream=event, detail=event)


def _on_trades(inst_id: str, data: list[dict[str, Any]]) -> Frame:
    """``{"arg":{"channel":"trades","instId":"BTC-USDT"},"data":[{"instId":"BTC-USDT",
    "tradeId":"130639474","px":"42219.9","sz":"0.12060306","side":"buy","ts":"1630048897897",
    "count":"3"}]}`` — ``side`` is the taker's; ``count`` fills aggregated under the last ``tradeId``."""
    if not all("tradeId" in d for d in data):
        raise UnknownFrame("trades item without tradeId")
    return Frame("data", "trades", "trades", inst_id, trade_ids=tuple(as_int(d["tradeId"]) for d in data))


# -- REST trades ------------------------------------------------------------------------------
def recent_trades_request(native_symbol: str) -> RestRequest:
    """``/api/v5/market/trades?instId=&limit=500``: the newest trades (a baseline, no walk)."""
    return RestRequest(
        "GET", "/api/v5/market/trades", (("instId", native_symbol), ("limit", str(RECENT_TRADES_LIMIT)))
    )


def _history_request(native_symbol: str, before_id: int | None) -> RestRequest:
    params: tuple[tuple[str, str], ...] = (("instId", native_symbol), ("type", "1"))
    if before_id is not None:
        params += (("after", str(before_id)),)
    return RestRequest("GET", "/api/v5/market/history-trades", (*params, ("limit", str(TRADES_PAGE_LIMIT))))


def gap_fill_request(native_symbol: str, *, after_id: int, until_id: int | None) -> RestRequest:
    """The 100 trades just older than ``until_id`` (``after`` is exclusive), or the newest 100."""
    return _history_request(native_symbol, until_id)


def parse_trades_page(
    body: str,
    *,
    request: RestRequest,
    headers: Mapping[str, str],
    after_id: int,
    until_id: int | None,
) -> TradesPage:
    """``{"code":"0","msg":"","data":[{"instId":"BTC-USDT","side":"sell","sz":"0.0015",
    "px":"42210.1","tradeId":"130639475","ts":"1630048897990"}]}``, newest first.

    A history-trades page steps back with ``after=<its oldest id>`` until it holds ``after_id + 1``
    or older. A short (or empty) page that still starts above ``after_id + 1`` is the oldest
    history served: the trades between are a gap.
    """
    ids = tuple(sorted(as_int(r["tradeId"]) for r in _data(body, "trades")))
    if request.path != "/api/v5/market/history-trades":
        return TradesPage(ids, None)  # a baseline: the newest page only
    cursor = request.param("after")
    upper = ids[0] if ids else (as_int(cursor) if cursor is not None else until_id)
    if upper is None or upper <= after_id + 1:
        return TradesPage(ids, None)
    if len(ids) < TRADES_PAGE_LIMIT:
        return TradesPage(ids, None, (after_id, upper))
    return TradesPage(ids, _history_request(str(request.param("instId")), upper))


def l1_poll_request(native_symbol: str) -> RestRequest | None:
    """No poller: ``bbo-tbt`` pushes the book top on every change."""
    return None


def klines_request(native_symbol: str, *, start_ms: int, end_ms: int) -> RestRequest:
    """``/api/v5/market/candles?instId=&bar=1m&after=&before=&limit=``: bars older than ``after``
    and newer than ``before`` (ms, both exclusive), newest first, at most 300."""
    rows = (end_ms - start_ms) // 60_000 + 1
    params = (
        ("instId", native_symbol),
        ("bar", "1m"),
        ("after", str(end_ms + 1)),
        ("before", str(max(0, start_ms - 1))),
        ("limit", str(min(max(rows, 1), KLINES_MAX_ROWS))),
    )
    return RestRequest("GET", "/api/v5/market/candles", params)


def parse_klines(body: str) -> list[Candle]:
    """``{"code":"0","data":[["1630048860000","42219.9","42230","42210.1","42220.5","12.4051",
    "523712.3","523712.3","1"]]}``: start (ms), OHLC, base volume, quote volumes, ``confirm``;
    newest first (returned oldest first)."""
    rows = _data(body, "candles")
    if not all(isinstance(r, list) and len(r) >= 6 for r in rows):
        raise UnknownFrame("candles are not rows of at least 6 fields")
    return sorted((Candle(as_int(r[0]), str(r[5])) for r in rows), key=lambda c: c.start_ms)
