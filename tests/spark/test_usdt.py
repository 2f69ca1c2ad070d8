"""USDT rates and pricing on inline trades; expected values recomputed here with Python decimals."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal as D

import pytest
from pyspark.sql import SparkSession
from pyspark.sql.types import StringType, StructField, StructType, TimestampType

from lake.tables import PRICE
from spark_jobs.usdt import (
    RateBook,
    attach_rates,
    market_prices,
    observe_prices,
    price_trades,
    rate_rows,
    rates_frame,
)
from tests.spark.envelopes import q

pytestmark = pytest.mark.spark

M0 = datetime(2026, 1, 1, 0, 0)
M1 = M0 + timedelta(minutes=1)
TRADE = StructType(
    [
        StructField("exchange", StringType()),
        StructField("symbol", StringType()),
        StructField("base", StringType()),
        StructField("quote", StringType()),
        StructField("trade_id", StringType()),
        StructField("price", PRICE),
        StructField("size", PRICE),
        StructField("event_ts", TimestampType()),
        StructField("recv_ts", TimestampType()),
    ]
)


def _t(ex: str, base: str, quote: str, tid: str, price: str, size: str, at: datetime) -> tuple:
    return (ex, f"{base}-{quote}", base, quote, tid, D(price), D(size), at, at + timedelta(milliseconds=5))


def test_rates_by_method_and_pricing_with_carry(spark: SparkSession) -> None:
    s = timedelta(seconds=1)
    trades = [
        _t("binance", "BTC", "USDT", "1", "93990.5", "0.1", M0 + 10 * s),
        _t("kucoin", "BTC", "USDT", "9", "94000.25", "0.2", M0 + 50 * s),  # last of minute 0, pooled
        _t("binance", "ETH", "USDT", "2", "3100.1", "1", M0 + 20 * s),
        _t("binance", "ETH", "BTC", "3", "0.033", "1", M0 + 21 * s),  # ETH has a direct rate: not used
        _t("coinbase", "BTC", "USD", "4", "94100.01", "0.01", M0 + 30 * s),  # USD via BTC
        _t("kucoin", "USDT", "IRT", "5", "1123400", "10", M0 + 31 * s),  # IRT inverse
        _t("binance", "XMR", "BTC", "6", "0.0017", "3", M0 + 32 * s),  # XMR via BTC
        _t("binance", "SOL", "ETH", "7", "0.0451", "2", M0 + 33 * s),  # SOL via ETH
        _t("binance", "FOO", "BAR", "8", "2", "2", M0 + 34 * s),  # no path to USDT
        _t("binance", "BTC", "USDT", "10", "94050", "0.3", M1 + 5 * s),
        _t("binance", "SOL", "ETH", "11", "0.046", "4", M1 + 6 * s),  # ETH rate carried from minute 0
        _t("coinbase", "BTC", "USD", "12", "94110", "0.02", M1 + 7 * s),
    ]
    df = spark.createDataFrame(trades, TRADE)
    book = RateBook()
    # Two batches: the book keeps the last trade of each market and minute across them.
    observe_prices(book, market_prices(df.where("trade_id != '9'")))
    observe_prices(book, market_prices(df.where("trade_id = '9'")))
    minutes = [int(m.replace(tzinfo=UTC).timestamp()) for m in (M0, M1)]
    rates = rates_frame(spark, rate_rows(book, minutes)).cache()

    btc0, btc1, eth0 = D("94000.25"), D("94050"), D("3100.1")
    expected_rates = {
        ("USDT", M0): (D(1), "identity"),
        ("USDT", M1): (D(1), "identity"),
        ("BTC", M0): (btc0, "direct"),
        ("BTC", M1): (btc1, "direct"),
        ("ETH", M0): (eth0, "direct"),
        ("USDC", M0): None,
        ("USD", M0): (q(btc0 * q(1 / D("94100.01"))), "cross_btc"),
        ("USD", M1): (q(btc1 * q(1 / D("94110"))), "cross_btc"),
        ("IRT", M0): (q(1 / D("1123400")), "inverse"),
        ("XMR", M0): (q(D("0.0017") * btc0), "cross_btc"),
        ("SOL", M0): (q(D("0.0451") * eth0), "cross_eth"),
    }
    expected_rates = {k: v for k, v in expected_rates.items() if v is not None}
    got_rates = {(r.asset, r.minute): (r.rate_to_usdt, r.method) for r in rates.collect()}
    assert got_rates == expected_rates

    rows = spark.createDataFrame(
        [
            _t("coinbase", "BTC", "USD", "4", "94100.01", "0.01", M0 + 30 * s),
            _t("binance", "SOL", "ETH", "11", "0.046", "4", M1 + 6 * s),
            _t("binance", "FOO", "BAR", "8", "2", "2", M0 + 34 * s),
            _t("kucoin", "USDT", "IRT", "5", "1123400", "10", M0 + 31 * s),
            _t("binance", "ETH", "BTC", "13", "0.0331", "1", M1 + 6 * timedelta(minutes=1)),  # beyond carry
        ],
        TRADE,
    )
    priced = (
        rows.transform(attach_rates(rates, key=("exchange", "symbol", "trade_id"), carry_minutes=5))
        .transform(price_trades)
        .select("trade_id", "usdt_rate", "usdt_method", "price_usdt", "notional_usdt")
        .orderBy("trade_id")
    )

    def priced_row(tid: str, price: str, size: str, rate: D | None, method: str | None) -> tuple:
        if rate is None:
            return (tid, None, None, None, None)
        pu = q(D(price) * rate)
        return (tid, rate, method, pu, q(pu * D(size), 15))

    usd0 = expected_rates[("USD", M0)][0]
    irt0 = expected_rates[("IRT", M0)][0]
    assert [tuple(r) for r in priced.collect()] == [
        priced_row("11", "0.046", "4", eth0, "direct:carried"),
        priced_row("13", "0.0331", "1", None, None),
        priced_row("4", "94100.01", "0.01", usd0, "cross_btc"),
        priced_row("5", "1123400", "10", irt0, "inverse"),
        priced_row("8", "2", "2", None, None),
    ]
