"""silver_markets: discovery snapshots in ``bronze.raw_events`` (channel ``markets``) -> ``silver.markets``.

Binance ``exchangeInfo``, KuCoin ``symbols`` and Coinbase ``products`` give one row per
``(exchange, native_symbol)`` with the canonical ``BASE-QUOTE`` symbol, base and quote from the
exchange's own fields (aliases applied, see :mod:`spark_jobs.symbols`) and the status. A newer
snapshot updates a market; an older one replayed later does not.

    spark-submit spark_jobs/silver_markets.py --lake-root lake-data --trigger availableNow
"""

from __future__ import annotations

import sys

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql.streaming import StreamingQuery

from lake.delta_io import dedupe_first, merge
from lake.tables import SILVER_MARKETS, Lake
from spark_jobs.parsers import parse_markets
from spark_jobs.runtime import SilverSettings, WriterId, silver_main, start_silver_query
from spark_jobs.symbols import markets_from_discovery

QUERY = "silver_markets"
CHANNEL = "markets"


def latest_markets(bronze: DataFrame) -> DataFrame:
    """Bronze discovery rows -> one ``silver.markets`` row per market: the latest snapshot's."""
    markets = parse_markets(bronze).transform(markets_from_discovery)
    return dedupe_first(markets, SILVER_MARKETS.key, (F.col("updated_ts").desc(), F.col("symbol").asc()))


def write_markets(bronze: DataFrame, batch_id: int, *, lake: Lake, app_id: str | None) -> None:
    """MERGE the latest snapshot of each market in these bronze rows (a newer one wins)."""
    merge(
        latest_markets(bronze),
        lake=lake,
        name=SILVER_MARKETS.name,
        mode="upsert",
        update_condition="s.updated_ts >= t.updated_ts OR t.updated_ts IS NULL",
        app_id=app_id,
        version=batch_id,
    )


def make_batch_writer(*, lake: Lake, app_id: str | WriterId = QUERY):  # type: ignore[no-untyped-def]
    def process(batch: DataFrame, batch_id: int) -> None:
        if batch.isEmpty():  # a no-data batch (the watermark moved): nothing to commit
            return
        write_markets(batch, batch_id, lake=lake, app_id=str(app_id))

    return process


def build_query(spark: SparkSession, settings: SilverSettings, *, lake: Lake) -> StreamingQuery:
    process = make_batch_writer(lake=lake, app_id=WriterId(spark, QUERY))
    return start_silver_query(spark, settings, lake=lake, channels=(CHANNEL,), name=QUERY, process=process)


def main(argv: list[str] | None = None) -> int:
    return silver_main(argv, prog=QUERY, description=__doc__ or "", build_query=build_query)


if __name__ == "__main__":
    sys.exit(main())
