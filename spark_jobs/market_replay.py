"""Replay the rows of newly listed markets: quarantined as ``unknown_market``, inserted once it is known.

A trade (ticker, L1 quote) of a market that an exchange has just listed can arrive before the
discovery snapshot that lists it. Silver rejects it with reason ``unknown_market``
(:func:`~spark_jobs.symbols.attach_symbols`) and it goes to ``silver.quarantine``.
:func:`replay_unknown_markets` inserts those rows once their ``(exchange, native_symbol)`` is in
``silver.markets``:

1. **Find** (one small query): the table's quarantined rows with that reason whose market is now
   known. When there are none, that is all it costs.
2. **Skip what is there**: rows whose key the table already holds (replayed before, or a later
   copy that was written normally) are dropped; a second run stops here and inserts nothing.
3. **Rebuild from bronze**: ``row_json`` keeps timestamps only to the millisecond (``to_json``
   writes ``...HH:mm:ss.SSSZ``), but ``recv_ts`` and some event times (Coinbase, Binance L1) have
   microseconds, and tickers and L1 quotes are keyed by ``event_ts``. So the row is parsed again
   from its envelope in ``bronze.raw_events``, with the job's own normalization
   (:meth:`~spark_jobs.silver.PricedJob.normalize`): the same values a normal write gives. The
   envelope is found by exchange, receive date (a partition) and receive millisecond (file
   statistics); of its items, the quarantined one is the one with the same ``_raw``.
4. **Dedupe, price, insert**: one row per key in the table's order (:func:`dedupe_first`), USDT
   columns from ``silver.usdt_rates`` with the carry rule (:mod:`spark_jobs.dq_replay`'s pricing),
   and an insert-only MERGE on the natural key bounded to the rows' minutes: a key already in the
   table is never overwritten.

Quarantine is left as it is: it is the log of what was rejected, when and why. A quarantined row
whose envelope is no longer in bronze (bronze rebuilt without it) is not replayed.

**Trades only, today.** A quarantined row's JSON holds its target table's columns, and only
``silver.trades`` has ``native_symbol``: a ticker's or L1 quote's JSON does not say which market
it was for (its symbol columns are ``NULL``), so it matches no market and a call for those tables
returns 0 after the one small query. It works for them unchanged once their JSON carries
``native_symbol`` (``PricedJob.normalize`` would have to keep it for rejected rows).

Not done here: a replayed trade is a trade of its minute, so it may change that minute's rates
(a new market ``X-USDT`` gives ``X`` a rate; a new listing of a pooled market can change its last
price). Those rates and the rows they reach are re-priced the usual way: re-run ``silver_trades``
over those minutes, or hand them to the live pipeline's re-pricing.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Sequence
from datetime import UTC, date, datetime

from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql.types import StringType, StructField, StructType, TimestampType

from lake.delta_io import dedupe_first, merge, table_version
from lake.tables import BRONZE_RAW_EVENTS, SILVER_QUARANTINE, Lake, table
from spark_jobs import silver_l1, silver_tickers, silver_trades
from spark_jobs.columns import minute_of
from spark_jobs.runtime import SilverSettings, read_table
from spark_jobs.silver import (
    KeyIndex,
    PricedJob,
    PricedTable,
    key_text,
    minute_ranges,
    within,
    within_sql,
)

logger = logging.getLogger(__name__)

#: The quarantine reason this module replays (set by :func:`~spark_jobs.symbols.attach_symbols`).
REASON = "unknown_market"

#: The job that writes each priced silver table: its bronze channels and its normalization.
JOBS: dict[str, PricedJob] = {
    job.target.name: job for job in (silver_trades.JOB, silver_tickers.JOB, silver_l1.JOB)
}

#: Receive times of envelopes this close (ms) are read as one ``recv_ts_ns`` range of bronze.
RECV_RANGE_GAP_MS = 1_000


def replay_unknown_markets(
    spark: SparkSession,
    *,
    lake: Lake,
    target: PricedTable | str,
    markets: DataFrame,
    settings: SilverSettings,
    index: KeyIndex | None = None,
) -> int:
    """Insert ``target``'s ``unknown_market`` rows whose market is in ``markets``; returns rows inserted.

    ``markets`` has ``silver.markets``' columns (at least ``exchange``, ``native_symbol``): the whole
    table, or only the markets just added (cheaper: fewer quarantined rows match). Call it after
    ``silver.markets`` changed (a new discovery snapshot was written), before or after the batch's
    rows of ``target``. ``index`` is the :class:`KeyIndex` of the writer that appends ``target``'s
    batches in this process (live pipeline, standalone job): pass it so the inserted keys are added
    to it, or a later copy of a replayed row (a REST gap-fill twin) would be appended as a duplicate.
    Idempotent: a second run inserts nothing. Raises ``ValueError`` for a table
    that is not a priced silver table (trades, tickers, L1 quotes; only trades' quarantined rows
    name their market today, see the module doc).
    """
    name = target if isinstance(target, str) else target.name
    job = JOBS.get(name)
    if job is None:
        raise ValueError(f"not a priced silver table: {name!r} (one of {sorted(JOBS)})")
    spec = table(name)
    started = time.perf_counter()
    waiting = _waiting(spark, lake=lake, name=name, markets=markets).persist()
    pending: DataFrame | None = None
    rebuilt: list[DataFrame] = []
    try:
        found = _locators(waiting)
        if not found:
            return 0
        scope = minute_ranges(sorted({m for _, _, m in found}))
        stored = read_table(spark, lake, name).where(within(scope, spec))
        pending = _not_stored(waiting, stored, key=spec.key).persist()
        left = _locators(pending)
        if not left:
            logger.info("%s: %d %s rows already replayed", name, len(found), REASON)
            return 0
        bronze = read_table(spark, lake, BRONZE_RAW_EVENTS.name).where(
            F.col("channel").isin(*job.channels) & _received_at([(ex, ms) for ex, ms, _ in left])
        )
        rows = _rebuilt(bronze.transform(job.normalize(markets)), pending)
        rows = dedupe_first(rows, job.target.key, job.target.order())
        from spark_jobs.dq_replay import _inserted_since, _price  # GX is imported only when needed

        priced = _price(spark, rows, lake=lake, table_name=name, carry=settings.rate_carry_minutes)
        priced = priced.select(*spec.columns).persist()
        rebuilt.append(priced)
        keys = priced.select(
            F.unix_timestamp(minute_of("event_ts")).alias("m"), key_text(spec.key).alias("k")
        ).collect()
        scope = minute_ranges(sorted({m for _, _, m in left}))
        before = table_version(spark, lake, name)
        merge(
            priced,
            lake=lake,
            name=name,
            mode="insert_only",
            target_scope=within_sql(scope, spec, alias="t"),
        )
        inserted = _inserted_since(spark, lake, name, before)
        if index is not None:
            index.add([(int(r["m"]), r["k"]) for r in keys])
        logger.info(
            "%s: replayed %d of %d %s rows (%d inserted) in %.1f s",
            name,
            len(left),
            len(found),
            REASON,
            inserted,
            time.perf_counter() - started,
        )
        return inserted
    finally:
        waiting.unpersist()
        for df in [pending, *rebuilt]:
            if df is not None:
                df.unpersist()


def _waiting(spark: SparkSession, *, lake: Lake, name: str, markets: DataFrame) -> DataFrame:
    """Quarantined ``unknown_market`` rows of ``name`` whose market is in ``markets``.

    Columns: the key's columns but ``symbol`` as the JSON holds them (timestamps to the
    millisecond), ``symbol`` from ``markets``, ``recv_ts``, ``event_ts`` and ``_raw``. A row whose
    JSON has no ``native_symbol`` (tickers, L1 quotes today) matches no market.
    """
    spec = table(name)
    types = {f.name: f.dataType for f in spec.schema.fields}
    wanted = ["exchange", "native_symbol", "recv_ts", "event_ts", *[k for k in spec.key if k != "symbol"]]
    fields = [StructField(c, types.get(c, StringType()), True) for c in dict.fromkeys(wanted)]
    schema = StructType([*fields, StructField("_raw", StringType(), True)])
    rows = (
        read_table(spark, lake, SILVER_QUARANTINE.name)
        .where((F.col("source_table") == name) & (F.col("reason") == REASON))
        .select(F.from_json("row_json", schema).alias("r"))
        .select("r.*")
        .where(F.col("recv_ts").isNotNull() & F.col("event_ts").isNotNull())
    )
    known = F.broadcast(
        markets.select(
            F.col("exchange").alias("_m_exchange"),
            F.upper(F.col("native_symbol")).alias("_m_key"),
            "symbol",
        ).dropDuplicates(["_m_exchange", "_m_key"])
    )
    joined = rows.join(
        known,
        (F.col("exchange") == F.col("_m_exchange")) & (F.upper(F.col("native_symbol")) == F.col("_m_key")),
        "inner",
    )
    return joined.drop("_m_exchange", "_m_key")


def _locators(rows: DataFrame) -> list[tuple[str, int, int]]:
    """Distinct (exchange, receive time in epoch ms, event minute in epoch s) of the rows: one small job."""
    got = (
        rows.select(
            "exchange",
            F.unix_millis("recv_ts").alias("ms"),
            F.unix_timestamp(minute_of("event_ts")).alias("m"),
        )
        .distinct()
        .collect()
    )
    return sorted((r["exchange"], int(r["ms"]), int(r["m"])) for r in got)


def _to_ms(col: Column) -> Column:
    return F.date_trunc("millisecond", col)


def _not_stored(waiting: DataFrame, stored: DataFrame, *, key: Sequence[str]) -> DataFrame:
    """The waiting rows whose key is not in ``stored``; timestamps compared to the millisecond.

    The JSON keeps a key's timestamp only to the millisecond: two stored rows of one market whose
    keys differ only below it (same exchange sequence too) do not occur.
    """
    types = {f.name: f.dataType for f in stored.schema.fields}
    s = stored.select(
        *[
            (_to_ms(F.col(k)) if isinstance(types[k], TimestampType) else F.col(k)).alias(f"_s_{k}")
            for k in key
        ]
    )
    cond = [F.col(k).eqNullSafe(F.col(f"_s_{k}")) for k in key]
    return waiting.join(s, cond, "left_anti")


def _received_at(located: Iterable[tuple[str, int]]) -> Column:
    """Bronze rows of these exchanges received in these milliseconds (bounded by partition and stats)."""
    by_exchange: dict[str, list[int]] = {}
    for exchange, ms in located:
        by_exchange.setdefault(exchange, []).append(ms)
    condition = F.lit(False)
    for exchange, stamps in sorted(by_exchange.items()):
        days = sorted({_day(ms) for ms in stamps})
        spans = F.lit(False)
        for lo, hi in _ms_ranges(stamps):
            ns = F.col("recv_ts_ns")
            spans = spans | ((ns >= F.lit(lo * 1_000_000)) & (ns < F.lit(hi * 1_000_000)))
        condition = condition | (
            (F.col("exchange") == exchange) & F.col("recv_date").isin(*[F.lit(d) for d in days]) & spans
        )
    return condition


def _ms_ranges(stamps: Sequence[int]) -> list[tuple[int, int]]:
    """``[lo, hi)`` millisecond ranges covering every stamp, merged across gaps below the bound."""
    out: list[tuple[int, int]] = []
    for ms in sorted(stamps):
        if out and ms - out[-1][1] < RECV_RANGE_GAP_MS:
            out[-1] = (out[-1][0], ms + 1)
        else:
            out.append((ms, ms + 1))
    return out


def _day(ms: int) -> date:
    return datetime.fromtimestamp(ms // 1000, tz=UTC).date()


def _rebuilt(normalized: DataFrame, pending: DataFrame) -> DataFrame:
    """The good rows of the normalized envelopes that are the pending quarantined items."""
    p = pending.select(
        F.col("exchange").alias("_p_exchange"),
        F.col("_raw").alias("_p_raw"),
        F.col("recv_ts").alias("_p_recv_ts"),
    ).distinct()
    cond = (
        (F.col("exchange") == F.col("_p_exchange"))
        & (F.col("_raw") == F.col("_p_raw"))
        & (_to_ms(F.col("recv_ts")) == F.col("_p_recv_ts"))
    )
    return normalized.where(F.col("_error").isNull()).join(p, cond, "left_semi")
