"""Bybit parsing (:mod:`spark_jobs.parsers.bybit`) on documented payload shapes; exact decimals.

Few Spark jobs (one collect per table): the expected rows are computed here from the fixture JSON
with the standard library, independently of the parser.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from decimal import Decimal as D
from typing import Any

import pytest
from pyspark.sql import DataFrame, SparkSession

from lake.tables import SILVER_MARKETS
from spark_jobs.parsers import bybit, payload_items
from spark_jobs.silver_markets import latest_markets
from tests.spark.envelopes import T0_NS, at_ns, bronze_df, envelope, frames, ts, utc_us

pytestmark = pytest.mark.spark

DISCOVERY_NS = T0_NS - 5_000_000_000


def ms(value: Any) -> Any:
    return utc_us(int(value) * 1000)


def ws_envelopes(channel: str, name: str, recv_ns: int) -> list[dict[str, Any]]:
    """The fixture's frames as the connector lands them (native symbol: the topic's last part)."""
    return [
        envelope("bybit", channel, f, recv_ns=recv_ns + i, stream=json.loads(f)["topic"], conn_seq=i,
                 native_symbol=json.loads(f)["topic"].rpartition(".")[2])
        for i, f in enumerate(frames("bybit", name))
    ]  # fmt: skip


@pytest.fixture(scope="module")
def bybit_markets(spark: SparkSession) -> Iterator[DataFrame]:
    """``silver.markets`` rows of the instruments-info fixture (the trades' symbols join them)."""
    env = envelope(
        "bybit", "markets", frames("bybit", "markets")[0], recv_ns=DISCOVERY_NS, source="rest",
        stream="/v5/market/instruments-info?category=spot",
    )  # fmt: skip
    yield latest_markets(bronze_df(spark, [env]))


def test_bybit_markets_by_base_and_quote_coin_and_ws_and_rest_trades_parse_exactly(
    spark: SparkSession, bybit_markets: DataFrame
) -> None:
    r = T0_NS + 461_203_112
    ws = ws_envelopes("trades", "trades", r)
    pages = frames("bybit", "rest_trades")
    rest = [
        envelope("bybit", "trades", text, recv_ns=r + 20 + i, source="rest", native_symbol="BTCUSDT",
                 stream="/v5/market/recent-trade?category=spot&symbol=BTCUSDT&limit=60")
        for i, text in enumerate(pages)
    ]  # fmt: skip
    # The module's transform (one small plan); the symbol normalization is the markets' (below).
    rows = bybit.trades(payload_items(bronze_df(spark, ws + rest)))
    collected = rows.select(
        "native_symbol", "trade_id", "price", "size", "side", "event_ts", "recv_ts", "source", "_error"
    ).collect()
    expected = []
    for env in ws:
        for t in json.loads(env["payload"])["data"]:
            if "i" in t:
                expected.append((t["s"], t["i"], D(t["p"]), D(t["v"]), t["S"].lower(), ms(t["T"]),
                                 at_ns(env["recv_ts_ns"]), "ws"))  # fmt: skip
    for row in json.loads(pages[0])["result"]["list"]:
        expected.append((row["symbol"], row["execId"], D(row["price"]), D(row["size"]),
                         row["side"].lower(), ms(row["time"]), at_ns(r + 20), "rest"))  # fmt: skip
    assert len(expected) == 7
    assert sorted(tuple(x)[:-1] for x in collected if x["_error"] is None) == sorted(expected)
    # No id; the error page (retCode 10006); the empty `data` and the empty page give no row.
    assert sorted(x["_error"] for x in collected if x["_error"] is not None) == [
        "missing_trade_id",
        "unexpected_message_type",
    ]
    assert bybit_markets.columns == list(SILVER_MARKETS.columns)
    t0 = ts(DISCOVERY_NS)
    assert sorted(tuple(x) for x in bybit_markets.collect()) == [
        ("bybit", "1000SATSUSDC", "1000SATS-USDC", "1000SATS", "USDC", "Trading", t0),
        ("bybit", "BTCUSDT", "BTC-USDT", "BTC", "USDT", "Trading", t0),
        ("bybit", "ETHBTC", "ETH-BTC", "ETH", "BTC", "PreLaunch", t0),
        ("bybit", "ETHUSDT", "ETH-USDT", "ETH", "USDT", "Trading", t0),
    ]


def test_bybit_tickers_take_open_from_prev_price_and_level1_books_are_the_l1_quotes(
    spark: SparkSession,
) -> None:
    r = T0_NS + 7_000_000
    tick = ws_envelopes("ticker", "ticker", r)
    books = ws_envelopes("l1", "l1", r + 100)
    # The module's transforms on the items of each channel: one small plan per table (the registry's
    # parse_* run every exchange's branch; tests/spark/parsers/test_registry.py covers the wiring).
    got = bybit.tickers(payload_items(bronze_df(spark, tick))).select(
        "native_symbol", "last", "open_24h", "high_24h", "low_24h", "base_volume_24h", "quote_volume_24h",
        "best_bid", "best_ask", "sequence", "event_ts", "_error",
    ).collect()  # fmt: skip
    expected: list[tuple[Any, ...]] = []
    for env in tick[:3]:
        f = json.loads(env["payload"])
        d = f["data"]
        error = None if D(d["lastPrice"]) > 0 else "non_positive_price"
        expected.append((d["symbol"], D(d["lastPrice"]), D(d["prevPrice24h"]), D(d["highPrice24h"]),
                         D(d["lowPrice24h"]), D(d["volume24h"]), D(d["turnover24h"]), None, None, f["cs"],
                         ms(f["ts"]), error))  # fmt: skip
    # `data` that is not an object: unparseable (the envelope's symbol is kept).
    expected.append(("BTCUSDT", None, None, None, None, None, None, None, None, 44131260, ms(1767225600423),
                     "unparseable_payload"))  # fmt: skip
    assert sorted((tuple(x) for x in got), key=str) == sorted(expected, key=str)

    quotes = bybit.l1(payload_items(bronze_df(spark, books))).drop("_raw").collect()
    expected = []
    for env in books:
        f = json.loads(env["payload"])
        d = f["data"]
        bid, ask = [D(v) for v in d["b"][0]], [D(v) for v in d["a"][0]]
        error = "crossed_book" if bid[0] > ask[0] else None
        expected.append(("bybit", d["s"], *bid, *ask, d["seq"], ms(f["cts"]), at_ns(env["recv_ts_ns"]), "l1",
                         error))  # fmt: skip
    assert sorted((tuple(x) for x in quotes), key=str) == sorted(expected, key=str)
