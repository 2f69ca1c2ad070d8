"""Kraken parsing (:mod:`spark_jobs.parsers.kraken`) on documented payload shapes; exact decimals."""

from __future__ import annotations

from collections.abc import Iterator
from decimal import Decimal as D

import pytest
from pyspark.sql import DataFrame, SparkSession

from lake.tables import SILVER_MARKETS
from spark_jobs.parsers import parse_l1, parse_tickers
from spark_jobs.silver_markets import latest_markets
from spark_jobs.silver_trades import JOB as TRADES_JOB
from tests.spark.envelopes import T0_NS, at_ns, bronze_df, envelope, frames, ts

pytestmark = pytest.mark.spark

DISCOVERY_NS = T0_NS - 5_000_000_000


@pytest.fixture(scope="module")
def kraken_markets(spark: SparkSession) -> Iterator[DataFrame]:
    """``silver.markets`` rows of the AssetPairs fixture, cached: the trades join them."""
    body = frames("kraken", "markets")[0]
    env = envelope(
        "kraken", "markets", body, recv_ns=DISCOVERY_NS, source="rest", stream="/0/public/AssetPairs"
    )
    df = latest_markets(bronze_df(spark, [env])).cache()
    yield df
    df.unpersist()


def test_kraken_markets_by_wsname_with_xbt_renamed_and_ws_and_rest_trades_parse_to_the_same_rows(
    spark: SparkSession, kraken_markets: DataFrame
) -> None:
    r = T0_NS + 461_203_112
    ws = [envelope("kraken", "trades", f, recv_ns=r + i, stream="trade", conn_seq=i)
          for i, f in enumerate(frames("kraken", "trades"))]  # fmt: skip
    page, _empty, error = frames("kraken", "rest_trades")
    rest = [
        envelope("kraken", "trades", text, recv_ns=r + 20 + i, source="rest", native_symbol="BTC/USD",
                 stream="/0/public/Trades?pair=XBTUSD&count=1000")
        for i, text in enumerate((page, _empty, error))
    ]  # fmt: skip
    rows = bronze_df(spark, ws + rest).transform(TRADES_JOB.normalize(kraken_markets))
    collected = rows.select(
        "symbol", "trade_id", "price", "size", "side", "event_ts", "recv_ts", "source", "_error"
    ).collect()
    good = sorted(tuple(x)[:-1] for x in collected if x["_error"] is None)
    us = T0_NS // 1000
    t = at_ns
    assert good == [
        ("BTC-USD", "1999", D("94210"), D("0.01"), "sell", t(T0_NS + 500_000_000), t(r + 20), "rest"),
        ("BTC-USD", "2000", D("94210.1"), D("0.0015"), "buy", t(T0_NS + 1_455_123_000), t(r + 20), "rest"),
        ("BTC-USD", "81234564", D("94209"), D("0.01"), "sell", t((us + 300_000) * 1000), t(r + 4), "ws"),
        ("BTC-USD", "81234565", D("94209.9"), D("0.25"), "sell", t((us + 401_000) * 1000), t(r), "ws"),
        ("BTC-USD", "81234566", D("94210"), D("0.001"), "buy", t((us + 402_000) * 1000), t(r), "ws"),
        ("BTC-USD", "81234567", D("94210.1"), D("0.0015"), "buy", t((us + 455_123) * 1000), t(r + 1), "ws"),
        ("BTC-USD", "81234567", D("94210.1"), D("0.0015"), "buy", t((us + 455_123) * 1000), t(r + 2), "ws"),
        ("ETH-USD", "4400021", D("3120.55"), D("1.5"), "sell", t((us + 500_000) * 1000), t(r + 3), "ws"),
    ]  # fmt: skip
    errors = sorted(x["_error"] for x in collected if x["_error"] is not None)
    # No trade_id; the error page; the empty `data` and the empty page give no row.
    assert errors == ["missing_trade_id", "unexpected_message_type"]
    # The markets the trades were normalized with (cached): XBT/USD is BTC/USD, symbol BTC-USD.
    assert kraken_markets.columns == list(SILVER_MARKETS.columns)
    t0 = ts(DISCOVERY_NS)
    assert sorted(tuple(x) for x in kraken_markets.collect()) == [
        ("kraken", "BTC/USD", "BTC-USD", "BTC", "USD", "online", t0),
        ("kraken", "DOGE/USD", "DOGE-USD", "DOGE", "USD", "online", t0),
        ("kraken", "ETH/BTC", "ETH-BTC", "ETH", "BTC", "cancel_only", t0),
        ("kraken", "ETH/USD", "ETH-USD", "ETH", "USD", "online", t0),
        ("kraken", "SOL/USDT", "SOL-USDT", "SOL", "USDT", "online", t0),
    ]


def test_kraken_tickers_parse_with_open_from_change_and_are_the_l1_quotes(spark: SparkSession) -> None:
    r = T0_NS + 7_000_000
    envs = [envelope("kraken", "ticker", f, recv_ns=r + i, stream="ticker", conn_seq=i)
            for i, f in enumerate(frames("kraken", "ticker"))]  # fmt: skip
    bronze = bronze_df(spark, envs)
    tickers = parse_tickers(bronze).select(
        "native_symbol", "last", "open_24h", "high_24h", "low_24h", "base_volume_24h", "quote_volume_24h",
        "best_bid", "best_ask", "event_ts", "_error",
    ).collect()  # fmt: skip
    assert sorted((tuple(x) for x in tickers), key=str) == sorted(
        [
            ("BTC/USD", D("94210.1"), D("92000"), D("94800"), D("91500"), D("1834.2"), None, D("94210"),
             D("94210.1"), at_ns(T0_NS + 123_456_000), None),
            ("ETH/USD", D("3120.55"), D("3050"), D("3140.1"), D("3021"), D("50211.7"), None, D("3120.5"),
             D("3120.6"), at_ns(r + 1), None),
            ("BTC/USD", D("94210.1"), D("92000"), D("94800"), D("91500"), D("1834.3"), None, D("94211"),
             D("94211.1"), at_ns(T0_NS + 623_456_000), None),
            (None, None, None, None, None, None, None, D("1"), None, at_ns(r + 3), "missing_symbol"),
        ],
        key=str,
    )  # fmt: skip
    quotes = parse_l1(bronze).where("exchange = 'kraken'").drop("_raw").collect()
    assert sorted((tuple(x) for x in quotes), key=str) == sorted(
        [
            ("kraken", "BTC/USD", D("94210"), D("0.5"), D("94210.1"), D("1.25"), None,
             at_ns(T0_NS + 123_456_000), at_ns(r), "ticker", None),
            ("kraken", "ETH/USD", D("3120.5"), D("2"), D("3120.6"), D("3.5"), None, at_ns(r + 1),
             at_ns(r + 1), "ticker", None),
            ("kraken", "BTC/USD", D("94211"), D("0.4"), D("94211.1"), D("1"), None,
             at_ns(T0_NS + 623_456_000), at_ns(r + 2), "ticker", None),
            ("kraken", None, D("1"), None, None, None, None, at_ns(r + 3), at_ns(r + 3), "ticker",
             "missing_symbol"),
        ],
        key=str,
    )  # fmt: skip
