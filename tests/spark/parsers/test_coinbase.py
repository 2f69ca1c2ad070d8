"""Coinbase parsing (:mod:`spark_jobs.parsers.coinbase`) on documented payload shapes; exact decimals."""

from __future__ import annotations

from decimal import Decimal as D

import pytest
from chispa import assert_df_equality
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql.types import LongType, StringType

from lake.tables import SILVER_MARKETS
from spark_jobs import silver_l1
from spark_jobs.parsers import parse_l1
from spark_jobs.silver_l1 import JOB as L1_JOB
from spark_jobs.silver_markets import latest_markets
from spark_jobs.silver_tickers import JOB as TICKERS_JOB
from spark_jobs.silver_trades import JOB as TRADES_JOB
from tests.spark.envelopes import (
    T0_NS,
    at_ns,
    bronze_df,
    discovery_envelopes,
    envelope,
    frames,
    schema_of,
    ts,
    utc_us,
)
from tests.spark.parsers import L1_SCHEMA, bps

pytestmark = pytest.mark.spark


def test_coinbase_markets_are_the_products_with_disabled_trading_as_status(spark: SparkSession) -> None:
    t = ts(T0_NS - 5_000_000_000)
    expected = spark.createDataFrame(
        [
            ("coinbase", "BTC-USD", "BTC-USD", "BTC", "USD", "online", t),
            ("coinbase", "ETH-USD", "ETH-USD", "ETH", "USD", "disabled", t),
        ],
        SILVER_MARKETS.schema,
    )
    coinbase = [e for e in discovery_envelopes() if e["exchange"] == "coinbase"]
    got = latest_markets(bronze_df(spark, coinbase)).orderBy("exchange", "native_symbol")
    assert_df_equality(got, expected, ignore_nullable=True)


def test_coinbase_matches_and_rest_trades_parse_with_the_taker_side_and_bad_rows_are_quarantined(
    spark: SparkSession, markets: DataFrame
) -> None:
    r = T0_NS + 461_203_112
    envs = [
        # Match: side is the maker's => taker is the opposite.
        envelope("coinbase", "trades", {"type": "match", "trade_id": 801234567, "maker_order_id": "m",
            "taker_order_id": "t", "side": "buy", "size": "0.00120000", "price": "94210.01",
            "product_id": "BTC-USD", "sequence": 112233445566, "time": "2026-01-01T00:00:00.412345Z"},
            recv_ns=r + 8),
        # REST trades page: product from the path.
        envelope("coinbase", "trades", [{"trade_id": 801234568, "side": "sell", "size": "0.5",
            "price": "94200.5", "time": "2026-01-01T00:00:01.000001Z"}], recv_ns=r + 9, source="rest",
            stream="/products/BTC-USD/trades?before=801234567"),
        envelope("coinbase", "trades", "not json{", recv_ns=r + 10),
        envelope("coinbase", "trades", {"type": "match", "trade_id": 5, "side": "buy", "size": "-1",
            "price": "1", "product_id": "BTC-USD", "time": "2026-01-01T00:00:00Z"}, recv_ns=r + 11),
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
        ("coinbase", "BTC-USD", "BTC-USD", "BTC", "USD", "801234567", D("94210.01"), D("0.0012"), "sell",
         ts(T0_NS + 412_345_000), ts(r + 8), "ws", day),
        ("coinbase", "BTC-USD", "BTC-USD", "BTC", "USD", "801234568", D("94200.5"), D("0.5"), "buy",
         ts(T0_NS + 1_000_001_000), ts(r + 9), "rest", day),
    ]  # fmt: skip
    errors = sorted((x["exchange"], x["_error"]) for x in collected if x["_error"] is not None)
    assert errors == [("coinbase", "non_positive_size"), ("coinbase", "unparseable_payload")]


def test_coinbase_ticker_and_rest_book_parse_documented_shapes(
    spark: SparkSession, markets: DataFrame
) -> None:
    r = T0_NS + 7_000_000
    envs = [
        envelope("coinbase", "ticker", {"type": "ticker", "sequence": 112233445566, "product_id": "BTC-USD",
            "price": "94210.01", "open_24h": "92001.00", "volume_24h": "8123.5521", "low_24h": "91500.00",
            "high_24h": "94800.00", "volume_30d": "301233.88", "best_bid": "94210.00",
            "best_bid_size": "0.41000000", "best_ask": "94210.01", "best_ask_size": "0.02500000",
            "side": "buy", "trade_id": 801234567, "last_size": "0.00120000"}, recv_ns=r + 2),  # no `time`
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
        ("coinbase", "BTC-USD", D("94210.01"), D("92001"), D("94800"), D("91500"), D("8123.5521"), None,
         D("94210"), D("94210.01"), ts(r + 2), None),
    ]  # fmt: skip

    l1_envs = [
        envelope("coinbase", "l1", {"bids": [["94210.00", "0.41000000", 3]],
            "asks": [["94210.01", "0.025", 1]],
            "sequence": 112233445601, "auction_mode": False, "auction": None,
            "time": "2026-01-01T00:00:01.000123Z"}, recv_ns=r + 2, source="rest",
            stream="/products/BTC-USD/book?level=1"),
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
        ("coinbase", "BTC-USD", D("94210"), D("0.41"), D("94210.01"), D("0.025"), 112233445601,
         ts(T0_NS + 1_000_123_000), bps("94210.00", "94210.01"), None),
    ]  # fmt: skip


def test_coinbase_tickers_become_l1_quotes_recorded_as_from_the_ticker(
    spark: SparkSession, markets: DataFrame
) -> None:
    assert silver_l1.CHANNELS == ("l1", "ticker")
    r = T0_NS + 7_000_999
    envs = [
        # Documented shapes: full ticker, the sparse first one (no time, no sizes), one with no book.
        *[envelope("coinbase", "ticker", t, recv_ns=r + i, stream="ticker", conn_seq=i)
          for i, t in enumerate(frames("coinbase", "ticker"))],
        # A crossed best bid/ask on a ticker is a bad quote like any other.
        envelope("coinbase", "ticker", {"type": "ticker", "sequence": 112233445567, "product_id": "BTC-USD",
            "price": "94210.01", "best_bid": "94210.02", "best_bid_size": "0.1", "best_ask": "94210.01",
            "best_ask_size": "0.2", "time": "2026-01-01T00:00:00.512345Z"}, recv_ns=r + 40),
    ]  # fmt: skip
    got = (
        parse_l1(bronze_df(spark, envs))
        .drop("_raw")
        .orderBy("exchange", "native_symbol", "source_channel", "sequence")
    )
    t0_us = T0_NS // 1000
    expected = spark.createDataFrame(
        [
            ("coinbase", "BTC-USD", D("94210.00"), D("0.41"), D("94210.01"), D("0.025"), 112233445566,
             utc_us(t0_us + 412_345), at_ns(r), "ticker", None),
            ("coinbase", "BTC-USD", D("94210.02"), D("0.1"), D("94210.01"), D("0.2"), 112233445567,
             utc_us(t0_us + 512_345), at_ns(r + 40), "ticker", "crossed_book"),
            ("coinbase", "ETH-USD", D("3120.55"), None, D("3120.56"), None, 1, at_ns(r + 1), at_ns(r + 1),
             "ticker", None),
        ],
        L1_SCHEMA,
    )  # fmt: skip
    assert_df_equality(got, expected, ignore_nullable=True)
    assert str(got.first()["bid_price"]) == "94210.000000000000000000"  # type: ignore[index]

    # Through the job's normalization: the canonical symbol, spread and the recorded source.
    quotes = bronze_df(spark, envs).transform(L1_JOB.normalize(markets))
    btc = quotes.where("exchange = 'coinbase' AND _error IS NULL AND symbol = 'BTC-USD'").select(
        "symbol", "sequence", "source_channel", "spread_bps"
    )
    mid = (D("94210.00") + D("94210.01")) / 2
    spread = ((D("0.01") * 10000) / mid).quantize(D("1e-6"))
    expected_btc = spark.createDataFrame(
        [("BTC-USD", 112233445566, "ticker", spread)],
        schema_of(
            ("symbol", StringType()), ("sequence", LongType()), ("source_channel", StringType()),
            ("spread_bps", quotes.schema["spread_bps"].dataType),
        ),
    )  # fmt: skip
    assert_df_equality(btc, expected_btc, ignore_nullable=True)


def test_l1_parser_ignores_other_channels(spark: SparkSession) -> None:
    trades = bronze_df(
        spark, [envelope("coinbase", "trades", frames("coinbase", "trades")[0], recv_ns=T0_NS)]
    )
    assert parse_l1(trades).collect() == []
