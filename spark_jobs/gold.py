"""gold: ``silver.trades`` -> bars and volumes; ``silver.l1_quotes`` -> the L1 book, per second.

Tables (see ``docs/gold.md``): ``gold.ohlcv_1m`` (per exchange, symbol, minute),
``gold.ohlcv_1m_composite`` (per base asset and minute, every exchange in USDT),
``gold.exchange_volume_daily`` (per exchange, day, symbol), ``gold.l1_latest`` and ``gold.l1_1s``.

**Recompute the touched keys, write what changed.** :func:`update_gold` (or a long-lived
:class:`GoldWriter`) is told which bars a micro-batch touched: the (exchange, symbol, minute) of the
trades it wrote, and/or whole minutes (what the live pipeline knows: the minutes its silver write
returned, and the minutes a re-pricing reached). It reads the trades of those bars back from
``silver.trades`` (date partitions and ``event_ts`` statistics bound the read) and aggregates them
in one Spark job; the bars whose values changed, the composite bars of their (base, minute) and
the daily volumes of their (day, symbol) are then computed on the driver from the bars and daily
sums the writer holds, and MERGEd (three tables in parallel). Every value is a function of silver's
rows, so a replayed batch writes nothing, a late trade fixes its bar and a re-priced trade fixes
the USDT columns as soon as its minute is passed in. No ``txnAppId`` is needed (and none is set:
it is a session-wide setting that would leak into the live pipeline's concurrent writers).

**L1.** The newest quote per key is an order-independent maximum over (``event_ts``, ``sequence``),
so :func:`update_l1` MERGEs a batch's quotes with "newer wins" (and "same quote, re-priced, wins")
without reading silver back.

**Exact decimals.** OHLC are exchange prices; ``quote_volume`` sums ``price x size`` rounded half-up
to 15 digits per trade (like silver's ``notional_usdt``); ``volume_usdt`` sums ``notional_usdt``;
``vwap`` = ``quote_volume / volume`` and the other ratios are rounded half-up to 18 digits in Python
decimals on the driver (:func:`bar_ratios`): Spark types a ``DECIMAL(38,18)`` quotient
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
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from decimal import ROUND_HALF_UP, Context, Decimal
from typing import Any

from delta.tables import DeltaTable
from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql.streaming import StreamingQuery
from pyspark.sql.types import StringType, StructField, StructType

from lake.config import ConfigError
from lake.delta_io import append, dedupe_first, ensure_tables, merge
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
)
from spark_jobs.columns import minute_of, mul
from spark_jobs.runtime import SETTING_HELP, build_parser, parse_trigger, read_table, resolve, start

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


Values = dict[str, Any]


def bar_ratios(bar: Values) -> Values:
    """A bar with ``vwap`` and ``vwap_usdt`` filled: ``quote_volume / volume``, ``volume_usdt / volume``.

    Ratios are rounded half-up to 18 fraction digits in Python decimals on the driver (``NULL`` when
    an operand is ``NULL`` or the divisor 0). Spark types the quotient of two ``DECIMAL(38,18)``
    ``DECIMAL(38,6)``, and no cast of the operands keeps 18 exact digits at every magnitude; the
    rows are aggregates, a few hundred per micro-batch, so a Python UDF (and a Python worker on
    every executor) is not worth it.
    """
    bar["vwap"] = _divide(bar["quote_volume"], bar["volume"])
    bar["vwap_usdt"] = _divide(bar["volume_usdt"], bar["volume"])
    return bar


def _frame(spark: SparkSession, rows: Iterable[Values], spec: TableSpec) -> DataFrame:
    return spark.createDataFrame([tuple(r[c] for c in spec.columns) for r in rows], spec.schema)


def quote_notional(price: Column, size: Column) -> Column:
    """``price x size`` in the quote asset, half-up at 15 digits (price < 1e12, size < 1e10)."""
    return mul(price, size, a_int=12, b_int=10)


def _trade_order() -> Column:
    """Trade time order within a bar: event time, then trade id (numeric ids: shorter first)."""
    return F.struct(F.col("event_ts"), F.length("trade_id"), F.col("trade_id"))


# --- pure transforms ------------------------------------------------------------------------


def ohlcv_1m(trades: DataFrame) -> DataFrame:
    """Silver trades -> one bar per (exchange, symbol, minute) with every ``gold.ohlcv_1m`` column.

    ``vwap``/``vwap_usdt`` are left ``NULL`` for :func:`bar_ratios`. Open/close are the
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


def composite_1m(base: str, minute: datetime, bars: Iterable[Values]) -> Values | None:
    """The USDT bar of ``base`` in ``minute`` from its ``gold.ohlcv_1m`` bars on every exchange.

    Only priced bars count (``None`` if there is none). Open is the open of the bar with the
    earliest first trade (ties: exchange, then symbol, in name order), close the close of the bar
    with the latest last trade (ties: the last exchange, then symbol, in name order);
    ``vwap_usdt`` = USDT volume / base volume (18 digits, half-up).
    """
    priced = [b for b in bars if b["volume_usdt"] is not None]
    if not priced:
        return None
    first = min(priced, key=lambda b: (b["first_trade_ts"], b["exchange"], b["symbol"]))
    last = max(priced, key=lambda b: (b["last_trade_ts"], b["exchange"], b["symbol"]))
    volume = sum((b["volume"] for b in priced), Decimal(0))
    volume_usdt = sum((b["volume_usdt"] for b in priced), Decimal(0))
    return {
        "base": base,
        "minute": minute,
        "open_usdt": first["open_usdt"],
        "high_usdt": max(b["high_usdt"] for b in priced),
        "low_usdt": min(b["low_usdt"] for b in priced),
        "close_usdt": last["close_usdt"],
        "vwap_usdt": _divide(volume_usdt, volume),
        "volume": volume,
        "volume_usdt": volume_usdt,
        "trade_count": sum(b["trade_count"] for b in priced),
        "first_trade_ts": first["first_trade_ts"],
        "last_trade_ts": last["last_trade_ts"],
        "exchanges": ",".join(sorted({b["exchange"] for b in priced})),
        "symbols": ",".join(sorted({b["symbol"] for b in priced})),
        "bar_date": minute.date(),
    }


def daily_sums(bars: DataFrame) -> DataFrame:
    """``gold.ohlcv_1m`` bars -> sums per (exchange, day, symbol): what :class:`DaySums` holds."""
    return bars.groupBy("exchange", F.col("bar_date").alias("trade_date"), "symbol", "base", "quote").agg(
        F.sum("volume").cast(PRICE).alias("volume"),
        F.sum("quote_volume").cast(PRICE).alias("volume_quote"),
        F.sum("volume_usdt").cast(PRICE).alias("volume_usdt"),
        F.sum("trade_count").alias("trade_count"),
        F.sum(F.when(F.col("volume_usdt").isNull(), F.col("trade_count")).otherwise(0)).alias(
            "unpriced_trade_count"
        ),
        F.count("volume_usdt").alias("priced_bars"),
    )


_DAY_SUMS = ("volume", "volume_quote", "volume_usdt", "trade_count", "unpriced_trade_count", "priced_bars")


def add_bar(sums: Values, bar: Values, sign: int) -> None:
    """Add (``sign`` 1) or take away (-1) one bar's contribution to its day's sums, exactly."""
    sums["volume"] += sign * bar["volume"]
    sums["volume_quote"] += sign * bar["quote_volume"]
    sums["trade_count"] += sign * bar["trade_count"]
    if bar["volume_usdt"] is None:
        sums["unpriced_trade_count"] += sign * bar["trade_count"]
    else:
        sums["volume_usdt"] = (sums["volume_usdt"] or Decimal(0)) + sign * bar["volume_usdt"]
        sums["priced_bars"] += sign
        if sums["priced_bars"] == 0:
            sums["volume_usdt"] = None


def daily_rows(day: date, symbol: str, venues: Iterable[Values]) -> list[Values]:
    """``gold.exchange_volume_daily`` rows of one (day, symbol): the sums and each venue's share.

    ``venue_share`` = the venue's ``volume_usdt`` / the sum over every venue with one (18 digits).
    """
    venues = list(venues)
    total = sum((v["volume_usdt"] for v in venues if v["volume_usdt"] is not None), Decimal(0))
    return [
        {
            **{k: v[k] for k in ("exchange", "symbol", "base", "quote", *_DAY_SUMS[:5])},
            "trade_date": day,
            "venue_share": None if v["volume_usdt"] is None else _divide(v["volume_usdt"], total),
        }
        for v in venues
    ]


def _quote_order() -> list[Column]:
    """Newest first: event time, then the exchange's sequence (silver's key makes it unique)."""
    return [F.col("event_ts").desc(), F.coalesce(F.col("sequence"), F.lit(-1)).desc()]


def latest_quotes(quotes: DataFrame) -> DataFrame:
    """Silver quotes -> the newest per (exchange, symbol), as ``gold.l1_latest`` rows."""
    return dedupe_first(quotes, ("exchange", "symbol"), _quote_order()).select(*GOLD_L1_LATEST.columns)


def quotes_1s(quotes: DataFrame) -> DataFrame:
    """Silver quotes -> the last quote of each (exchange, symbol, second), as ``gold.l1_1s`` rows."""
    second = F.date_trunc("second", F.col("event_ts"))
    seconds = quotes.withColumn("second", second).withColumn("quote_date", F.to_date(second))
    return dedupe_first(seconds, ("exchange", "symbol", "second"), _quote_order()).select(*GOLD_L1_1S.columns)


# --- event-time ranges (the same rules as spark_jobs.silver's, kept here so gold imports no
# writer module) -----------------------------------------------------------------------------

#: ``[start, end)`` in epoch seconds.
Range = tuple[int, int]


def minute_ranges(minutes: Iterable[int]) -> list[Range]:
    """``[m, m + 60)`` for each minute start (epoch seconds), merged and sorted."""
    return union_ranges([(m, m + 60) for m in minutes])


def union_ranges(ranges: Iterable[Range]) -> list[Range]:
    out: list[Range] = []
    for a, b in sorted(ranges):
        if out and a <= out[-1][1]:
            out[-1] = (out[-1][0], max(out[-1][1], b))
        else:
            out.append((a, b))
    return out


def within(ranges: Sequence[Range], spec: TableSpec) -> Column:
    """The row's ``event_ts`` is in one of ``ranges`` (and in their days' ``trade_date`` partitions)."""
    spans = _minute_scope(ranges, "event_ts", alias="")
    if "trade_date" in spec.partition_by:
        return F.expr(f"{_in_sql('trade_date', _days(ranges))} AND {spans}")
    return F.expr(spans)


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
    """What one :func:`update_gold` call recomputed, and how long it took (seconds, per step too)."""

    bars: int
    composites: int
    days: int
    seconds: float
    steps: dict[str, float] = field(default_factory=dict)


class _Steps:
    def __init__(self) -> None:
        self.started = self._last = time.perf_counter()
        self.seconds: dict[str, float] = {}

    def done(self, step: str) -> None:
        now = time.perf_counter()
        self.seconds[step] = round(self.seconds.get(step, 0.0) + now - self._last, 3)
        self._last = now

    def total(self) -> float:
        return time.perf_counter() - self.started


def repriced_minutes(due: Iterable[int], *, carry_minutes: int) -> list[int]:
    """The minutes a re-pricing of ``due`` (the minutes whose rates were finished) can have changed.

    A rate of minute ``m`` prices the rows of ``[m, m + carry]`` (``Repricer`` re-prices exactly
    those), so every bar of those minutes is recomputed.
    """
    return sorted({m + 60 * k for m in due for k in range(carry_minutes + 1)})


class GoldWriter:
    """The only writer of the gold bar tables, with what it wrote recently held on the driver.

    Holds the stored bars of the last ``horizon_minutes`` minutes (by minute start) and the daily
    sums of the days it touched, so a call reads silver once (the touched bars' trades) and
    nothing from gold in the steady state: the changed bars are found by comparing with the held
    ones, and the composite bars and daily volumes they reach are computed from held values.
    A minute it does not hold (a late trade, the first call) is loaded from ``gold.ohlcv_1m``; a
    day's sums are loaded once per process by summing that day's stored bars, so a crash between
    the writes of two tables is repaired by the next process. A failed write drops everything
    held (the next call reloads from the tables). One writer per table: another process writing
    the same gold tables would make the held values wrong.
    """

    def __init__(self, lake: Lake, *, horizon_minutes: int = 30) -> None:
        self._lake = lake
        self._horizon = horizon_minutes * 60
        self._bars: dict[int, dict[tuple[str, str], Values]] = {}
        self._days: dict[date, dict[tuple[str, str], Values]] = {}
        self._pool = ThreadPoolExecutor(max_workers=3, thread_name_prefix="gold-writer")

    def update(
        self,
        spark: SparkSession,
        *,
        trades: DataFrame | None = None,
        minutes: Iterable[int] = (),
        repriced: Iterable[int] = (),
        carry_minutes: int = 5,
    ) -> GoldUpdate:
        """See :func:`update_gold`."""
        steps = _Steps()
        whole = set(minutes) | set(repriced_minutes(repriced, carry_minutes=carry_minutes))
        keys: set[tuple[str, str, int]] = set()
        if trades is not None:
            rows = (
                trades.select("exchange", "symbol", F.unix_timestamp(minute_of("event_ts")).alias("m"))
                .distinct()
                .collect()
            )
            keys = {(r["exchange"], r["symbol"], int(r["m"])) for r in rows if int(r["m"]) not in whole}
            steps.done("touched keys")
        touched = sorted(whole | {m for _, _, m in keys})
        if not touched:
            return GoldUpdate(0, 0, 0, steps.total(), steps.seconds)
        ranges = minute_ranges(touched)
        silver = read_table(spark, self._lake, SILVER_TRADES.name).where(within(ranges, SILVER_TRADES))
        wanted = F.unix_timestamp(minute_of("event_ts")).isin(*sorted(whole)) if whole else F.lit(False)
        if keys:
            key = F.concat_ws(
                "|", "exchange", "symbol", F.unix_timestamp(minute_of("event_ts")).cast("string")
            )
            wanted = wanted | key.isin(*sorted(f"{e}|{s}|{m}" for e, s, m in keys))
        # One Spark job: the touched bars, aggregated (a few hundred rows).
        fresh = [bar_ratios(r.asDict()) for r in ohlcv_1m(silver.where(wanted)).collect()]
        steps.done("bars: read silver, aggregate")
        try:
            return self._apply(spark, fresh, steps)
        except Exception:
            self._bars.clear()
            self._days.clear()
            raise

    def _apply(self, spark: SparkSession, fresh: list[Values], steps: _Steps) -> GoldUpdate:
        self._load_minutes(spark, sorted({_epoch(b["minute"]) for b in fresh}))
        changed = [
            (b, self._bars[_epoch(b["minute"])].get((b["exchange"], b["symbol"])))
            for b in fresh
            if not _same(b, self._bars[_epoch(b["minute"])].get((b["exchange"], b["symbol"])), GOLD_OHLCV_1M)
        ]
        steps.done("bars: diff")
        if not changed:
            return GoldUpdate(0, 0, 0, steps.total(), steps.seconds)
        self._load_days(spark, sorted({b["bar_date"] for b, _ in changed}))
        steps.done("daily: load sums")
        now = datetime.now()
        for bar, old in changed:
            bar["updated_ts"] = now
            self._bars[_epoch(bar["minute"])][(bar["exchange"], bar["symbol"])] = bar
            sums = self._days[bar["bar_date"]].setdefault((bar["exchange"], bar["symbol"]), _no_sums(bar))
            if old is not None:
                add_bar(sums, old, -1)
            add_bar(sums, bar, 1)
        composites = []
        minute_of_epoch = {_epoch(b["minute"]): b["minute"] for b, _ in changed}
        for base, m in sorted({(b["base"], _epoch(b["minute"])) for b, _ in changed}):
            row = composite_1m(
                base, minute_of_epoch[m], (b for b in self._bars[m].values() if b["base"] == base)
            )
            if row is not None:
                composites.append(row | {"updated_ts": now})
        daily = []
        for day, symbol in sorted({(b["bar_date"], b["symbol"]) for b, _ in changed}):
            venues = [v for (_, s), v in self._days[day].items() if s == symbol]
            daily += [r | {"updated_ts": now} for r in daily_rows(day, symbol, venues)]
        steps.done("composite, daily: compute")
        bars = [b for b, _ in changed]
        inserts_only = all(old is None for _, old in changed)
        writes = [
            self._pool.submit(self._write_bars, spark, bars, inserts_only=inserts_only),
            self._pool.submit(self._write, spark, composites, GOLD_OHLCV_1M_COMPOSITE, "minute", "bar_date"),
            self._pool.submit(self._write, spark, daily, GOLD_EXCHANGE_VOLUME_DAILY, None, "trade_date"),
        ]
        for write in writes:
            write.result()
        steps.done("write 3 tables (parallel)")
        self._trim()
        return GoldUpdate(len(bars), len(composites), len(daily), steps.total(), steps.seconds)

    def _load_minutes(self, spark: SparkSession, minutes: Sequence[int]) -> None:
        missing = [m for m in minutes if m not in self._bars]
        if not missing:
            return
        ranges = minute_ranges(missing)
        stored = (
            read_table(spark, self._lake, GOLD_OHLCV_1M.name)
            .where(F.col("bar_date").isin(*_days(ranges)))
            .where(F.expr(_minute_scope(ranges, "minute", alias="")))
            .collect()
        )
        for m in missing:
            self._bars[m] = {}
        for r in stored:
            self._bars.setdefault(_epoch(r["minute"]), {})[(r["exchange"], r["symbol"])] = r.asDict()

    def _load_days(self, spark: SparkSession, days: Sequence[date]) -> None:
        missing = [d for d in days if d not in self._days]
        if not missing:
            return
        bars = read_table(spark, self._lake, GOLD_OHLCV_1M.name).where(F.col("bar_date").isin(*missing))
        for d in missing:
            self._days[d] = {}
        for r in daily_sums(bars).collect():
            self._days[r["trade_date"]][(r["exchange"], r["symbol"])] = r.asDict()

    def _write_bars(self, spark: SparkSession, bars: list[Values], *, inserts_only: bool) -> None:
        frame = _frame(spark, bars, GOLD_OHLCV_1M)
        if inserts_only:  # every key is new to the table (it held the whole minute): a blind append
            append(frame, lake=self._lake, name=GOLD_OHLCV_1M.name)
            return
        self._write(spark, bars, GOLD_OHLCV_1M, "minute", "bar_date", frame=frame)

    def _write(
        self,
        spark: SparkSession,
        rows: list[Values],
        spec: TableSpec,
        minute: str | None,
        day: str,
        *,
        frame: DataFrame | None = None,
    ) -> None:
        if not rows:
            return
        scope = _in_sql(f"t.{day}", {r[day] for r in rows})
        if minute is not None:
            scope += " AND " + _minute_scope(minute_ranges({_epoch(r[minute]) for r in rows}), minute)
        merge(
            frame if frame is not None else _frame(spark, rows, spec),
            lake=self._lake,
            name=spec.name,
            mode="upsert",
            update_condition=changed_sql(spec),
            target_scope=scope,
        )

    def _trim(self) -> None:
        if self._bars:
            floor = max(self._bars) - self._horizon
            for m in [m for m in self._bars if m < floor]:
                del self._bars[m]
        if len(self._days) > 2:
            for d in sorted(self._days)[:-2]:
                del self._days[d]


def _no_sums(bar: Values) -> Values:
    """The daily sums of a venue and symbol before its first bar of the day."""
    zeros: Values = {"volume": Decimal(0), "volume_quote": Decimal(0), "volume_usdt": None}
    zeros |= {"trade_count": 0, "unpriced_trade_count": 0, "priced_bars": 0}
    return {k: bar[k] for k in ("exchange", "symbol", "base", "quote")} | zeros


def _same(new: Values, old: Values | None, spec: TableSpec) -> bool:
    if old is None:
        return False
    return all(new[c] == old[c] for c in spec.columns if c not in _BOOKKEEPING)


def update_gold(
    spark: SparkSession,
    lake: Lake,
    *,
    trades: DataFrame | None = None,
    minutes: Iterable[int] = (),
    repriced: Iterable[int] = (),
    carry_minutes: int = 5,
    writer: GoldWriter | None = None,
) -> GoldUpdate:
    """Recompute the bars a micro-batch touched; write those that changed, their composite bars
    and their daily volumes.

    - ``trades``: rows with ``exchange``, ``symbol``, ``event_ts`` (the silver.trades rows a batch
      wrote, or any frame of touched trades): their (exchange, symbol, minute) bars are recomputed.
    - ``minutes``: minute starts (epoch seconds) whose every bar is recomputed (the live pipeline
      passes the minutes its silver write returned).
    - ``repriced``: minutes whose USDT rates were finished by a re-pricing (``Repricer.due()`` before
      ``run_due``): the bars of ``[m, m + carry_minutes]`` are recomputed.
    - ``writer``: the :class:`GoldWriter` kept across calls (a long-running caller should pass one:
      without it every call reloads the touched minutes and days from gold).

    Reads only the touched minutes of ``silver.trades`` (date partitions, ``event_ts`` statistics).
    Only changed rows are written (a replayed batch writes nothing); the three tables are written
    in parallel threads, each with one MERGE bounded to the rows' days and minutes (new bars only:
    a blind append).
    """
    return (writer or GoldWriter(lake)).update(
        spark, trades=trades, minutes=minutes, repriced=repriced, carry_minutes=carry_minutes
    )


_L1_POOL = ThreadPoolExecutor(max_workers=2, thread_name_prefix="gold-l1-writer")


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
        lo = min(_epoch(b["lo"]) for b in bounds)
        hi = max(_epoch(b["hi"]) for b in bounds) + 1
        scope = (
            f"{_in_sql('t.exchange', {b['exchange'] for b in bounds})}"
            f" AND {_in_sql('t.quote_date', {b['d'] for b in bounds})}"
            f" AND t.second >= {_literal(_ts(lo))} AND t.second < {_literal(_ts(hi))}"
        )
        # The two tables in parallel: one's planning and commit overlap the other's jobs.
        writes = [
            _L1_POOL.submit(
                merge,
                latest_quotes(rows),
                lake=lake,
                name=GOLD_L1_LATEST.name,
                mode="upsert",
                update_condition=QUOTE_WINS.format(changed=changed_sql(GOLD_L1_LATEST)),
            ),
            _L1_POOL.submit(
                merge,
                quotes_1s(rows),
                lake=lake,
                name=GOLD_L1_1S.name,
                mode="upsert",
                update_condition=QUOTE_WINS.format(changed=changed_sql(GOLD_L1_1S)),
                target_scope=scope,
            ),
        ]
        for write in writes:
            write.result()
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


@dataclass(frozen=True, kw_only=True)
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
        self.writer = GoldWriter(self.lake)

    def bars_batch(self, batch: DataFrame, batch_id: int) -> None:
        spark = batch.sparkSession
        rewritten = range_minutes(self.trade_log.ranges(spark))
        result = self.writer.update(
            spark, trades=batch, minutes=rewritten, carry_minutes=self.settings.rate_carry_minutes
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
        self.writer.update(self.spark, minutes=range_minutes(self.trade_log.ranges(self.spark)))
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
