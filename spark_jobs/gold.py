"""gold: ``silver.trades`` -> bars and volumes; ``silver.l1_quotes`` -> the L1 book, per second.

Tables (see ``docs/gold.md``): ``gold.ohlcv_1m`` (per exchange, symbol, minute),
``gold.ohlcv_1m_composite`` (per base asset and minute, every exchange in USDT),
``gold.exchange_volume_daily`` (per exchange, day, symbol), ``gold.l1_latest`` and ``gold.l1_1s``.

**Recompute the touched keys, then MERGE.** :func:`update_gold` is told which bars a micro-batch
touched: the (exchange, symbol, minute) of the trades it wrote, and/or whole minutes (what the live
pipeline knows: the minutes its silver write returned, and the minutes a re-pricing reached). It
reads the trades of those bars back from ``silver.trades`` (date partitions and ``event_ts``
statistics bound the read), aggregates them, and MERGEs into ``gold.ohlcv_1m``, rewriting only the
bars whose values changed; then the composite bars of the touched (base, minute) and the daily
volumes of the touched (day, symbol) are recomputed from ``gold.ohlcv_1m`` the same way. Every value
is a function of silver's rows, so a replayed batch changes nothing, a late trade fixes its bar and
a re-priced trade fixes the USDT columns as soon as its minute is passed in. No ``txnAppId`` is
needed (and none is set: it is a session-wide setting that would leak into the live pipeline's
concurrent writers).

**L1.** The newest quote per key is an order-independent maximum over (``event_ts``, ``sequence``),
so :func:`update_l1` MERGEs a batch's quotes with "newer wins" (and "same quote, re-priced, wins")
without reading silver back.

**Exact decimals.** OHLC are exchange prices; ``quote_volume`` sums ``price x size`` rounded half-up
to 15 digits per trade (like silver's ``notional_usdt``); ``volume_usdt`` sums ``notional_usdt``;
``vwap`` = ``quote_volume / volume`` and the other ratios are rounded half-up to 18 digits in Python
decimals on the driver (:func:`finish_ratios`): Spark types a ``DECIMAL(38,18)`` quotient
``DECIMAL(38,6)``.

    python -m spark_jobs.gold --lake-root lake-data --trigger availableNow
    spark-submit spark_jobs/gold.py --trigger "processingTime=10 seconds"
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime
from decimal import ROUND_HALF_UP, Context, Decimal

from delta.tables import DeltaTable
from pyspark.sql import Column, DataFrame, Row, SparkSession, Window
from pyspark.sql import functions as F
from pyspark.sql.streaming import StreamingQuery
from pyspark.sql.types import StringType, StructField, StructType

from lake.config import ConfigError
from lake.delta_io import ensure_tables, merge_rows
from lake.session import build_spark
from lake.tables import (
    GOLD_EXCHANGE_VOLUME_DAILY,
    GOLD_L1_1S,
    GOLD_L1_LATEST,
    GOLD_OHLCV_1M,
    GOLD_OHLCV_1M_COMPOSITE,
    PRICE,
    SILVER_L1_QUOTES,
    SILVER_TRADES,
    Lake,
    TableSpec,
    table,
)
from spark_jobs.columns import minute_of, mul
from spark_jobs.runtime import SETTING_HELP, build_parser, parse_trigger, read_table, resolve, start
from spark_jobs.silver import Range, minute_ranges, union_ranges, within

logger = logging.getLogger(__name__)

#: Every table the gold jobs write, created in this order before a query starts.
GOLD_TABLES = tuple(
    t.name
    for t in (GOLD_OHLCV_1M, GOLD_OHLCV_1M_COMPOSITE, GOLD_EXCHANGE_VOLUME_DAILY, GOLD_L1_LATEST, GOLD_L1_1S)
)

BARS_QUERY = "gold_bars"
L1_QUERY = "gold_l1"

#: Columns that are not compared to decide whether a stored row changed.
_BOOKKEEPING = ("updated_ts",)


# --- exact decimal ratios -------------------------------------------------------------------

_CONTEXT = Context(prec=100)
_Q18 = Decimal(1).scaleb(-18)


def _divide(a: Decimal | None, b: Decimal | None) -> Decimal | None:
    if a is None or b is None or b == 0:
        return None
    return _CONTEXT.divide(a, b).quantize(_Q18, rounding=ROUND_HALF_UP, context=_CONTEXT)


#: Ratio columns finished on the driver: (column, numerator, denominator), by table.
RATIOS: dict[str, tuple[tuple[str, str, str], ...]] = {
    GOLD_OHLCV_1M.name: (("vwap", "quote_volume", "volume"), ("vwap_usdt", "volume_usdt", "volume")),
    GOLD_OHLCV_1M_COMPOSITE.name: (("vwap_usdt", "volume_usdt", "volume"),),
    GOLD_EXCHANGE_VOLUME_DAILY.name: (("venue_share", "volume_usdt", "_venue_volume_usdt"),),
}


def finish_ratios(rows: Iterable[Row], *, name: str) -> list[tuple[object, ...]]:
    """Aggregated rows of table ``name`` -> its rows as tuples, every ratio column filled exactly.

    Each ratio is ``numerator / denominator`` rounded half-up to 18 fraction digits in Python
    decimals (``NULL`` when either is ``NULL`` or the denominator is 0). Spark types the quotient of
    two ``DECIMAL(38,18)`` ``DECIMAL(38,6)``, and no cast of the operands keeps 18 exact digits at
    every magnitude; the rows are aggregates (bars, days), a few hundred per micro-batch, so they
    are finished on the driver rather than in a Python UDF (executors need no Python worker).
    """
    columns = table(name).columns
    ratios = RATIOS[name]
    out = []
    for row in rows:
        values = row.asDict()
        for column, numerator, denominator in ratios:
            values[column] = _divide(values[numerator], values[denominator])
        out.append(tuple(values[c] for c in columns))
    return out


def _finished(spark: SparkSession, rows: list[Row], *, name: str) -> DataFrame:
    return spark.createDataFrame(finish_ratios(rows, name=name), table(name).schema)


def quote_notional(price: Column, size: Column) -> Column:
    """``price x size`` in the quote asset, half-up at 15 digits (price < 1e12, size < 1e10)."""
    return mul(price, size, a_int=12, b_int=10)


def _trade_order() -> Column:
    """Trade time order within a bar: event time, then trade id (numeric ids: shorter first)."""
    return F.struct(F.col("event_ts"), F.length("trade_id"), F.col("trade_id"))


# --- pure transforms ------------------------------------------------------------------------


def ohlcv_1m(trades: DataFrame) -> DataFrame:
    """Silver trades -> one bar per (exchange, symbol, minute) with every ``gold.ohlcv_1m`` column.

    ``vwap``/``vwap_usdt`` are left ``NULL`` for :func:`finish_ratios`. Open/close are the
    first/last trade by (event time, trade id); the USDT columns are ``NULL``
    unless every trade of the bar has a USDT price (``open_usdt`` is the open trade's
    ``price_usdt``). Pass every trade of the bars wanted: a bar is only right when all its trades
    are there.
    """
    order = _trade_order()
    bars = trades.groupBy("exchange", "symbol", "base", "quote", minute_of("event_ts").alias("minute")).agg(
        F.min_by("price", order).alias("open"),
        F.max("price").alias("high"),
        F.min("price").alias("low"),
        F.max_by("price", order).alias("close"),
        F.sum("size").alias("volume"),
        F.sum(quote_notional(F.col("price"), F.col("size"))).alias("quote_volume"),
        F.count(F.lit(1)).alias("trade_count"),
        F.min("event_ts").alias("first_trade_ts"),
        F.max("event_ts").alias("last_trade_ts"),
        F.min_by("price_usdt", order).alias("_open_usdt"),
        F.max("price_usdt").alias("_high_usdt"),
        F.min("price_usdt").alias("_low_usdt"),
        F.max_by("price_usdt", order).alias("_close_usdt"),
        F.sum("notional_usdt").alias("_volume_usdt"),
        F.count("notional_usdt").alias("_priced"),
    )
    priced = (F.col("_priced") == F.col("trade_count")) & F.col("_volume_usdt").isNotNull()

    def usdt(name: str) -> Column:
        return F.when(priced, F.col(f"_{name}")).cast(PRICE).alias(name)

    return bars.select(
        "exchange",
        "symbol",
        "base",
        "quote",
        "minute",
        "open",
        "high",
        "low",
        "close",
        F.col("volume").cast(PRICE).alias("volume"),
        F.col("quote_volume").cast(PRICE).alias("quote_volume"),
        F.lit(None).cast(PRICE).alias("vwap"),
        "trade_count",
        "first_trade_ts",
        "last_trade_ts",
        usdt("open_usdt"),
        usdt("high_usdt"),
        usdt("low_usdt"),
        usdt("close_usdt"),
        F.lit(None).cast(PRICE).alias("vwap_usdt"),
        usdt("volume_usdt"),
        F.to_date("minute").alias("bar_date"),
        F.current_timestamp().alias("updated_ts"),
    )


def composite_1m(bars: DataFrame) -> DataFrame:
    """``gold.ohlcv_1m`` bars -> one USDT bar per (base, minute) over every exchange and quote.

    Only priced bars count. Open is the open of the bar with the earliest first trade (ties: the
    exchange, then the symbol, in name order), close the close of the bar with the latest last
    trade (ties: the last exchange, then symbol, in name order); ``vwap_usdt`` = USDT volume /
    base volume, left ``NULL`` for :func:`finish_ratios`.
    """
    first = F.struct(F.col("first_trade_ts"), F.col("exchange"), F.col("symbol"))
    last = F.struct(F.col("last_trade_ts"), F.col("exchange"), F.col("symbol"))
    return (
        bars.where(F.col("volume_usdt").isNotNull())
        .groupBy("base", "minute")
        .agg(
            F.min_by("open_usdt", first).alias("open_usdt"),
            F.max("high_usdt").alias("high_usdt"),
            F.min("low_usdt").alias("low_usdt"),
            F.max_by("close_usdt", last).alias("close_usdt"),
            F.sum("volume").cast(PRICE).alias("volume"),
            F.sum("volume_usdt").cast(PRICE).alias("volume_usdt"),
            F.sum("trade_count").alias("trade_count"),
            F.min("first_trade_ts").alias("first_trade_ts"),
            F.max("last_trade_ts").alias("last_trade_ts"),
            F.array_join(F.array_sort(F.collect_set("exchange")), ",").alias("exchanges"),
            F.array_join(F.array_sort(F.collect_set("symbol")), ",").alias("symbols"),
        )
        .select(
            "base",
            "minute",
            "open_usdt",
            "high_usdt",
            "low_usdt",
            "close_usdt",
            F.lit(None).cast(PRICE).alias("vwap_usdt"),
            "volume",
            "volume_usdt",
            "trade_count",
            "first_trade_ts",
            "last_trade_ts",
            "exchanges",
            "symbols",
            F.to_date("minute").alias("bar_date"),
            F.current_timestamp().alias("updated_ts"),
        )
    )


def exchange_volume_daily(bars: DataFrame) -> DataFrame:
    """``gold.ohlcv_1m`` bars -> volumes per (exchange, day, symbol) and the venue's USDT share.

    Pass every bar of each (day, symbol) wanted, on every exchange: ``venue_share`` is the row's
    ``volume_usdt`` over the sum of that symbol's ``volume_usdt`` on all exchanges that day.
    ``volume_usdt`` sums the priced bars; ``unpriced_trade_count`` counts the trades of the others.
    ``venue_share`` is left ``NULL`` for :func:`finish_ratios` (extra column ``_venue_volume_usdt``).
    """
    day = Window.partitionBy("trade_date", "symbol")
    return (
        bars.groupBy("exchange", F.col("bar_date").alias("trade_date"), "symbol", "base", "quote")
        .agg(
            F.sum("volume").cast(PRICE).alias("volume"),
            F.sum("quote_volume").cast(PRICE).alias("volume_quote"),
            F.sum("volume_usdt").cast(PRICE).alias("volume_usdt"),
            F.sum("trade_count").alias("trade_count"),
            F.sum(F.when(F.col("volume_usdt").isNull(), F.col("trade_count")).otherwise(0)).alias(
                "unpriced_trade_count"
            ),
        )
        .withColumn("venue_share", F.lit(None).cast(PRICE))
        .withColumn("updated_ts", F.current_timestamp())
        .select(
            *GOLD_EXCHANGE_VOLUME_DAILY.columns, F.sum("volume_usdt").over(day).alias("_venue_volume_usdt")
        )
    )


def _quote_order() -> list[Column]:
    """Newest first: event time, then the exchange's sequence (silver's key makes it unique)."""
    return [F.col("event_ts").desc(), F.coalesce(F.col("sequence"), F.lit(-1)).desc()]


def latest_quotes(quotes: DataFrame) -> DataFrame:
    """Silver quotes -> the newest per (exchange, symbol), as ``gold.l1_latest`` rows."""
    w = Window.partitionBy("exchange", "symbol").orderBy(*_quote_order())
    return quotes.withColumn("_n", F.row_number().over(w)).where("_n = 1").select(*GOLD_L1_LATEST.columns)


def quotes_1s(quotes: DataFrame) -> DataFrame:
    """Silver quotes -> the last quote of each (exchange, symbol, second), as ``gold.l1_1s`` rows."""
    second = F.date_trunc("second", F.col("event_ts"))
    w = Window.partitionBy("exchange", "symbol", "second").orderBy(*_quote_order())
    return (
        quotes.withColumn("second", second)
        .withColumn("quote_date", F.to_date(second))
        .withColumn("_n", F.row_number().over(w))
        .where("_n = 1")
        .select(*GOLD_L1_1S.columns)
    )


# --- MERGE conditions -----------------------------------------------------------------------


def changed_sql(spec: TableSpec) -> str:
    """SQL over ``s``/``t``: some value column differs (NULL-safe); bookkeeping columns ignored."""
    values = [c for c in spec.columns if c not in spec.key and c not in _BOOKKEEPING]
    return "NOT (" + " AND ".join(f"s.`{c}` <=> t.`{c}`" for c in values) + ")"


#: The source quote is newer than the stored one, or is the same quote with other values (re-priced).
QUOTE_WINS = (
    "(s.event_ts > t.event_ts"
    " OR (s.event_ts = t.event_ts AND coalesce(s.sequence, -1) > coalesce(t.sequence, -1))"
    " OR (s.event_ts = t.event_ts AND s.sequence <=> t.sequence AND {changed}))"
)


def _in_sql(column: str, values: Iterable[object]) -> str:
    listed = ", ".join(_literal(v) for v in sorted(set(values)))  # type: ignore[type-var]
    return f"{column} IN ({listed})"


def _literal(value: object) -> str:
    if isinstance(value, datetime):
        return f"TIMESTAMP'{value.astimezone(UTC):%Y-%m-%d %H:%M:%S.%f}+00:00'"
    if isinstance(value, date):
        return f"DATE'{value.isoformat()}'"
    text = str(value).replace("\\", "\\\\").replace("'", "\\'")
    return f"'{text}'"


def _minute_scope(ranges: Sequence[Range], column: str, alias: str = "t") -> str:
    c = f"{alias}.{column}" if alias else column
    spans = " OR ".join(f"({c} >= {_literal(_ts(a))} AND {c} < {_literal(_ts(b))})" for a, b in ranges)
    return f"({spans})"


def _ts(epoch_s: int) -> datetime:
    return datetime.fromtimestamp(epoch_s, tz=UTC)


def _epoch(t: datetime) -> int:
    return int((t if t.tzinfo else t.replace(tzinfo=UTC)).timestamp())


def _days(ranges: Sequence[Range]) -> list[date]:
    return sorted(
        {_ts(s).date() for a, b in ranges for s in range(a, b, 86400)}
        | {_ts(b - 1).date() for _, b in ranges}
    )


# --- the upserts ----------------------------------------------------------------------------


@dataclass(frozen=True)
class GoldUpdate:
    """What one :func:`update_gold` call recomputed, and how long it took."""

    bars: int
    composites: int
    days: int
    seconds: float


def repriced_minutes(due: Iterable[int], *, carry_minutes: int) -> list[int]:
    """The minutes a re-pricing of ``due`` (the minutes whose rates were finished) can have changed.

    A rate of minute ``m`` prices the rows of ``[m, m + carry]`` (``Repricer`` re-prices exactly
    those), so every bar of those minutes is recomputed.
    """
    return sorted({m + 60 * k for m in due for k in range(carry_minutes + 1)})


def update_gold(
    spark: SparkSession,
    lake: Lake,
    *,
    trades: DataFrame | None = None,
    minutes: Iterable[int] = (),
    repriced: Iterable[int] = (),
    carry_minutes: int = 5,
) -> GoldUpdate:
    """Recompute and MERGE the bars, composite bars and daily volumes a micro-batch touched.

    - ``trades``: rows with ``exchange``, ``symbol``, ``event_ts`` (the silver.trades rows a batch
      wrote, or any frame of touched trades): their (exchange, symbol, minute) bars are recomputed.
    - ``minutes``: minute starts (epoch seconds) whose every bar is recomputed (the live pipeline
      passes the minutes its silver write returned).
    - ``repriced``: minutes whose USDT rates were finished by a re-pricing (``Repricer.due()`` before
      ``run_due``): the bars of ``[m, m + carry_minutes]`` are recomputed.

    Reads only the touched minutes of ``silver.trades`` (date partitions, ``event_ts`` statistics)
    and of ``gold.ohlcv_1m``; MERGEs rewrite only rows whose values changed. Safe to call again
    with the same arguments (nothing changes). One writer per gold table.
    """
    started = time.perf_counter()
    whole = set(minutes) | set(repriced_minutes(repriced, carry_minutes=carry_minutes))
    keys: set[tuple[str, str, int]] = set()
    if trades is not None:
        rows = (
            trades.select("exchange", "symbol", F.unix_timestamp(minute_of("event_ts")).alias("m"))
            .distinct()
            .collect()
        )
        keys = {(r["exchange"], r["symbol"], int(r["m"])) for r in rows if int(r["m"]) not in whole}
    touched = sorted(whole | {m for _, _, m in keys})
    if not touched:
        return GoldUpdate(0, 0, 0, time.perf_counter() - started)
    ranges = minute_ranges(touched)
    silver = read_table(spark, lake, SILVER_TRADES.name).where(within(ranges, SILVER_TRADES))
    wanted = F.unix_timestamp(minute_of("event_ts")).isin(*sorted(whole)) if whole else F.lit(False)
    if keys:
        key = F.concat_ws("|", "exchange", "symbol", F.unix_timestamp(minute_of("event_ts")).cast("string"))
        wanted = wanted | key.isin(*sorted(f"{e}|{s}|{m}" for e, s, m in keys))
    # One action: the touched bars, aggregated (a few hundred rows), finished on the driver.
    found = ohlcv_1m(silver.where(wanted)).collect()
    if not found:
        return GoldUpdate(0, 0, 0, time.perf_counter() - started)
    merge_rows(
        _finished(spark, found, name=GOLD_OHLCV_1M.name),
        lake=lake,
        name=GOLD_OHLCV_1M.name,
        update_condition=changed_sql(GOLD_OHLCV_1M),
        target_scope=f"{_in_sql('t.bar_date', _days(ranges))} AND {_minute_scope(ranges, 'minute')}",
    )
    base_minutes = {(r["base"], _epoch(r["minute"])) for r in found}
    day_symbols = {(r["bar_date"], r["symbol"]) for r in found}
    _update_composite(spark, lake, base_minutes)
    _update_daily(spark, lake, day_symbols)
    return GoldUpdate(len(found), len(base_minutes), len(day_symbols), time.perf_counter() - started)


def _update_composite(spark: SparkSession, lake: Lake, base_minutes: set[tuple[str, int]]) -> None:
    ranges = minute_ranges(sorted({m for _, m in base_minutes}))
    days = _days(ranges)
    key = F.concat_ws("|", "base", F.unix_timestamp("minute").cast("string"))
    bars = (
        read_table(spark, lake, GOLD_OHLCV_1M.name)
        .where(F.col("bar_date").isin(*days))
        .where(F.expr(_minute_scope(ranges, "minute", alias="")))
        .where(key.isin(*sorted(f"{b}|{m}" for b, m in base_minutes)))
    )
    merge_rows(
        _finished(spark, composite_1m(bars).collect(), name=GOLD_OHLCV_1M_COMPOSITE.name),
        lake=lake,
        name=GOLD_OHLCV_1M_COMPOSITE.name,
        update_condition=changed_sql(GOLD_OHLCV_1M_COMPOSITE),
        target_scope=f"{_in_sql('t.bar_date', days)} AND {_minute_scope(ranges, 'minute')}",
    )


def _update_daily(spark: SparkSession, lake: Lake, day_symbols: set[tuple[date, str]]) -> None:
    days = sorted({d for d, _ in day_symbols})
    key = F.concat_ws("|", F.col("bar_date").cast("string"), "symbol")
    bars = (
        read_table(spark, lake, GOLD_OHLCV_1M.name)
        .where(F.col("bar_date").isin(*days))
        .where(key.isin(*sorted(f"{d.isoformat()}|{s}" for d, s in day_symbols)))
    )
    merge_rows(
        _finished(spark, exchange_volume_daily(bars).collect(), name=GOLD_EXCHANGE_VOLUME_DAILY.name),
        lake=lake,
        name=GOLD_EXCHANGE_VOLUME_DAILY.name,
        update_condition=changed_sql(GOLD_EXCHANGE_VOLUME_DAILY),
        target_scope=_in_sql("t.trade_date", days),
    )


def update_l1(
    spark: SparkSession,
    lake: Lake,
    *,
    quotes: DataFrame | None = None,
    minutes: Iterable[int] = (),
) -> int:
    """MERGE quotes into ``gold.l1_latest`` and ``gold.l1_1s`` (newer wins; a re-priced quote wins).

    - ``quotes``: silver.l1_quotes-shaped rows (the rows a batch wrote);
    - ``minutes``: minute starts (epoch seconds) whose stored ``silver.l1_quotes`` are passed again,
      e.g. after they were re-priced (their USDT columns then replace the stored ones).

    Order-independent and idempotent: the result is the newest quote per key of everything ever
    passed. Returns the number of quotes considered.
    """
    parts: list[DataFrame] = []
    if quotes is not None:
        parts.append(quotes.select(*SILVER_L1_QUOTES.columns))
    whole = sorted(set(minutes))
    if whole:
        stored = read_table(spark, lake, SILVER_L1_QUOTES.name)
        parts.append(stored.where(within(minute_ranges(whole), SILVER_L1_QUOTES)))
    if not parts:
        return 0
    rows = parts[0]
    for part in parts[1:]:
        rows = rows.unionByName(part)
    rows = rows.persist()
    try:
        # One small action: the partitions and time range the MERGE into l1_1s can touch.
        bounds = (
            rows.groupBy("exchange", F.to_date(F.date_trunc("second", "event_ts")).alias("d"))
            .agg(F.count(F.lit(1)).alias("n"), F.min("event_ts").alias("lo"), F.max("event_ts").alias("hi"))
            .collect()
        )
        if not bounds:
            return 0
        merge_rows(
            latest_quotes(rows),
            lake=lake,
            name=GOLD_L1_LATEST.name,
            update_condition=QUOTE_WINS.format(changed=changed_sql(GOLD_L1_LATEST)),
        )
        lo = min(_epoch(b["lo"]) for b in bounds)
        hi = max(_epoch(b["hi"]) for b in bounds) + 1
        scope = (
            f"{_in_sql('t.exchange', {b['exchange'] for b in bounds})}"
            f" AND {_in_sql('t.quote_date', {b['d'] for b in bounds})}"
            f" AND t.second >= {_literal(_ts(lo))} AND t.second < {_literal(_ts(hi))}"
        )
        merge_rows(
            quotes_1s(rows),
            lake=lake,
            name=GOLD_L1_1S.name,
            update_condition=QUOTE_WINS.format(changed=changed_sql(GOLD_L1_1S)),
            target_scope=scope,
        )
        return sum(int(b["n"]) for b in bounds)
    finally:
        rows.unpersist()


# --- what the standalone job learns from silver's Delta log ---------------------------------

#: Operations that rewrite stored silver rows in place (re-pricing is an update-only MERGE).
REWRITES = ("MERGE", "UPDATE", "DELETE", "RESTORE")

_LOG_SCHEMA = StructType(
    [StructField("add", StructType([StructField("path", StringType()), StructField("stats", StringType())]))]
)
_STATS_SCHEMA = "struct<minValues: struct<event_ts: string>, maxValues: struct<event_ts: string>>"


class RewriteLog:
    """The event-time ranges of a silver table's rows rewritten in place since it last looked.

    A plain Delta stream (``skipChangeCommits``) sees appends only; the re-pricing MERGEs of the
    silver jobs rewrite stored rows. Each rewriting commit adds files whose ``event_ts`` statistics
    (min, max) bound the rows it rewrote (a superset: a MERGE rewrites whole files), read from the
    commit's JSON in ``_delta_log``. The first look covers the commits of the ``catch_up_minutes``
    before it (what a restart may have missed); later ones every commit since the last.
    """

    def __init__(self, lake: Lake, name: str, *, catch_up_minutes: int = 15) -> None:
        self._lake = lake
        self._name = name
        self._catch_up = catch_up_minutes
        self._version: int | None = None

    def ranges(self, spark: SparkSession) -> list[Range]:
        path = self._lake.path(self._name)
        table = DeltaTable.forPath(spark, path)
        if self._version is None:
            since = time.time() - 60 * self._catch_up
            history = table.history(200).where(F.col("timestamp") >= F.lit(_ts(int(since))))
        else:
            history = table.history(200).where(F.col("version") > self._version)
        commits = history.select("version", "operation").collect()
        if not commits:
            if self._version is None:
                newest = table.history(1).select("version").collect()
                self._version = int(newest[0][0]) if newest else -1
            return []
        self._version = max([self._version or -1, *(int(c["version"]) for c in commits)])
        rewrites = sorted(int(c["version"]) for c in commits if c["operation"] in REWRITES)
        if not rewrites:
            return []
        files = [f"{path}/_delta_log/{v:020d}.json" for v in rewrites]
        stats = (
            spark.read.schema(_LOG_SCHEMA)
            .json(files)
            .where(F.col("add.stats").isNotNull())
            .select(F.from_json("add.stats", _STATS_SCHEMA).alias("s"))
            .select(
                F.unix_timestamp(F.col("s.minValues.event_ts").cast("timestamp")).alias("lo"),
                F.unix_timestamp(F.col("s.maxValues.event_ts").cast("timestamp")).alias("hi"),
            )
            .where("lo IS NOT NULL AND hi IS NOT NULL")
            .collect()
        )
        # Whole minutes: [floor(lo), floor(hi) + 1 minute).
        return union_ranges([(r["lo"] - r["lo"] % 60, r["hi"] - r["hi"] % 60 + 60) for r in stats])


def range_minutes(ranges: Iterable[Range]) -> list[int]:
    """The minute starts (epoch seconds) of whole-minute ranges."""
    return sorted({m for a, b in ranges for m in range(a - a % 60, b, 60)})


# --- the standalone streaming job -----------------------------------------------------------


@dataclass(frozen=True)
class GoldSettings:
    """The gold job (YAML section ``gold:``, env ``CRYPTOLAKE_GOLD_<KEY>``)."""

    trigger: str = "availableNow"
    max_files_per_trigger: int = 200
    rate_carry_minutes: int = 5
    catch_up_minutes: int = 15
    streams: tuple[str, ...] = ("bars", "l1")


for _name, _help in {
    "catch_up_minutes": "on start, silver rows re-priced in the commits of this many minutes before are "
    "recomputed in gold (what a restart may have missed)",
    "streams": "which gold streams to run: bars (silver.trades -> ohlcv_1m, composite, daily volumes) "
    "and/or l1 (silver.l1_quotes -> l1_latest, l1_1s), comma-separated",
}.items():
    SETTING_HELP.setdefault(_name, _help)


def silver_stream(spark: SparkSession, lake: Lake, name: str, *, settings: GoldSettings) -> DataFrame:
    """A silver table's appends as a stream (its in-place re-pricing commits skipped: see RewriteLog)."""
    return (
        spark.readStream.format("delta")
        .option("skipChangeCommits", "true")
        .option("maxFilesPerTrigger", settings.max_files_per_trigger)
        .load(lake.path(name))
    )


@dataclass
class GoldJob:
    """The gold streams of one process and their rewrite logs."""

    spark: SparkSession
    lake: Lake
    settings: GoldSettings

    def __post_init__(self) -> None:
        catch_up = self.settings.catch_up_minutes
        self.trade_log = RewriteLog(self.lake, SILVER_TRADES.name, catch_up_minutes=catch_up)
        self.quote_log = RewriteLog(self.lake, SILVER_L1_QUOTES.name, catch_up_minutes=catch_up)

    def bars_batch(self, batch: DataFrame, batch_id: int) -> None:
        spark = batch.sparkSession
        rewritten = range_minutes(self.trade_log.ranges(spark))
        result = update_gold(
            spark, self.lake, trades=batch, minutes=rewritten, carry_minutes=self.settings.rate_carry_minutes
        )
        logger.info(
            "gold bars batch %d: %d bars, %d composite, %d daily rows in %.1f s",
            batch_id,
            result.bars,
            result.composites,
            result.days,
            result.seconds,
        )

    def l1_batch(self, batch: DataFrame, batch_id: int) -> None:
        spark = batch.sparkSession
        rewritten = range_minutes(self.quote_log.ranges(spark))
        started = time.perf_counter()
        n = update_l1(spark, self.lake, quotes=batch, minutes=rewritten)
        logger.info("gold l1 batch %d: %d quotes in %.1f s", batch_id, n, time.perf_counter() - started)

    def finish(self) -> None:
        """After the streams stop: apply the re-pricing commits that came after their last batch."""
        update_gold(self.spark, self.lake, minutes=range_minutes(self.trade_log.ranges(self.spark)))
        update_l1(self.spark, self.lake, minutes=range_minutes(self.quote_log.ranges(self.spark)))

    def start(self) -> list[StreamingQuery]:
        ensure_tables(self.spark, self.lake, (SILVER_TRADES.name, SILVER_L1_QUOTES.name, *GOLD_TABLES))
        queries = []
        if "bars" in self.settings.streams:
            stream = silver_stream(self.spark, self.lake, SILVER_TRADES.name, settings=self.settings)
            queries.append(
                start(stream, self.bars_batch, name=BARS_QUERY, lake=self.lake, trigger=self.settings.trigger)
            )
        if "l1" in self.settings.streams:
            stream = silver_stream(self.spark, self.lake, SILVER_L1_QUOTES.name, settings=self.settings)
            queries.append(
                start(stream, self.l1_batch, name=L1_QUERY, lake=self.lake, trigger=self.settings.trigger)
            )
        return queries


def run(spark: SparkSession, *, lake: Lake, settings: GoldSettings, timeout_s: float | None = None) -> None:
    """Run the gold streams until they stop (``availableNow``: once caught up); raises a failure."""
    job = GoldJob(spark, lake, settings)
    queries = job.start()
    try:
        for query in queries:
            query.awaitTermination(None if timeout_s is None else max(1, round(timeout_s)))
    finally:
        for query in queries:
            if query.isActive:
                query.stop()
    for query in queries:
        if query.exception() is not None:
            raise RuntimeError(f"query {query.name} failed: {query.exception()}")
    job.finish()


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    parser = build_parser(
        prog="spark_jobs.gold", description=__doc__ or "", section="gold", settings_cls=GoldSettings
    )
    args: argparse.Namespace = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    try:
        ctx = resolve(args, section="gold", settings_cls=GoldSettings)
        parse_trigger(ctx.settings.trigger)
        unknown = set(ctx.settings.streams) - {"bars", "l1"}
        if unknown:
            raise ConfigError(f"setting gold.streams: unknown {sorted(unknown)}; use bars and/or l1")
        spark = build_spark(ctx.spark)
    except ConfigError as exc:
        print(f"config error: {exc}", file=sys.stderr)
        return 2
    signal.signal(signal.SIGTERM, _interrupt)
    try:
        run(spark, lake=ctx.lake, settings=ctx.settings)
    except KeyboardInterrupt:
        print("stopped", file=sys.stderr)
        return 0
    except RuntimeError as exc:
        logger.error("%s", exc)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
