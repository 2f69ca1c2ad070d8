"""The exchange registry of :mod:`spark_jobs.parsers`: which exchanges parse, and the rest."""

from __future__ import annotations

import pytest
from pyspark.sql import DataFrame, SparkSession

from spark_jobs import parsers
from spark_jobs.silver_trades import JOB as TRADES_JOB
from tests.spark.envelopes import T0_NS, bronze_df, envelope

pytestmark = pytest.mark.spark


def test_the_registry_names_every_parsed_exchange_and_those_whose_tickers_carry_the_book() -> None:
    assert parsers.SUPPORTED_EXCHANGES == ("binance", "kucoin", "coinbase", "kraken", "okx", "bybit")
    assert sorted(parsers.TICKER_L1_EXCHANGES) == ["coinbase", "kraken", "kucoin", "okx"]


def test_rows_of_an_exchange_without_a_parser_are_quarantined_as_unsupported(
    spark: SparkSession, markets: DataFrame
) -> None:
    okx = envelope("mtgox", "trades", {"arg": {"channel": "trades"}}, recv_ns=T0_NS + 461_203_124)
    bronze = bronze_df(spark, [okx])
    rows = bronze.transform(TRADES_JOB.normalize(markets))
    assert [(x["exchange"], x["_error"]) for x in rows.select("exchange", "_error").collect()] == [
        ("mtgox", "unsupported_exchange")
    ]
