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
from datetime import timedelta

from pyspark.sql import Column, DataFrame, SparkSession, Window
from pyspark.sql import functions as F
from pyspark.sql.streaming import StreamingQuery

from lake.delta_io import merge_rows, merge_upsert
from lake.tables import SILVER_MARKETS, SILVER_USDT_RATES, Lake, table
from spark_jobs.columns import minute_of, to_quarantine
from spark_jobs.runtime import (
    SilverSettings,
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
    needs_repricing,
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


@dataclass(frozen=True)
class PricedJob:
    """One priced silver job: a bronze channel, its parser, and the table its rows go to.

    ``parse`` turns bronze rows into the target's columns (all but the USDT ones) plus ``_raw``
    and ``_error``; ``base``/``quote`` come from the ``attach_symbols`` step every job shares.
    """

    query: str
    channel: str
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

    def batch_writer(self, *, lake: Lake, settings: SilverSettings, app_id: str | None = None) -> BatchWriter:
        """The ``foreachBatch`` function: normalize against the current markets, then write."""
        writer_id = app_id or self.query

        def process(batch: DataFrame, batch_id: int) -> None:
            markets = read_table(batch.sparkSession, lake, SILVER_MARKETS.name)
            rows = batch.transform(self.normalize(markets))
            write_priced_batch(
                rows, target=self.target, lake=lake, settings=settings, app_id=writer_id, batch_id=batch_id
            )

        return process

    def build_query(self, spark: SparkSession, settings: SilverSettings, *, lake: Lake) -> StreamingQuery:
        process = self.batch_writer(lake=lake, settings=settings)
        return start_silver_query(
            spark, settings, lake=lake, channel=self.channel, name=self.query, process=process
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
) -> None:
    """Quarantine, dedupe, (rates,) price and MERGE one micro-batch of normalized rows."""
    if rows.isEmpty():  # availableNow ends with an empty batch; skip its fixed costs
        return
    session = rows.sparkSession
    spec = table(target.name)
    started = time.perf_counter()
    rows = rows.withColumn("_minute", minute_of("event_ts")).persist()
    try:
        ok = F.col("_error").isNull()
        stats = rows.agg(
            F.min(F.when(ok, F.col("_minute"))).alias("lo"),
            F.max(F.when(ok, F.col("_minute"))).alias("hi"),
            F.count(F.when(~ok, F.lit(1))).alias("bad"),
        ).first()
        assert stats is not None
        if stats["bad"]:
            bad = (
                rows.where(~ok)
                .drop("_minute")
                .transform(to_quarantine(source_table=target.name, batch_id=batch_id))
            )
            write_quarantine(bad, lake=lake, app_id=app_id, version=batch_id)
        logger.info("%s batch %d: stats in %.1f s", app_id, batch_id, time.perf_counter() - started)
        if stats["lo"] is None:
            return
        good = dedupe_first(rows.where(ok), target.key, target.order())
        stored = read_table(session, lake, target.name)
        lo, hi = stats["lo"], stats["hi"]

        if target.computes_rates:
            minutes = good.select("_minute").distinct()
            same_minutes = (
                stored.where(minute_of("event_ts").between(F.lit(lo), F.lit(hi)))
                .withColumn("_minute", minute_of("event_ts"))
                .join(F.broadcast(minutes), "_minute", "left_semi")
            )
            cols = ["base", "quote", "exchange", "trade_id", "price", "event_ts", "recv_ts"]
            # Rates are tiny but their plan is wide (one branch per method and hop): compute once.
            prices = market_prices(same_minutes.select(*cols).unionByName(good.select(*cols))).persist()
            rates_now = usdt_rates(prices).localCheckpoint()
            prices.unpersist()
            merge_upsert(
                rates_now,
                lake=lake,
                name=SILVER_USDT_RATES.name,
                update=True,
                app_id=app_id,
                version=batch_id,
            )
            reprice_lo = lo
            logger.info("%s batch %d: rates in %.1f s", app_id, batch_id, time.perf_counter() - started)
        else:
            reprice_lo = lo - timedelta(minutes=settings.reprice_minutes)

        rates = read_table(session, lake, SILVER_USDT_RATES.name)
        price = PRICERS[target.name]
        attach = attach_rates(rates, key=target.key, carry_minutes=settings.rate_carry_minutes)
        columns = PRICING_COLUMNS[target.name]

        new = good.drop("_minute").transform(attach).transform(price)
        candidates = stored.where(needs_repricing(lo_minute=F.lit(reprice_lo), hi_minute=F.lit(hi)))
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
        merge_rows(
            source,
            lake=lake,
            name=target.name,
            insert_condition="NOT s._existing",
            update_columns=columns,
            update_condition="s._existing",
            app_id=app_id,
            version=batch_id,
        )
        logger.info("%s batch %d: merged in %.1f s", app_id, batch_id, time.perf_counter() - started)
    finally:
        rows.unpersist()
