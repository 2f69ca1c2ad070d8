"""The OpenAPI 3.1 description of the server, written by hand next to the routes it describes.

``tests/serve`` checks that every route of the app is described here and nothing else is, that
every documented query parameter is one the handler reads, and that answers have the documented
top-level shape.
"""

from __future__ import annotations

from typing import Any


def _param(
    name: str, description: str, *, required: bool = False, schema: dict[str, Any] | None = None
) -> dict[str, Any]:
    return {
        "name": name,
        "in": "query",
        "required": required,
        "description": description,
        "schema": schema or {"type": "string"},
    }


_EXCHANGE = _param("exchange", "Exchange name (binance, kucoin, coinbase); omit for all.")
_SYMBOL = _param("symbol", "Canonical symbol BASE-QUOTE (e.g. BTC-USDT); omit for all.")
_DEC = {"type": ["string", "null"], "description": "exact decimal as text"}
_TS = {"type": ["string", "null"], "format": "date-time", "description": "UTC, ISO 8601"}


def _obj(**props: Any) -> dict[str, Any]:
    return {"type": "object", "properties": props}


def _list(item: dict[str, Any]) -> dict[str, Any]:
    return {"type": "array", "items": item}


def _ok(schema: dict[str, Any], description: str = "OK") -> dict[str, Any]:
    return {
        "200": {"description": description, "content": {"application/json": {"schema": schema}}},
        "400": {"description": "a parameter is missing or malformed", "content": _ERROR},
        "503": {"description": "a table the answer needs is not in the lake yet", "content": _ERROR},
    }


_ERROR = {"application/json": {"schema": _obj(error={"type": "string"})}}

LIVE_STATE = _obj(
    exchange={"type": "string"},
    native_symbol={"type": "string"},
    symbol={"type": ["string", "null"], "description": "BASE-QUOTE, null until the market is known"},
    base={"type": ["string", "null"]},
    quote={"type": ["string", "null"]},
    last=_DEC,
    bid=_DEC,
    bid_size=_DEC,
    ask=_DEC,
    ask_size=_DEC,
    last_usdt=_DEC,
    mid_usdt=_DEC,
    usdt_method={"type": ["string", "null"], "enum": ["identity", "direct", "inverse", "cross_btc", None]},
    channel={"type": "string", "enum": ["ticker", "trades", "l1"], "description": "what moved last"},
    event_ts_ms={"type": ["integer", "null"], "description": "exchange event time, ms since the epoch"},
    recv_ts_ns={"type": "integer", "description": "extractor receive time, ns since the epoch"},
)

LATEST_ROW = _obj(
    exchange={"type": "string"},
    symbol={"type": "string"},
    base={"type": ["string", "null"]},
    quote={"type": ["string", "null"]},
    last_price=_DEC,
    last_usdt=_DEC,
    last_trade_ts=_TS,
    bid_price=_DEC,
    bid_size=_DEC,
    ask_price=_DEC,
    ask_size=_DEC,
    mid_usdt=_DEC,
    spread_bps=_DEC,
    quote_ts=_TS,
    usdt_method={"type": ["string", "null"]},
)

BAR = _obj(
    bucket_ts=_TS,
    time={"type": "integer", "description": "bucket start, seconds since the epoch"},
    open=_DEC,
    high=_DEC,
    low=_DEC,
    close=_DEC,
    volume=_DEC,
    quote_volume=_DEC,
    vwap={"description": "exact decimal text (1m) or a number (rollups: a DOUBLE)"},
    trade_count={"type": "integer"},
    open_usdt=_DEC,
    high_usdt=_DEC,
    low_usdt=_DEC,
    close_usdt=_DEC,
    volume_usdt=_DEC,
    minutes={"type": "integer", "description": "1m bars in the bucket"},
)

SSE_DOC = """Events: `subscribed` (the filter), `quotes` (data: a JSON array of live states, the latest
per market since the last event: slow readers are conflated), `dropped` (the client fell too far
behind). The first `quotes` event holds the latest state of every matching market. Comments keep
the connection alive. exchange and symbol may repeat or hold comma-separated lists."""

WS_DOC = """Server messages: {type: subscribed, exchanges, symbols}, {type: quotes, data: [live
states]}, {type: heartbeat}. Client messages: {op: subscribe, exchanges: [...], symbols: [...]}
replaces the filter (empty lists: all); the first filter comes from the query. A client that falls
too far behind is closed with code 1013."""


def spec() -> dict[str, Any]:
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "cryptolake serve",
            "version": "1",
            "description": "Live prices (WebSocket /ws/stream, Server-Sent Events /sse/stream) and the lake's"
            " gold tables over REST. Decimals are exact strings; times are UTC. docs/serving.md.",
        },
        "paths": {
            "/api/latest": {
                "get": {
                    "summary": "Last trade price and newest L1 quote per market, native and USDT",
                    "description": "gold.ohlcv_1m (newest bar's close) joined with gold.l1_latest.",
                    "parameters": [_EXCHANGE, _SYMBOL],
                    "responses": _ok(_list(LATEST_ROW)),
                }
            },
            "/api/bars": {
                "get": {
                    "summary": "OHLCV bars of one market over a time range",
                    "description": "gold.ohlcv_1m; 5m/1h/1d are rollups of the 1m bars. Oldest first.",
                    "parameters": [
                        {**_EXCHANGE, "required": True, "description": "Exchange name."},
                        {**_SYMBOL, "required": True, "description": "Canonical symbol BASE-QUOTE."},
                        _param(
                            "interval",
                            "Bar length.",
                            schema={"type": "string", "enum": ["1m", "5m", "1h", "1d"]},
                        ),
                        _param(
                            "start",
                            "Inclusive start (ISO 8601 or epoch seconds), rounded down to the interval.",
                        ),
                        _param("end", "Exclusive end (ISO 8601 or epoch seconds)."),
                        _param(
                            "limit",
                            "At most this many bars (the newest), 1-5000, default 500.",
                            schema={"type": "integer", "minimum": 1, "maximum": 5000},
                        ),
                    ],
                    "responses": _ok(_list(BAR)),
                }
            },
            "/api/spread": {
                "get": {
                    "summary": "Cross-exchange spread from each venue's newest quote",
                    "description": "base=BTC compares every BTC market in USDT; symbol=BTC-USDT compares one"
                    " symbol in its quote. Exactly one of the two.",
                    "parameters": [
                        _param("base", "Base asset (e.g. BTC)."),
                        _param("symbol", "Canonical symbol BASE-QUOTE."),
                    ],
                    "responses": _ok(
                        _obj(
                            base={"type": ["string", "null"]},
                            symbol={"type": ["string", "null"]},
                            venues={"type": "integer"},
                            unit={"type": "string", "enum": ["USDT", "quote"]},
                            low_mid=_DEC,
                            high_mid=_DEC,
                            mid_spread_bps=_DEC,
                            best_bid=_DEC,
                            best_ask=_DEC,
                            cross_bps=_DEC,
                            quotes=_list({"type": "object"}),
                        )
                    ),
                }
            },
            "/api/volume-share": {
                "get": {
                    "summary": "Each exchange's share of a UTC day's USDT volume",
                    "description": "gold.exchange_volume_daily; the newest day by default.",
                    "parameters": [
                        _param("date", "UTC day, YYYY-MM-DD.", schema={"type": "string", "format": "date"}),
                        _SYMBOL,
                    ],
                    "responses": _ok(
                        _obj(
                            trade_date={"type": ["string", "null"]},
                            symbol={"type": ["string", "null"]},
                            volume_usdt=_DEC,
                            exchanges=_list(
                                _obj(
                                    exchange={"type": "string"},
                                    volume_usdt=_DEC,
                                    share=_DEC,
                                    trade_count={"type": "integer"},
                                    unpriced_trade_count={"type": "integer"},
                                    symbols={"type": "integer"},
                                )
                            ),
                        )
                    ),
                }
            },
            "/api/quality": {
                "get": {
                    "summary": "Data-quality results per suite and table, and freshness per exchange",
                    "description": "gold.dq_results, gold.l1_latest, gold.ohlcv_1m; tables not there yet are"
                    " listed under missing.",
                    "parameters": [],
                    "responses": _ok(
                        _obj(
                            checked_at=_TS,
                            missing=_list({"type": "string"}),
                            quality={"type": ["array", "null"], "items": {"type": "object"}},
                            freshness={"type": ["array", "null"], "items": {"type": "object"}},
                        )
                    ),
                }
            },
            "/api/markets": {
                "get": {
                    "summary": "Markets from the newest discovery snapshots (silver.markets)",
                    "parameters": [],
                    "responses": _ok(_list({"type": "object"})),
                }
            },
            "/api/live": {
                "get": {
                    "summary": "The server's latest live state of every market (what the streams send)",
                    "parameters": [_EXCHANGE, _SYMBOL],
                    "responses": _ok(_list(LIVE_STATE)),
                }
            },
            "/api/health": {
                "get": {
                    "summary": "Feed, stream and cache counters",
                    "parameters": [],
                    "responses": _ok({"type": "object"}),
                }
            },
            "/sse/stream": {
                "get": {
                    "summary": "Live market states as Server-Sent Events",
                    "description": SSE_DOC,
                    "parameters": [_EXCHANGE, _SYMBOL],
                    "responses": {
                        "200": {
                            "description": "an event stream",
                            "content": {"text/event-stream": {"schema": {"type": "string"}}},
                        }
                    },
                }
            },
            "/ws/stream": {
                "get": {
                    "summary": "Live market states over a WebSocket (upgrade)",
                    "description": WS_DOC,
                    "parameters": [_EXCHANGE, _SYMBOL],
                    "responses": {"101": {"description": "switching to the WebSocket protocol"}},
                }
            },
        },
        "components": {"schemas": {"LiveState": LIVE_STATE, "Latest": LATEST_ROW, "Bar": BAR}},
    }
