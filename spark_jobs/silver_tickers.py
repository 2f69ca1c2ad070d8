"""silver_tickers: ``bronze.raw_events`` (channel ``ticker``) -> ``silver.tickers``.

Binance mini tickers (``!miniTicker@arr``, exploded), KuCoin ``/market/ticker`` and Coinbase
``ticker`` frames become one row per ``(exchange, symbol, event_ts)`` with exact decimals, the
canonical symbol and ``price_usdt`` (last x rate) / ``notional_usdt`` (24 h quote volume x rate).
Rates come from ``silver.usdt_rates`` (written by silver_trades); rows priced before their rate
existed are re-priced by later batches.

    spark-submit spark_jobs/silver_tickers.py --lake-root lake-data --trigger availableNow
"""

from __future__ import annotations

import sys

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql.streaming import StreamingQuery

from lake.tables import PRICE, SILVER_TICKERS, Lake
from spark_jobs.parsers import parse_tickers
from spark_jobs.runtime import SilverSettings, silver_main, start_silver_query
from spark_jobs.silver import BatchWriter, PricedTable, priced_batch_writer
from spark_jobs.symbols import attach_symbols

QUERY = "silver_tickers"
CHANNEL = "ticker"
TARGET = PricedTable(name=SILVER_TICKERS.name, first=(("recv_ts", True), ("_raw", True)))
_PRICING = ("usdt_rate", "price_usdt", "notional_usdt", "usdt_method")


def normalize_tickers(markets: DataFrame):  # type: ignore[no-untyped-def]
    """Bronze rows -> ``silver.tickers`` columns (USDT columns ``NULL``) plus ``_raw`` and ``_error``."""

    def transform(bronze: DataFrame) -> DataFrame:
        rows = parse_tickers(bronze).transform(attach_symbols(markets))
        return rows.select(
            *[c for c in SILVER_TICKERS.columns if c not in _PRICING],
            *[F.lit(None).cast(PRICE).alias(c) for c in _PRICING[:3]],
            F.lit(None).cast("string").alias("usdt_method"),
            "_raw",
            "_error",
        )

    return transform


def make_batch_writer(*, lake: Lake, settings: SilverSettings, app_id: str = QUERY) -> BatchWriter:
    return priced_batch_writer(
        target=TARGET, normalize=normalize_tickers, lake=lake, settings=settings, app_id=app_id
    )


def build_query(spark: SparkSession, settings: SilverSettings, *, lake: Lake) -> StreamingQuery:
    process = make_batch_writer(lake=lake, settings=settings)
    return start_silver_query(spark, settings, lake=lake, channel=CHANNEL, name=QUERY, process=process)


def main(argv: list[str] | None = None) -> int:
    return silver_main(argv, prog=QUERY, description=__doc__ or "", build_query=build_query)


if __name__ == "__main__":
    sys.exit(main())
