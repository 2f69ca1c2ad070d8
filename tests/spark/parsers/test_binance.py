"""Binance parsing (:mod:`spark_jobs.parsers.binance`) on documented payload shapes; exact decimals."""

from __future__ import annotations

from decimal import Decimal as D

import pytest
from chispa import assert_df_equality
from pyspark.sql import DataFrame, SparkSession

from lake.tables import SILVER_MARKETS
from spark_jobs.silver_l1 import JOB as L1_JOB
from spark_jobs.silver_markets import latest_markets
from spark_jobs.silver_tickers import JOB as TICKERS_JOB
from spark_jobs.silver_trades import JOB as TRADES_JOB
from tests.spark.envelopes import (
    MS,
    T0_MS,
    T0_NS,
    bronze_df,
    discovery_envelopes,
    envelope,
    frames,
    ts,
)
from tests.spark.parsers import bps

pytestmark = pytest.mark.spark


def test_binance_markets_are_the_spot_symbols_of_exchange_info_with_aliases(spark: SparkSession) -> None:
    t = ts(T0_NS - 5_000_000_000)
    expected = spark.createDataFrame(
        [
            ("binance", "BTCUSDT", "BTC-USDT", "BTC", "USDT", "TRADING", t),
            ("binance", "ETHBTC", "ETH-BTC", "ETH", "BTC", "TRADING", t),
            ("binance", "ETHUSDT", "ETH-USDT", "ETH", "USDT", "TRADING", t),
            ("binance", "SOLETH", "SOL-ETH", "SOL", "ETH", "BREAK", t),
            ("binance", "XBTEUR", "BTC-EUR", "BTC", "EUR", "TRADING", t),  # XBT -> BTC alias
        ],
        SILVER_MARKETS.schema,
    )
    binance = [e for e in discovery_envelopes() if e["exchange"] == "binance"]
    got = latest_markets(bronze_df(spark, binance)).orderBy("exchange", "native_symbol")
    assert_df_equality(got, expected, ignore_nullable=True)


def test_binance_trades_ws_rest_and_aggregate_parse_and_bad_rows_are_quarantined(
    spark: SparkSession, markets: DataFrame
) -> None:
    r = T0_NS + 461_203_112
    envs = [
        # Combined-stream trade: buyer is not maker => taker bought.
        envelope("binance", "trades", {"stream": "btcusdt@trade", "data": {
            "e": "trade", "E": T0_MS + 456, "s": "BTCUSDT", "t": 5400012345, "p": "94210.02",
            "q": "0.00150", "T": T0_MS + 455, "m": False, "M": True}}, recv_ns=r, stream="btcusdt@trade"),
        # Raw stream, an extra unknown field, buyer is maker => taker sold.
        envelope("binance", "trades", {"e": "trade", "E": T0_MS + 501, "s": "BTCUSDT", "t": 5400012346,
            "p": "94210.01", "q": "1.5", "T": T0_MS + 500, "m": True, "M": True, "X": "extra"},
            recv_ns=r + 1, stream="btcusdt@trade"),
        # REST gap-fill page (historicalTrades): symbol from the request's query string.
        envelope("binance", "trades", [{"id": 5400012347, "price": "94210.00", "qty": "0.25",
            "quoteQty": "23552.5", "time": T0_MS + 900, "isBuyerMaker": True, "isBestMatch": True}],
            recv_ns=r + 2, source="rest", stream="/api/v3/historicalTrades?symbol=BTCUSDT&fromId=5400012347"),
        # Aggregate trade: its own id space.
        envelope("binance", "trades", {"e": "aggTrade", "E": T0_MS + 10, "s": "ETHUSDT", "a": 777,
            "p": "3120.55", "q": "2", "f": 1, "l": 2, "T": T0_MS + 9, "m": False, "M": True}, recv_ns=r + 3),
        # Missing price -> quarantine.
        envelope("binance", "trades", {"e": "trade", "s": "BTCUSDT", "t": 1, "q": "1", "T": T0_MS,
            "m": False},
            recv_ns=r + 4),
        # Unknown market -> quarantine.
        envelope("binance", "trades", {"e": "trade", "s": "FOOUSDT", "t": 2, "p": "1", "q": "1", "T": T0_MS,
            "m": False}, recv_ns=r + 5),
    ]  # fmt: skip
    rows = bronze_df(spark, envs).transform(TRADES_JOB.normalize(markets))
    # One job: the good rows and the quarantined ones from one collect.
    collected = rows.select(
        "exchange", "symbol", "native_symbol", "base", "quote", "trade_id", "price", "size", "side",
        "event_ts", "recv_ts", "source", "trade_date", "_error",
    ).orderBy("exchange", "trade_id").collect()  # fmt: skip
    got = [x for x in collected if x["_error"] is None]
    day = ts(T0_NS).date()
    assert [tuple(x)[:-1] for x in got] == [
        ("binance", "BTC-USDT", "BTCUSDT", "BTC", "USDT", "5400012345", D("94210.02"), D("0.0015"), "buy",
         ts(T0_NS + 455 * MS), ts(r), "ws", day),
        ("binance", "BTC-USDT", "BTCUSDT", "BTC", "USDT", "5400012346", D("94210.01"), D("1.5"), "sell",
         ts(T0_NS + 500 * MS), ts(r + 1), "ws", day),
        ("binance", "BTC-USDT", "BTCUSDT", "BTC", "USDT", "5400012347", D("94210"), D("0.25"), "sell",
         ts(T0_NS + 900 * MS), ts(r + 2), "rest", day),
        ("binance", "ETH-USDT", "ETHUSDT", "ETH", "USDT", "agg-777", D("3120.55"), D("2"), "buy",
         ts(T0_NS + 9 * MS), ts(r + 3), "ws", day),
    ]  # fmt: skip
    # Decimals are exact to the digit (no float on the way): compare their text too.
    assert str(got[0]["price"]) == "94210.020000000000000000"
    errors = sorted((x["exchange"], x["_error"]) for x in collected if x["_error"] is not None)
    assert errors == [("binance", "bad_price"), ("binance", "unknown_market")]


def test_binance_mini_tickers_and_book_tickers_parse_documented_shapes(
    spark: SparkSession, markets: DataFrame
) -> None:
    r = T0_NS + 7_000_000
    envs = [
        envelope("binance", "ticker", {"stream": "!miniTicker@arr", "data": [
            {"e": "24hrMiniTicker", "E": T0_MS + 123, "s": "ETHUSDT", "c": "3120.55", "o": "3050.00",
             "h": "3140.10", "l": "3021.00", "v": "184203.118", "q": "572331882.44"},
            {"e": "24hrMiniTicker", "E": T0_MS + 123, "s": "BTCUSDT", "c": "94210.02", "o": "93000",
             "h": "95000", "l": "92000", "v": "1000", "q": "94000000"}]}, recv_ns=r),
        envelope("binance", "ticker", [{"e": "24hrMiniTicker", "E": T0_MS, "s": "NOPEUSDT", "c": "1"}],
            recv_ns=r + 3),
    ]  # fmt: skip
    tickers = bronze_df(spark, envs).transform(TICKERS_JOB.normalize(markets))
    got = [
        tuple(x)
        for x in tickers.select(
            "exchange", "symbol", "last", "open_24h", "high_24h", "low_24h", "base_volume_24h",
            "quote_volume_24h", "best_bid", "best_ask", "event_ts", "_error",
        ).orderBy("exchange", "symbol").collect()
    ]  # fmt: skip
    assert got == [
        ("binance", None, D("1"), None, None, None, None, None, None, None, ts(T0_NS), "unknown_market"),
        ("binance", "BTC-USDT", D("94210.02"), D("93000"), D("95000"), D("92000"), D("1000"), D("94000000"),
         None, None, ts(T0_NS + 123 * MS), None),
        ("binance", "ETH-USDT", D("3120.55"), D("3050"), D("3140.1"), D("3021"), D("184203.118"),
         D("572331882.44"), None, None, ts(T0_NS + 123 * MS), None),
    ]  # fmt: skip

    l1_envs = [
        envelope("binance", "l1", {"stream": "btcusdt@bookTicker", "data": {"u": 5120938471, "s": "BTCUSDT",
            "b": "94210.01", "B": "1.20400", "a": "94210.02", "A": "0.03110"}}, recv_ns=r),
        envelope("binance", "l1", {"u": 9, "s": "ETHUSDT", "b": "3121", "B": "1", "a": "3120", "A": "1"},
            recv_ns=r + 3),
        # Mini tickers carry no book: no L1 quote, and no quarantine row either.
        *[envelope("binance", "ticker", t, recv_ns=r + 20 + i, conn_seq=i)
          for i, t in enumerate(frames("binance", "ticker"))],
    ]  # fmt: skip
    quotes = bronze_df(spark, l1_envs).transform(L1_JOB.normalize(markets))
    got_l1 = [
        tuple(x)
        for x in quotes.select(
            "exchange", "symbol", "bid_price", "bid_size", "ask_price", "ask_size", "sequence", "event_ts",
            "spread_bps", "_error",
        ).orderBy("exchange", "symbol").collect()
    ]  # fmt: skip
    assert got_l1 == [
        ("binance", "BTC-USDT", D("94210.01"), D("1.204"), D("94210.02"), D("0.0311"), 5120938471, ts(r),
         bps("94210.01", "94210.02"), None),
        ("binance", "ETH-USDT", D("3121"), D("1"), D("3120"), D("1"), 9, ts(r + 3), bps("3121", "3120"),
         "crossed_book"),
    ]  # fmt: skip
