"""The micro-batch write shared by the priced silver jobs (trades, tickers, L1 quotes).

For one micro-batch of normalized rows (``_error`` ``NULL`` = good), :func:`write_priced_batch`:

1. appends rejected rows to ``silver.quarantine``;
2. drops in-batch duplicates (first received wins; for trades a websocket row beats its REST
   gap-fill twin);
3. trades only: recomputes ``silver.usdt_rates`` for the minutes the batch touched, from every
   silver trade of those minutes plus the batch (MERGE, latest wins);
4. prices the new rows, re-prices stored rows whose rate is missing, carried or may have changed,
   and MERGEs both in one commit: new keys are inserted, stored rows only get their USDT columns
   updated, so a duplicate never overwrites the first row.

Every write carries ``txnAppId`` = the query name and ``txnVersion`` = the batch id: a batch
replayed after a crash skips the writes that already committed and redoes the rest from the same
inputs, so the tables end up as if the batch had run once.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from pyspark.sql import Column, DataFrame, SparkSession, Window
from pyspark.sql import functions as F
from pyspark.sql.streaming import StreamingQuery

from lake.delta_io import merge_rows, merge_upsert, table_version
from lake.tables import SILVER_MARKETS, SILVER_TRADES, SILVER_USDT_RATES, Lake, TableSpec, table
from spark_jobs.columns import minute_of, to_quarantine
from spark_jobs.runtime import (
    SilverSettings,
    WriterId,
    read_table,
    silver_main,
    start_silver_query,
    write_quarantine,
)
from spark_jobs.symbols import attach_symbols
from spark_jobs.usdt import (
    PRICERS,
    PRICING_COLUMNS,
    attach_rates,
    changed_pricing,
    market_prices,
    usdt_rates,
)

logger = logging.getLogger(__name__)

#: A ``foreachBatch`` function: (micro-batch, batch id) -> None.
BatchWriter = Callable[[DataFrame, int], None]


def dedupe_first(df: DataFrame, key: Sequence[str], order: Sequence[Column]) -> DataFrame:
    """One row per key: the first by ``order``."""
    w = Window.partitionBy(*key).orderBy(*order)
    return df.withColumn("_n", F.row_number().over(w)).where("_n = 1").drop("_n")


@dataclass(frozen=True)
class PricedTable:
    """A priced silver table and how its duplicates are ordered (the first one is kept)."""

    name: str
    #: SQL expressions and ascending flags; the first row in this order is kept.
    first: tuple[tuple[str, bool], ...]
    computes_rates: bool = False

    def order(self) -> tuple[Column, ...]:
        return tuple(F.expr(e).asc() if asc else F.expr(e).desc() for e, asc in self.first)

    @property
    def key(self) -> tuple[str, ...]:
        return table(self.name).key


class MarketsCache:
    """``silver.markets`` held in memory, re-read only when the table has a new version.

    Every micro-batch joins its rows with the markets; reading the table each time costs a Delta
    snapshot and a scan. Checking the version costs one read of the transaction log's tail.
    """

    def __init__(self, lake: Lake) -> None:
        self._lake = lake
        self._version: int | None = None
        self._markets: DataFrame | None = None

    def get(self, spark: SparkSession) -> DataFrame:
        version = table_version(spark, self._lake, SILVER_MARKETS.name)
        if self._markets is None or version != self._version:
            if self._markets is not None:
                self._markets.unpersist()
            self._markets = read_table(spark, self._lake, SILVER_MARKETS.name).persist()
            self._version = version
        return self._markets


@dataclass(frozen=True)
class PricedJob:
    """One priced silver job: its bronze channels, its parser, and the table its rows go to.

    ``parse`` turns bronze rows into the target's columns (all but the USDT ones) plus ``_raw``
    and ``_error``; ``base``/``quote`` come from the ``attach_symbols`` step every job shares.
    """

    query: str
    channels: tuple[str, ...]
    target: PricedTable
    parse: Callable[[DataFrame], DataFrame]
    #: Applied after the symbols are attached (L1: mid and spread need nothing else).
    finish: Callable[[DataFrame], DataFrame] = lambda rows: rows

    def normalize(self, markets: DataFrame) -> Callable[[DataFrame], DataFrame]:
        """Bronze rows -> the target's columns with ``NULL`` USDT columns, plus ``_raw`` and ``_error``."""
        spec = table(self.target.name)
        pricing = PRICING_COLUMNS[spec.name]
        types = {f.name: f.dataType for f in spec.schema.fields}

        def transform(bronze: DataFrame) -> DataFrame:
            rows = self.parse(bronze).transform(attach_symbols(markets)).transform(self.finish)
            return rows.select(
                *[c for c in spec.columns if c not in pricing],
                *[F.lit(None).cast(types[c]).alias(c) for c in pricing],
                "_raw",
                "_error",
            )

        return transform

    def write(
        self,
        bronze: DataFrame,
        batch_id: int,
        *,
        lake: Lake,
        settings: SilverSettings,
        app_id: str,
        markets: DataFrame,
        rate_minutes: Sequence[int] = (),
    ) -> tuple[int, ...]:
        """Normalize bronze rows of this job's channels and write them (see :func:`write_priced_batch`)."""
        rows = bronze.transform(self.normalize(markets))
        return write_priced_batch(
            rows,
            target=self.target,
            lake=lake,
            settings=settings,
            app_id=app_id,
            batch_id=batch_id,
            rate_minutes=rate_minutes,
        )

    def batch_writer(
        self, *, lake: Lake, settings: SilverSettings, app_id: str | WriterId | None = None
    ) -> BatchWriter:
        """The ``foreachBatch`` function: normalize against the current markets, then write."""
        writer_id = app_id or self.query
        markets = MarketsCache(lake)

        def process(batch: DataFrame, batch_id: int) -> None:
            self.write(
                batch,
                batch_id,
                lake=lake,
                settings=settings,
                app_id=str(writer_id),
                markets=markets.get(batch.sparkSession),
            )

        return process

    def build_query(self, spark: SparkSession, settings: SilverSettings, *, lake: Lake) -> StreamingQuery:
        process = self.batch_writer(lake=lake, settings=settings, app_id=WriterId(spark, self.query))
        return start_silver_query(
            spark, settings, lake=lake, channels=self.channels, name=self.query, process=process
        )

    def main(self, argv: list[str] | None, *, description: str) -> int:
        return silver_main(argv, prog=self.query, description=description, build_query=self.build_query)


def write_priced_batch(
    rows: DataFrame,
    *,
    target: PricedTable,
    lake: Lake,
    settings: SilverSettings,
    app_id: str,
    batch_id: int,
    rate_minutes: Sequence[int] = (),
) -> tuple[int, ...]:
    """Quarantine, dedupe, (rates,) price and MERGE one micro-batch of normalized rows.

    Returns the event minutes (epoch seconds) of the batch's good rows: for trades, the minutes
    whose USDT rates this batch may have changed. ``rate_minutes`` are such minutes from a trades
    batch of the same micro-batch: stored rows those rates reach are re-priced too.
    """
    spec = table(target.name)
    started = time.perf_counter()
    rows = rows.withColumn("_minute", minute_of("event_ts")).persist()
    try:
        ok = F.col("_error").isNull()
        # One small action tells everything the plan below needs (which minutes, any rejects).
        summary = rows.groupBy(ok.alias("ok"), F.unix_timestamp("_minute").alias("m")).count().collect()
        minutes = tuple(sorted({r["m"] for r in summary if r["ok"] and r["m"] is not None}))
        if any(not r["ok"] for r in summary):
            bad = (
                rows.where(~ok)
                .drop("_minute")
                .transform(to_quarantine(source_table=target.name, batch_id=batch_id))
            )
            write_quarantine(bad, lake=lake, app_id=app_id, version=batch_id)
        if not minutes and not rate_minutes:
            return ()
        logger.info("%s batch %d: stats in %.1f s", app_id, batch_id, time.perf_counter() - started)
        good = dedupe_first(rows.where(ok), target.key, target.order())
        stored = read_table(rows.sparkSession, lake, target.name)
        carry = settings.rate_carry_minutes
        if target.computes_rates and minutes:
            refresh_rates(good, stored, minutes=minutes, lake=lake, app_id=app_id, batch_id=batch_id)
            logger.info("%s batch %d: rates in %.1f s", app_id, batch_id, time.perf_counter() - started)
            # A minute's rate prices that minute's rows and is carried up to ``carry`` minutes on.
            reprice = minute_ranges(minutes, after=carry)
        else:
            reprice = minute_ranges(minutes, before=settings.reprice_minutes)
        reprice = union_ranges(reprice, minute_ranges(rate_minutes, after=carry))
        lo = min(a for a, _ in reprice)
        hi = max(b for _, b in reprice)
        rates = read_table(rows.sparkSession, lake, SILVER_USDT_RATES.name).where(
            F.col("minute").between(_ts(lo - carry * 60), _ts(hi))
        )
        price = PRICERS[target.name]
        attach = attach_rates(rates, key=target.key, carry_minutes=carry)
        columns = PRICING_COLUMNS[target.name]

        new = good.drop("_minute").transform(attach).transform(price)
        candidates = stored.where(within(reprice, spec))
        changed = changed_pricing(
            candidates, candidates.transform(attach).transform(price), key=target.key, columns=columns
        )
        source = dedupe_first(
            new.select(*spec.columns, F.lit(False).alias("_existing")).unionByName(
                changed.select(*spec.columns, F.lit(True).alias("_existing"))
            ),
            target.key,
            (F.col("_existing").desc(), F.col("recv_ts").asc()),
        )
        # A duplicate has its original's event time, so matches are searched only in the files of
        # the minutes around the batch's (Delta skips the others by their event_ts statistics).
        scope = union_ranges(
            reprice, minute_ranges(minutes, before=DEDUPE_SCOPE_MINUTES, after=DEDUPE_SCOPE_MINUTES)
        )
        merge_rows(
            source,
            lake=lake,
            name=target.name,
            insert_condition="NOT s._existing",
            update_columns=columns,
            update_condition="s._existing",
            target_scope=within_sql(scope, spec, alias="t"),
            app_id=app_id,
            version=batch_id,
        )
        logger.info("%s batch %d: merged in %.1f s", app_id, batch_id, time.perf_counter() - started)
        return minutes
    finally:
        rows.unpersist()


def refresh_rates(
    good: DataFrame, stored: DataFrame, *, minutes: Sequence[int], lake: Lake, app_id: str, batch_id: int
) -> None:
    """Recompute ``silver.usdt_rates`` of the batch's minutes from their stored trades plus the batch.

    Only the minutes' own files are read (event-time ranges); only rates that changed are written.
    """
    session = good.sparkSession
    spans = minute_ranges(minutes)
    cols = ["base", "quote", "exchange", "trade_id", "price", "event_ts", "recv_ts"]
    minute_list = F.array(*[F.lit(_ts(m)) for m in minutes])
    same_minutes = stored.where(within(spans, SILVER_TRADES)).where(
        F.array_contains(minute_list, minute_of("event_ts"))
    )
    # Rates are tiny but their plan is wide (one branch per method and hop): compute once.
    prices = market_prices(same_minutes.select(*cols).unionByName(good.select(*cols))).persist()
    rates_now = usdt_rates(prices).localCheckpoint()
    prices.unpersist()
    old = read_table(session, lake, SILVER_USDT_RATES.name).where(
        F.array_contains(minute_list, F.col("minute"))
    )
    same = [
        F.col(f"n.{c}").eqNullSafe(F.col(f"o.{c}")) for c in ("asset", "minute", "rate_to_usdt", "method")
    ]
    cond = same[0]
    for c in same[1:]:
        cond = cond & c
    changed = rates_now.alias("n").join(old.alias("o"), cond, "left_anti").localCheckpoint()
    if changed.isEmpty():
        return
    merge_upsert(
        changed, lake=lake, name=SILVER_USDT_RATES.name, update=True, app_id=app_id, version=batch_id
    )


# --- event-time ranges: what a batch reads and MERGEs is bounded by the minutes it touched ------

#: The date partition of tables partitioned by event day (``silver.trades``).
DATE_PARTITION = "trade_date"
#: A trade's duplicates (a websocket frame and its REST twin) carry event times this close.
DEDUPE_SCOPE_MINUTES = 1

Range = tuple[int, int]


def minute_ranges(minutes: Sequence[int], *, before: int = 0, after: int = 0) -> list[Range]:
    """``[m - before min, m + 1 + after min)`` for each minute (epoch seconds), merged and sorted."""
    return union_ranges([(m - before * 60, m + 60 + after * 60) for m in minutes])


def union_ranges(*parts: Sequence[Range]) -> list[Range]:
    out: list[Range] = []
    for a, b in sorted(r for part in parts for r in part):
        if out and a <= out[-1][1]:
            out[-1] = (out[-1][0], max(out[-1][1], b))
        else:
            out.append((a, b))
    return out


def _ts(epoch_s: int) -> datetime:
    return datetime.fromtimestamp(epoch_s, tz=UTC)


def _sql_ts(epoch_s: int) -> str:
    return f"TIMESTAMP'{_ts(epoch_s):%Y-%m-%d %H:%M:%S}+00:00'"


def within_sql(ranges: Sequence[Range], spec: TableSpec, *, alias: str = "") -> str:
    """SQL: the row's ``event_ts`` is in one of ``ranges`` (and its date partition, if the table has one)."""
    p = f"{alias}." if alias else ""
    spans = " OR ".join(f"({p}event_ts >= {_sql_ts(a)} AND {p}event_ts < {_sql_ts(b)})" for a, b in ranges)
    if DATE_PARTITION in spec.partition_by:
        days = sorted(
            {_ts(s).date() for a, b in ranges for s in range(a, b, 86400)}
            | {_ts(b - 1).date() for _, b in ranges}
        )
        listed = ", ".join(f"DATE'{d.isoformat()}'" for d in days)
        return f"({p}{DATE_PARTITION} IN ({listed})) AND ({spans})"
    return f"({spans})"


def within(ranges: Sequence[Range], spec: TableSpec) -> Column:
    return F.expr(within_sql(ranges, spec))
