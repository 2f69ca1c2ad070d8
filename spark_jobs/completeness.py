"""``gold.completeness_1m``: how much of each minute's trading we hold, by the exchange's own candles.

Inputs: the ``klines`` envelopes in ``bronze.raw_events`` (each a venue's candle response, see
``extractors.klines``), ``silver.trades``, ``silver.markets`` (native -> canonical symbol) and the
``gaps`` envelopes (trades the extractor knows it lost). Output, per exchange, symbol and minute
that has an exchange candle: our trade count and base volume next to the exchange's, the ratios,
and ``in_gap``.

* Candle rows per venue (exchanges.md): Binance ``[openTime ms, o, h, l, c, volume, closeTime,
  quoteVolume, trades, ...]``; KuCoin ``{"data": [[time s, o, c, h, l, volume, turnover]]}``;
  Coinbase ``[[time s, low, high, open, close, volume]]`` (JSON numbers, read as their exact text).
  A minute fetched twice keeps the newest response.
* ``count_ratio`` = our count / the exchange's (Binance only: the others publish no count);
  ``volume_ratio`` = our base volume / the exchange's; both ``DECIMAL(38,10)``, half up, ``NULL``
  when the exchange's figure is 0. 1 means complete; less means trades are missing.
* A gap window of a market runs from the event time of its ``after_id`` trade to that of its
  ``before_id`` trade (found in ``silver.trades`` by trade id; when one is unknown, the other, then
  the gap's receive time, stands in). A minute is ``in_gap`` when it overlaps a window.

The job is a batch: it recomputes every minute whose candle arrived in the last ``lookback_days``
(bronze partitions) and MERGEs on (exchange, symbol, minute), writing only rows whose values
changed, so a second run writes nothing new. ``python -m spark_jobs.completeness --help``.
"""

from __future__ import annotations

import argparse
import logging
import sys
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql.types import ArrayType, DecimalType, StringType

from lake.config import ConfigError
from lake.delta_io import dedupe_first, merge
from lake.session import build_spark
from lake.tables import (
    BRONZE_RAW_EVENTS,
    GOLD_COMPLETENESS_1M,
    PRICE,
    RATIO,
    SILVER_MARKETS,
    SILVER_TRADES,
    Lake,
)
from spark_jobs.columns import minute_of
from spark_jobs.runtime import build_parser, read_table, resolve

logger = logging.getLogger(__name__)

TABLE = GOLD_COMPLETENESS_1M.name
_ROWS = ArrayType(ArrayType(StringType()))
#: Operand types whose quotient Spark returns as DECIMAL(38,10), rounded once, half up.
_COUNT_OPERAND = DecimalType(28, 0)
_VOLUME_OPERAND = DecimalType(28, 14)


@dataclass(frozen=True, kw_only=True)
class CompletenessSettings:
    """Section ``completeness:``. ``lookback_days``: recompute minutes whose candle was received in
    the last this many days (UTC dates of bronze ``recv_date``)."""

    lookback_days: int = 2


# --- pure transforms ------------------------------------------------------------------------------


def _ts_ns(col: str) -> Column:
    return F.timestamp_micros(F.floor(F.col(col) / 1000)).cast("timestamp")


def parse_klines(bronze: DataFrame) -> DataFrame:
    """Bronze ``klines`` rows -> one row per candle: exchange, native_symbol, minute,
    exchange_volume, exchange_trade_count, kline_recv_ts (newest response per minute)."""
    rows = F.when(
        F.col("exchange") == "kucoin", F.from_json(F.get_json_object("payload", "$.data"), _ROWS)
    ).otherwise(F.from_json("payload", _ROWS))
    start_s = F.when(F.col("exchange") == "binance", F.col("r")[0].cast("long") / 1000).otherwise(
        F.col("r")[0].cast("long")
    )
    candles = (
        bronze.where(F.col("channel") == "klines")
        .select(
            "exchange",
            "native_symbol",
            _ts_ns("recv_ts_ns").alias("kline_recv_ts"),
            F.explode(rows).alias("r"),
        )
        .select(
            "exchange",
            "native_symbol",
            minute_of(F.timestamp_seconds(start_s.cast("long"))).alias("minute"),
            F.col("r")[5].cast(PRICE).alias("exchange_volume"),
            F.when(F.col("exchange") == "binance", F.col("r")[8].cast("long")).alias("exchange_trade_count"),
            "kline_recv_ts",
        )
        .where(F.col("exchange_volume").isNotNull())
    )
    return dedupe_first(candles, ("exchange", "native_symbol", "minute"), (F.col("kline_recv_ts").desc(),))


def trade_minutes(trades: DataFrame) -> DataFrame:
    """``silver.trades`` -> exchange, symbol, minute, trade_count, volume."""
    return trades.groupBy("exchange", "symbol", minute_of("event_ts").alias("minute")).agg(
        F.count(F.lit(1)).alias("trade_count"), F.sum("size").cast(PRICE).alias("volume")
    )


def gap_windows(bronze: DataFrame, trades: DataFrame) -> DataFrame:
    """Bronze ``gaps`` rows -> exchange, native_symbol, gap_start_ts, gap_end_ts."""
    gaps = bronze.where(F.col("channel") == "gaps").select(
        "exchange",
        F.coalesce(F.get_json_object("payload", "$.native_symbol"), F.col("native_symbol")).alias(
            "native_symbol"
        ),
        F.get_json_object("payload", "$.after_id").alias("after_id"),
        F.get_json_object("payload", "$.before_id").alias("before_id"),
        _ts_ns("recv_ts_ns").alias("recv_ts"),
    )
    times = trades.select("exchange", "native_symbol", "trade_id", "event_ts")
    after = times.select(
        "exchange", "native_symbol", F.col("trade_id").alias("after_id"), F.col("event_ts").alias("after_ts")
    )
    before = times.select(
        "exchange",
        "native_symbol",
        F.col("trade_id").alias("before_id"),
        F.col("event_ts").alias("before_ts"),
    )
    on = ["exchange", "native_symbol"]
    joined = gaps.join(after, [*on, "after_id"], "left").join(before, [*on, "before_id"], "left")
    return joined.select(
        *on,
        F.coalesce("after_ts", "before_ts", "recv_ts").alias("gap_start_ts"),
        F.coalesce("before_ts", "recv_ts").alias("gap_end_ts"),
    )


def _ratio(ours: Column, theirs: Column, operand: DecimalType) -> Column:
    return F.when(theirs != 0, (ours.cast(operand) / theirs.cast(operand)).cast(RATIO))


def completeness_1m(
    candles: DataFrame, markets: DataFrame, minutes: DataFrame, windows: DataFrame, *, now: datetime
) -> DataFrame:
    """The ``gold.completeness_1m`` rows of the parsed candles (candles of unknown markets are left out)."""
    symbols = markets.select("exchange", "native_symbol", "symbol").dropDuplicates(
        ["exchange", "native_symbol"]
    )
    rows = candles.join(symbols, ["exchange", "native_symbol"]).join(
        minutes, ["exchange", "symbol", "minute"], "left"
    )
    overlap = (
        rows.alias("c")
        .join(
            windows.alias("g"),
            (F.col("c.exchange") == F.col("g.exchange"))
            & (F.col("c.native_symbol") == F.col("g.native_symbol"))
            & (F.col("g.gap_start_ts") < F.col("c.minute") + F.expr("INTERVAL 1 MINUTE"))
            & (F.col("g.gap_end_ts") >= F.col("c.minute")),
            "left_semi",
        )
        .select("exchange", "symbol", "minute")
        .withColumn("in_gap", F.lit(True))
    )
    trade_count = F.coalesce(F.col("trade_count"), F.lit(0)).cast("long")
    volume = F.coalesce(F.col("volume"), F.lit(0)).cast(PRICE)
    return (
        rows.join(overlap, ["exchange", "symbol", "minute"], "left")
        .withColumn("trade_count", trade_count)
        .withColumn("volume", volume)
        .select(
            "exchange",
            "symbol",
            "native_symbol",
            "minute",
            "trade_count",
            "volume",
            "exchange_trade_count",
            "exchange_volume",
            _ratio(F.col("trade_count"), F.col("exchange_trade_count"), _COUNT_OPERAND).alias("count_ratio"),
            _ratio(F.col("volume"), F.col("exchange_volume"), _VOLUME_OPERAND).alias("volume_ratio"),
            F.coalesce(F.col("in_gap"), F.lit(False)).alias("in_gap"),
            "kline_recv_ts",
            F.lit(now).cast("timestamp").alias("updated_ts"),
        )
    )


# --- the job --------------------------------------------------------------------------------------

#: Rows are rewritten only when one of these differs (``updated_ts`` and the receive time do not count).
_CHANGED = (
    "NOT ("
    + " AND ".join(
        f"s.`{c}` <=> t.`{c}`"
        for c in (
            "trade_count",
            "volume",
            "exchange_trade_count",
            "exchange_volume",
            "count_ratio",
            "volume_ratio",
            "in_gap",
        )
    )
    + ")"
)


def run(spark: SparkSession, *, lake: Lake, settings: CompletenessSettings | None = None) -> None:
    """Recompute the minutes whose candle arrived in the lookback window and MERGE them."""
    settings = settings or CompletenessSettings()
    now = datetime.now(UTC).replace(tzinfo=None)
    since = (now - timedelta(days=settings.lookback_days)).date()
    bronze = read_table(spark, lake, BRONZE_RAW_EVENTS.name).where(
        (F.col("recv_date") >= F.lit(since)) & F.col("channel").isin("klines", "gaps")
    )
    # Candles are fetched minutes after the minute: a day's margin covers any delay setting.
    trades = read_table(spark, lake, SILVER_TRADES.name).where(
        F.col("trade_date") >= F.lit(since - timedelta(days=1))
    )
    markets = read_table(spark, lake, SILVER_MARKETS.name)
    rows = completeness_1m(
        parse_klines(bronze), markets, trade_minutes(trades), gap_windows(bronze, trades), now=now
    )
    merge(rows, lake=lake, name=TABLE, mode="upsert", update_condition=_CHANGED)
    logger.info("%s: minutes with candles received since %s merged", TABLE, since)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser(
        prog="spark_jobs.completeness",
        description=__doc__ or "",
        section="completeness",
        settings_cls=CompletenessSettings,
    )
    args: argparse.Namespace = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    try:
        ctx = resolve(args, section="completeness", settings_cls=CompletenessSettings)
        spark = build_spark(ctx.spark)
    except ConfigError as exc:
        print(f"config error: {exc}", file=sys.stderr)
        return 2
    run(spark, lake=ctx.lake, settings=ctx.settings)
    return 0


if __name__ == "__main__":
    sys.exit(main())
