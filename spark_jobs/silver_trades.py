"""silver_trades: ``bronze.raw_events`` (channel ``trades``) -> ``silver.trades`` and ``silver.usdt_rates``.

Websocket trades and REST gap-fill pages of Binance, KuCoin and Coinbase become one row per trade,
keyed ``(exchange, symbol, trade_id)``: exact decimal price and size, taker side, ``event_ts`` from
the exchange, ``recv_ts`` from the envelope, the canonical symbol from ``silver.markets`` and the
USDT columns (see :mod:`spark_jobs.usdt`). Each micro-batch also refreshes the USDT rates of the
minutes it touched. Rejected rows (unknown market, bad numbers, ...) go to ``silver.quarantine``.

    spark-submit spark_jobs/silver_trades.py --lake-root lake-data --trigger availableNow
"""

from __future__ import annotations

import sys

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql.streaming import StreamingQuery

from lake.tables import PRICE, SILVER_TRADES, Lake
from spark_jobs.parsers import parse_trades
from spark_jobs.runtime import SilverSettings, silver_main, start_silver_query
from spark_jobs.silver import BatchWriter, PricedTable, priced_batch_writer
from spark_jobs.symbols import attach_symbols

QUERY = "silver_trades"
CHANNEL = "trades"
#: First received wins; between a websocket row and its REST gap-fill twin, the websocket row.
TARGET = PricedTable(
    name=SILVER_TRADES.name,
    first=(("recv_ts", True), ("source = 'ws'", False), ("_raw", True)),
    computes_rates=True,
)


def normalize_trades(markets: DataFrame):  # type: ignore[no-untyped-def]
    """Bronze rows -> ``silver.trades`` columns (USDT columns ``NULL``) plus ``_raw`` and ``_error``."""

    def transform(bronze: DataFrame) -> DataFrame:
        rows = parse_trades(bronze).transform(attach_symbols(markets))
        none = F.lit(None).cast(PRICE)
        return rows.select(
            *[
                c
                for c in SILVER_TRADES.columns
                if c not in ("usdt_rate", "price_usdt", "notional_usdt", "usdt_method")
            ],
            none.alias("usdt_rate"),
            none.alias("price_usdt"),
            none.alias("notional_usdt"),
            F.lit(None).cast("string").alias("usdt_method"),
            "_raw",
            "_error",
        )

    return transform


def make_batch_writer(*, lake: Lake, settings: SilverSettings, app_id: str = QUERY) -> BatchWriter:
    return priced_batch_writer(
        target=TARGET, normalize=normalize_trades, lake=lake, settings=settings, app_id=app_id
    )


def build_query(spark: SparkSession, settings: SilverSettings, *, lake: Lake) -> StreamingQuery:
    process = make_batch_writer(lake=lake, settings=settings)
    return start_silver_query(spark, settings, lake=lake, channel=CHANNEL, name=QUERY, process=process)


def main(argv: list[str] | None = None) -> int:
    return silver_main(argv, prog=QUERY, description=__doc__ or "", build_query=build_query)


if __name__ == "__main__":
    sys.exit(main())
