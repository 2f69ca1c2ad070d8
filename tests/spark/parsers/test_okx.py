"""OKX parsing (:mod:`spark_jobs.parsers.okx`) on documented payload shapes; exact decimals.

Each channel's fixtures go through Spark once (one DataFrame per channel, few jobs: the Spark tests
are the suite's critical path); the expected rows are read from the same fixtures in plain Python.
"""

from __future__ import annotations

import json
from decimal import Decimal as D
from typing import Any

import pytest
from pyspark.sql import SparkSession

from spark_jobs.parsers import okx, payload_items
from tests.spark.envelopes import T0_NS, at_ns, bronze_df, envelope, frames

pytestmark = pytest.mark.spark

HISTORY = "/api/v5/market/history-trades?instId=BTC-USDT&type=1&limit=100"


def ms(text: str) -> Any:
    return at_ns(int(text) * 1_000_000)


def dec(text: str | None) -> D | None:
    return None if text is None else D(text).normalize()


def norm(row: tuple[Any, ...]) -> tuple[Any, ...]:
    """Decimals compared by value (``DECIMAL(38,18)`` comes back with 18 places)."""
    return tuple(dec(str(v)) if isinstance(v, D) else v for v in row)


def test_okx_ws_and_rest_trades_and_instruments_parse_to_the_fixture_values(spark: SparkSession) -> None:
    r = T0_NS + 461_203_112
    ws = frames("okx", "trades")
    rest = frames("okx", "rest_trades")
    envs = [
        envelope(
            "okx",
            "trades",
            f,
            recv_ns=r + i,
            stream="trades",
            native_symbol=json.loads(f)["arg"]["instId"],
            conn_seq=i,
        )
        for i, f in enumerate(ws)
    ]
    envs += [
        envelope("okx", "trades", f, recv_ns=r + 20, source="rest", native_symbol="BTC-USDT", stream=HISTORY)
        for f in rest
    ]
    got = (
        okx.trades(payload_items(bronze_df(spark, envs)))
        .select(
            "native_symbol", "trade_id", "price", "size", "side", "event_ts", "recv_ts", "source", "_error"
        )
        .collect()
    )
    expected = []
    for i, f in enumerate(ws + rest):
        source, recv = ("ws", r + i) if i < len(ws) else ("rest", r + 20)
        for d in json.loads(f)["data"]:
            ok = None if "tradeId" in d else "missing_trade_id"
            expected.append(
                (
                    d["instId"],
                    d.get("tradeId"),
                    dec(d["px"]),
                    dec(d["sz"]),
                    d["side"],
                    ms(d["ts"]),
                    at_ns(recv),
                    source,
                    ok,
                )
            )
    assert sorted((norm(tuple(x)) for x in got), key=str) == sorted(expected, key=str)
    assert len(expected) == 8  # two aggregates, a duplicate, no-id, and two REST rows (error pages: none)

    (body,) = frames("okx", "markets")
    env = envelope("okx", "markets", body, recv_ns=T0_NS, source="rest", stream="/api/v5/public/instruments")
    listed = okx.markets(payload_items(bronze_df(spark, [env]))).drop("exchange").collect()
    assert sorted(tuple(x) for x in listed) == sorted(
        (d["instId"], d["baseCcy"], d["quoteCcy"], d["state"], at_ns(T0_NS)) for d in json.loads(body)["data"]
    )


def test_okx_tickers_and_bbo_tbt_parse_and_tickers_are_l1_quotes_too(spark: SparkSession) -> None:
    r = T0_NS + 7_000_000
    tick, bbo = frames("okx", "ticker"), frames("okx", "l1")
    envs = [
        envelope(
            "okx", "ticker", f, recv_ns=r + i, stream="tickers", native_symbol=json.loads(f)["arg"]["instId"]
        )
        for i, f in enumerate(tick)
    ]
    envs += [
        envelope(
            "okx", "l1", f, recv_ns=r + 10 + i, stream="bbo-tbt", native_symbol=json.loads(f)["arg"]["instId"]
        )
        for i, f in enumerate(bbo)
    ]
    bronze = bronze_df(spark, envs)
    ticker_items, l1_items = (payload_items(bronze.where(f"channel = '{c}'")) for c in ("ticker", "l1"))
    tickers = (
        okx.tickers(ticker_items)
        .select(
            "native_symbol",
            "last",
            "open_24h",
            "high_24h",
            "low_24h",
            "base_volume_24h",
            "quote_volume_24h",
            "best_bid",
            "best_ask",
            "event_ts",
            "_error",
        )
        .collect()
    )
    items = [(json.loads(f)["arg"]["instId"], json.loads(f)["data"][0]) for f in tick]
    fields = ("last", "open24h", "high24h", "low24h", "vol24h", "volCcy24h", "bidPx", "askPx")
    expected = [(s, *(dec(d.get(k)) for k in fields), ms(d["ts"])) for s, d in items]
    assert sorted((norm(tuple(x)[:-1]) for x in tickers), key=str) == sorted(expected, key=str)
    assert sorted(x["_error"] or "" for x in tickers) == ["", "", "non_positive_price"]

    # The registry's parse_l1 runs every venue's plan; the two OKX transforms it calls, in one job.
    quotes = (
        okx.l1(l1_items)
        .unionByName(okx.ticker_l1(ticker_items))
        .select(
            "native_symbol",
            "bid_price",
            "bid_size",
            "ask_price",
            "ask_size",
            "sequence",
            "event_ts",
            "source_channel",
            "_error",
        )
        .collect()
    )
    want = [
        (
            s,
            dec(d["bidPx"]),
            dec(d.get("bidSz")),
            dec(d["askPx"]),
            dec(d.get("askSz")),
            None,
            ms(d["ts"]),
            "ticker",
        )
        for s, d in items
    ]
    for f in bbo:
        doc = json.loads(f)
        d = doc["data"][0]
        (bid, bid_sz, *_), (ask, ask_sz, *_) = d["bids"][0], d["asks"][0]
        want.append(
            (
                doc["arg"]["instId"],
                dec(bid),
                dec(bid_sz),
                dec(ask),
                dec(ask_sz),
                d["seqId"],
                ms(d["ts"]),
                "l1",
            )
        )
    assert sorted((norm(tuple(x)[:-1]) for x in quotes), key=str) == sorted(want, key=str)
    errors = sorted(x["_error"] for x in quotes if x["_error"] is not None)
    assert errors == ["crossed_book"]  # the third bbo-tbt item: bid above ask
