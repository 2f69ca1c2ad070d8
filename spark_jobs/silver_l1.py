"""silver_l1: ``bronze.raw_events`` (channel ``l1``) -> ``silver.l1_quotes``.

Binance ``@bookTicker`` (no event time: the receive time stands in), KuCoin ``/spotMarket/level1``
and Coinbase REST ``book?level=1`` become one best bid/ask row per ``(exchange, symbol, event_ts,
sequence)`` with ``spread_bps`` = (ask - bid) x 10000 / mid and ``mid_usdt`` = mid x rate. A crossed
book (bid > ask) or a non-positive price is quarantined.

    spark-submit spark_jobs/silver_l1.py --lake-root lake-data --trigger availableNow
"""

from __future__ import annotations

import sys

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql.streaming import StreamingQuery

from lake.tables import PRICE, SILVER_L1_QUOTES, Lake
from spark_jobs.parsers import parse_l1
from spark_jobs.runtime import SilverSettings, silver_main, start_silver_query
from spark_jobs.silver import BatchWriter, PricedTable, priced_batch_writer
from spark_jobs.symbols import attach_symbols
from spark_jobs.usdt import l1_mid_and_spread

QUERY = "silver_l1"
CHANNEL = "l1"
TARGET = PricedTable(name=SILVER_L1_QUOTES.name, first=(("recv_ts", True), ("_raw", True)))
_PRICING = ("usdt_rate", "mid_usdt", "usdt_method")


def normalize_l1(markets: DataFrame):  # type: ignore[no-untyped-def]
    """Bronze rows -> ``silver.l1_quotes`` columns (USDT columns ``NULL``) plus ``_raw`` and ``_error``."""

    def transform(bronze: DataFrame) -> DataFrame:
        rows = parse_l1(bronze).transform(attach_symbols(markets)).transform(l1_mid_and_spread)
        return rows.select(
            *[c for c in SILVER_L1_QUOTES.columns if c not in _PRICING],
            F.lit(None).cast(PRICE).alias("usdt_rate"),
            F.lit(None).cast(PRICE).alias("mid_usdt"),
            F.lit(None).cast("string").alias("usdt_method"),
            "_raw",
            "_error",
        )

    return transform


def make_batch_writer(*, lake: Lake, settings: SilverSettings, app_id: str = QUERY) -> BatchWriter:
    return priced_batch_writer(
        target=TARGET, normalize=normalize_l1, lake=lake, settings=settings, app_id=app_id
    )


def build_query(spark: SparkSession, settings: SilverSettings, *, lake: Lake) -> StreamingQuery:
    process = make_batch_writer(lake=lake, settings=settings)
    return start_silver_query(spark, settings, lake=lake, channel=CHANNEL, name=QUERY, process=process)


def main(argv: list[str] | None = None) -> int:
    return silver_main(argv, prog=QUERY, description=__doc__ or "", build_query=build_query)


if __name__ == "__main__":
    sys.exit(main())
