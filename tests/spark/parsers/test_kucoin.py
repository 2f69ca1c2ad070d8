"""KuCoin parsing (:mod:`spark_jobs.parsers.kucoin`) on documented payload shapes; exact decimals."""

from __future__ import annotations

from decimal import Decimal as D

import pytest
from chispa import assert_df_equality
from pyspark.sql import DataFrame, SparkSession

from lake.tables import SILVER_MARKETS
from spark_jobs import silver_l1
from spark_jobs.parsers import parse_l1
from spark_jobs.silver_l1 import JOB as L1_JOB
from spark_jobs.silver_markets import latest_markets
from spark_jobs.silver_tickers import JOB as TICKERS_JOB
from spark_jobs.silver_trades import JOB as TRADES_JOB
from tests.spark.envelopes import (
    MS,
    T0_MS,
    T0_NS,
    at_ns,
    bronze_df,
    discovery_envelopes,
    envelope,
    frames,
    ts,
    utc_us,
)
from tests.spark.parsers import L1_SCHEMA, bps

pytestmark = pytest.mark.spark


def test_kucoin_markets_are_the_symbols_listing_with_trading_status(spark: SparkSession) -> None:
    t = ts(T0_NS - 5_000_000_000)
    expected = spark.createDataFrame(
        [
            ("kucoin", "BTC-USDT", "BTC-USDT", "BTC", "USDT", "trading", t),
            ("kucoin", "USDT-IRT", "USDT-IRT", "USDT", "IRT", "trading", t),
        ],
        SILVER_MARKETS.schema,
    )
    kucoin = [e for e in discovery_envelopes() if e["exchange"] == "kucoin"]
    got = latest_markets(bronze_df(spark, kucoin)).orderBy("exchange", "native_symbol")
    assert_df_equality(got, expected, ignore_nullable=True)


def test_kucoin_matches_and_rest_histories_parse_with_the_sequence_as_trade_id(
    spark: SparkSession, markets: DataFrame
) -> None:
    r = T0_NS + 461_203_112
    envs = [
        # Match: ns time string, taker side.
        envelope("kucoin", "trades", {"type": "message", "topic": "/market/match:BTC-USDT",
            "subject": "trade.l3match", "data": {"symbol": "BTC-USDT", "sequence": "12840019911847401",
            "tradeId": "12840019911847401", "side": "sell", "price": "94209.9", "size": "0.0021",
            "type": "match", "makerOrderId": "a", "takerOrderId": "b", "time": "1767225600801000000"}},
            recv_ns=r + 6, stream="/market/match:BTC-USDT"),
        # REST histories (code/data envelope), time as a JSON number.
        envelope("kucoin", "trades", {"code": "200000", "data": [{"sequence": "12840019911847404",
            "price": "94211", "size": "0.01", "side": "buy", "time": 1767225600901000000}]},
            recv_ns=r + 7, source="rest", stream="/api/v1/market/histories?symbol=BTC-USDT"),
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
        ("kucoin", "BTC-USDT", "BTC-USDT", "BTC", "USDT", "12840019911847401", D("94209.9"), D("0.0021"),
         "sell", ts(T0_NS + 801 * MS), ts(r + 6), "ws", day),
        ("kucoin", "BTC-USDT", "BTC-USDT", "BTC", "USDT", "12840019911847404", D("94211"), D("0.01"), "buy",
         ts(T0_NS + 901 * MS), ts(r + 7), "rest", day),
    ]  # fmt: skip
    assert [x for x in collected if x["_error"] is not None] == []


def test_kucoin_ticker_and_level1_parse_documented_shapes(spark: SparkSession, markets: DataFrame) -> None:
    r = T0_NS + 7_000_000
    envs = [
        envelope("kucoin", "ticker", {"type": "message", "topic": "/market/ticker:all", "subject": "BTC-USDT",
            "data": {"bestAsk": "94210", "bestAskSize": "0.51", "bestBid": "94209.9", "bestBidSize": "1.07",
                     "price": "94209.9", "size": "0.0131", "sequence": "21874411923", "time": T0_MS + 789}},
            recv_ns=r + 1),
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
        ("kucoin", "BTC-USDT", D("94209.9"), None, None, None, None, None, D("94209.9"), D("94210"),
         ts(T0_NS + 789 * MS), None),
    ]  # fmt: skip

    l1_envs = [
        envelope("kucoin", "l1", {"type": "message", "topic": "/spotMarket/level1:BTC-USDT",
            "subject": "level1",
            "data": {"asks": ["94210", "0.51"], "bids": ["94209.9", "1.07"], "timestamp": T0_MS + 803}},
            recv_ns=r + 1),
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
        ("kucoin", "BTC-USDT", D("94209.9"), D("1.07"), D("94210"), D("0.51"), None, ts(T0_NS + 803 * MS),
         bps("94209.9", "94210"), None),
    ]  # fmt: skip


def test_kucoin_tickers_become_l1_quotes_recorded_as_from_the_ticker(spark: SparkSession) -> None:
    assert silver_l1.CHANNELS == ("l1", "ticker")
    r = T0_NS + 7_000_999
    envs = [
        # Documented shapes: ticker:all, a per-symbol ticker without sizes, one with no book.
        *[envelope("kucoin", "ticker", t, recv_ns=r + 10 + i, conn_seq=i)
          for i, t in enumerate(frames("kucoin", "ticker"))],
        envelope("kucoin", "l1", frames("kucoin", "l1")[0], recv_ns=r + 30),
    ]  # fmt: skip
    got = (
        parse_l1(bronze_df(spark, envs))
        .drop("_raw")
        .orderBy("exchange", "native_symbol", "source_channel", "sequence")
    )
    t0_us = T0_NS // 1000
    expected = spark.createDataFrame(
        [
            ("kucoin", "BTC-USDT", D("94209.9"), D("1.07"), D("94210"), D("0.51"), None,
             utc_us(t0_us + 803_000), at_ns(r + 30), "l1", None),
            ("kucoin", "BTC-USDT", D("94209.9"), None, D("94210"), None, 1, utc_us(t0_us + 789_000),
             at_ns(r + 11), "ticker", None),
            ("kucoin", "ETH-USDT", D("3120.55"), D("0.72"), D("3120.56"), D("4.1"), 21874411923,
             utc_us(t0_us + 789_000), at_ns(r + 10), "ticker", None),
        ],
        L1_SCHEMA,
    )  # fmt: skip
    assert_df_equality(got, expected, ignore_nullable=True)
