"""The micro-batch write shared by the priced silver jobs (trades, tickers, L1 quotes).

For one micro-batch of normalized rows (``_error`` ``NULL`` = good), :func:`write_priced_batch`:

1. appends rejected rows to ``silver.quarantine``;
2. drops in-batch duplicates (first received wins; for trades a websocket row beats its REST
   gap-fill twin) and rows whose key is already stored (:class:`KeyIndex`);
3. prices the kept rows with the USDT rates known now (:class:`~spark_jobs.usdt.RateBook`, which
   trades update with the batch's prices) and appends them: a duplicate never overwrites the first row.

Stored rows that a changed rate reaches are re-priced by :func:`reprice` (an update-only MERGE
bounded to those minutes): right after the batch for a standalone job, once the minute has
closed in the live pipeline (:class:`Repricer`).

Appends carry ``txnAppId`` = the query name and its checkpoint's query id, ``txnVersion`` = the
batch id: a batch replayed after a crash skips the appends that already committed and redoes the
rest from the same inputs, so the tables end up as if the batch had run once.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING

import pyarrow as pa
from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql.streaming import StreamingQuery

from lake.delta_io import append, dedupe_first, merge, table_version
from lake.quarantine import to_quarantine
from lake.tables import SILVER_MARKETS, SILVER_TRADES, SILVER_USDT_RATES, Lake, TableSpec, table
from spark_jobs.columns import minute_of
from spark_jobs.parsers.common import VALUE_REASONS
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
    RateBook,
    attach_rates,
    changed_pricing,
    market_prices,
    observe_prices,
    rate_rows,
    rates_frame,
    recency,
)

if TYPE_CHECKING:  # importing Great Expectations costs seconds: only the callers that validate do
    from expectations.validate import Validated, Validator

logger = logging.getLogger(__name__)

#: A ``foreachBatch`` function: (micro-batch, batch id) -> None.
BatchWriter = Callable[[DataFrame, int], None]

#: Quarantine appends run here, beside the rest of their batch's write (one per priced table:
#: the live pipeline writes the three at once). An append is mostly driver-side planning and
#: commit latency; inline it was the largest part of what validation added to a small batch.
_QUARANTINE_WRITERS = ThreadPoolExecutor(max_workers=3, thread_name_prefix="quarantine")


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
    snapshot and a scan. Checking the version costs a read of the transaction log's tail (~0.2 s),
    so a writer that writes the markets itself (the live pipeline) calls :meth:`invalidate` when
    it does and checks for other writers only every ``recheck_s`` seconds.
    """

    def __init__(self, lake: Lake, *, recheck_s: float = 0.0) -> None:
        self._lake = lake
        self._recheck_s = recheck_s
        self._checked = float("-inf")
        self._version: int | None = None
        self._markets: DataFrame | None = None

    def invalidate(self) -> None:
        self._checked = float("-inf")

    def get(self, spark: SparkSession) -> DataFrame:
        if self._markets is not None and time.monotonic() - self._checked < self._recheck_s:
            return self._markets
        version = table_version(spark, self._lake, SILVER_MARKETS.name)
        self._checked = time.monotonic()
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
        book: RateBook | None = None,
        index: KeyIndex | None = None,
        validator: Validator | None = None,
    ) -> Written:
        """Normalize bronze rows of this job's channels and write them (see :func:`write_priced_batch`)."""
        rows = bronze.transform(self.normalize(markets))
        return write_priced_batch(
            rows,
            target=self.target,
            lake=lake,
            settings=settings,
            app_id=app_id,
            batch_id=batch_id,
            book=book,
            index=index,
            validator=validator,
        )

    def batch_writer(
        self, *, lake: Lake, settings: SilverSettings, app_id: str | WriterId | None = None
    ) -> BatchWriter:
        """The ``foreachBatch`` of the job run on its own: write, then re-price what the batch reached.

        Re-pricing runs in the batch, so the table is exact when the batch commits (the live
        pipeline defers it instead: :class:`Repricer`).
        """
        writer_id = app_id or self.query
        markets = MarketsCache(lake)
        book = RateBook() if self.target.computes_rates else None
        index = KeyIndex()
        validator = quality_validator(settings)

        def process(batch: DataFrame, batch_id: int) -> None:
            written = self.write(
                batch,
                batch_id,
                lake=lake,
                settings=settings,
                app_id=str(writer_id),
                markets=markets.get(batch.sparkSession),
                book=book,
                index=index,
                validator=validator,
            )
            minutes = written.minutes
            record_quality(
                batch.sparkSession, [written], lake=lake, app_id=f"{writer_id}-dq", batch_id=batch_id
            )
            if book is not None:
                write_rates(batch.sparkSession, book, minutes, lake=lake)
                reprice(
                    batch.sparkSession, minutes, target=self.target, lake=lake, settings=settings, book=book
                )
            else:
                before = settings.reprice_minutes
                reprice(
                    batch.sparkSession,
                    minutes,
                    target=self.target,
                    lake=lake,
                    settings=settings,
                    book=None,
                    reach_before=before,
                )

        return process

    def build_query(self, spark: SparkSession, settings: SilverSettings, *, lake: Lake) -> StreamingQuery:
        process = self.batch_writer(lake=lake, settings=settings, app_id=WriterId(spark, self.query))
        return start_silver_query(
            spark, settings, lake=lake, channels=self.channels, name=self.query, process=process
        )

    def main(self, argv: list[str] | None, *, description: str) -> int:
        return silver_main(argv, prog=self.query, description=description, build_query=self.build_query)


def quality_validator(settings: SilverSettings) -> Validator | None:
    """The data-quality validator the silver writers use (``None`` with ``quality: false``)."""
    if not settings.quality:
        return None
    from expectations.validate import Validator

    return Validator(rejudged=VALUE_REASONS)


def record_quality(
    spark: SparkSession, written: Sequence[Written], *, lake: Lake, app_id: str, batch_id: int
) -> None:
    """One append of the batch's validation results to ``gold.dq_results`` (idempotent per batch)."""
    validated = [w.validated for w in written if w.validated is not None]
    if validated:
        from expectations.results import record

        record(spark, validated, lake=lake, app_id=app_id, version=batch_id)


def key_text(key: Sequence[str]) -> Column:
    """A row's natural key as one exact string (NULL-safe), for comparing keys on the driver."""
    return F.concat_ws("\u0001", *[F.coalesce(F.col(k).cast("string"), F.lit("\u0000")) for k in key])


class KeyIndex:
    """The keys of one table's rows in its recent minutes, held on the driver by its only writer.

    Dedupe against the table without reading it back: a batch's keys (a few thousand short
    strings, collected with its statistics) are looked up here. The index starts by loading the
    stored keys of the ``horizon_minutes`` before the first batch's minutes; from then on it
    *covers* every minute from that floor on (the writer adds what it appends) and forgets minutes
    more than ``horizon_minutes`` behind the newest, raising the floor. Minutes below the floor are
    the caller's to check against storage.
    """

    def __init__(self, *, horizon_minutes: int = 10) -> None:
        self._horizon = horizon_minutes * 60
        self._floor: int | None = None
        self._keys: dict[int, set[str]] = {}

    def covers(self, minute: int) -> bool:
        return self._floor is not None and minute >= self._floor

    def load(self, stored: DataFrame, *, spec: TableSpec, minutes: Sequence[int]) -> None:
        """On the first batch: read the stored keys from the horizon before it on."""
        if self._floor is not None or not minutes:
            return
        floor = minutes[0] - self._horizon
        newest = max(minutes[-1] + 60, floor + 60)
        rows = (
            stored.where(within([(floor, newest + self._horizon)], spec))
            .select(F.unix_timestamp(minute_of("event_ts")).alias("m"), key_text(spec.key).alias("k"))
            .collect()
        )
        self._floor = floor
        self.add([(r["m"], r["k"]) for r in rows])

    def stored(self, keys: Sequence[tuple[int, str]]) -> list[str]:
        """The keys (of covered minutes) that are already in the table."""
        return [k for m, k in keys if k in self._keys.get(m, ())]

    def add(self, keys: Sequence[tuple[int, str]]) -> None:
        for m, k in keys:
            if self.covers(m):
                self._keys.setdefault(m, set()).add(k)
        if self._keys:
            floor = max(self._keys) - self._horizon
            if self._floor is not None and floor > self._floor:
                self._floor = floor
                for m in [m for m in self._keys if m < floor]:
                    del self._keys[m]


def write_priced_batch(
    rows: DataFrame,
    *,
    target: PricedTable,
    lake: Lake,
    settings: SilverSettings,
    app_id: str,
    batch_id: int,
    book: RateBook | None = None,
    index: KeyIndex | None = None,
    validator: Validator | None = None,
) -> Written:
    """Validate, quarantine, dedupe, price and append one micro-batch of normalized rows.

    With a ``validator`` the batch is first checked against the table's data-quality suite
    (:mod:`expectations.validate`, on the Spark DataFrame): rows the parser or a critical
    expectation rejected go to ``silver.quarantine`` with the reason, the rest go on.

    New rows are priced with the rates known now: ``book`` (required for trades, which update it
    with the batch's prices) or, without one, the ``silver.usdt_rates`` table. Rows whose key is
    already stored are dropped: ``index`` (the table's recent keys, kept by the caller across
    batches) answers for recent minutes without reading the table; for older minutes only their
    files are read (a duplicate carries its original's event time). The rest is one blind append,
    idempotent under
    ``(app_id, batch_id)``. Stored rows whose rate changed are re-priced by :class:`Repricer`.

    Returns the event minutes (epoch seconds) of the batch's good rows and the validation.
    """
    spec = table(target.name)
    started = time.perf_counter()
    validated = None
    columns = rows.columns
    flagged = validator.flag(rows, table=target.name, batch_id=batch_id) if validator is not None else None
    # The flagged batch is cached by the validator; a second cache of the good rows cost a
    # columnar cache build per batch, ~25 % of the parse (JFR profile, docs/streaming.md).
    cached = flagged is None or not flagged.cached
    quarantining: Future[None] | None = None
    source = (rows if flagged is None else flagged.frame).withColumn("_minute", minute_of("event_ts"))
    if cached:
        source = source.persist()
    try:
        ok = F.col("_error").isNull() if flagged is None else ~F.col("_dq_bad")
        # One small action tells everything the plan below needs (which minutes, any rejects).
        # Trades also bring what the rate book needs, so it learns the batch's prices from this
        # collect instead of a second job (see _observe_first_copies), and a validated batch its
        # verdicts, so validation needs no counting job of its own. Arrow, by column: 3-4x
        # faster than collecting Row objects (measured 0.3 s vs 1.1 s for 40,000 trades).
        observed = _observed() if target.computes_rates and book is not None else ()
        wanted = [ok.alias("ok"), F.unix_timestamp("_minute").alias("m"), key_text(target.key).alias("k")]
        try:
            verdicts = flagged.count_columns() if flagged is not None else []
            keyed = source.select(*wanted, *observed, *verdicts).toArrow()
        except Exception as exc:  # a broken expectation: the batch passes unvalidated (logged)
            if flagged is None or validator is None:
                raise
            validated = validator.passed_through(flagged, exc)
            flagged, ok = None, F.col("_error").isNull()
            source = rows.withColumn("_minute", minute_of("event_ts")).persist()
            cached = True
            wanted[0] = ok.alias("ok")
            keyed = source.select(*wanted, *observed).toArrow()
        if flagged is not None and validator is not None:
            validated = validator.complete(flagged, keyed)
        oks, ms, ks = (keyed.column(c).to_pylist() for c in ("ok", "m", "k"))
        good_rows = [i for i, (o, m) in enumerate(zip(oks, ms, strict=True)) if o and m is not None]
        minutes = tuple(sorted({ms[i] for i in good_rows}))
        if not all(oks):
            bad = (
                validated.bad
                if validated is not None and validated.engine != "error"
                else source.where(~ok)
                .drop("_minute")
                .transform(to_quarantine(source_table=target.name, batch_id=batch_id))
            )
            # Committed before the batch returns (joined below), so its rows never outlive a failure.
            quarantining = _QUARANTINE_WRITERS.submit(
                write_quarantine, bad, lake=lake, app_id=app_id, version=batch_id
            )
        if not minutes:
            return Written((), validated)
        batch_keys = [(ms[i], ks[i]) for i in good_rows]
        session = source.sparkSession
        good = source.where(ok).select(*columns, "_minute")
        if len({k for _, k in batch_keys}) < len(batch_keys):  # the window's shuffle only when needed
            good = dedupe_first(good, target.key, target.order())
        if index is None:
            index = KeyIndex()
        index.load(read_table(session, lake, target.name), spec=spec, minutes=minutes)
        known = index.stored(batch_keys)
        # Only rows whose key is new are kept (the stored copy, received first, stays the row).
        kept = good.where(~key_text(target.key).isin(*known)) if known else good
        older = [m for m in minutes if not index.covers(m)]
        if older:  # beyond the index's window: look in the files of those minutes
            scope = minute_ranges(older, before=DEDUPE_SCOPE_MINUTES, after=DEDUPE_SCOPE_MINUTES)
            stored = read_table(session, lake, target.name).where(within(scope, spec)).select(*target.key)
            kept = kept.join(stored, [kept[k].eqNullSafe(stored[k]) for k in target.key], "left_anti")
        carry = settings.rate_carry_minutes
        needed = range(minutes[0] - carry * 60, minutes[-1] + 60, 60)
        if book is not None:
            load_minutes(book, read_table(session, lake, SILVER_TRADES.name), needed)
            if target.computes_rates:
                # The kept rows, not every copy: a re-delivered copy has a later receive time and
                # must not become "the last trade" of its minute instead of the row silver keeps.
                if older:  # which old-minute rows are stored copies only the anti-join knows
                    observe_prices(book, market_prices(kept))
                else:
                    _observe_first_copies(book, keyed, good_rows, stored=set(known))
            rates = rates_frame(session, rate_rows(book, needed))
        else:
            rates = read_table(session, lake, SILVER_USDT_RATES.name).where(
                F.col("minute").between(_ts(needed[0]), _ts(needed[-1]))
            )
        fresh = (
            kept.drop("_minute")
            .transform(attach_rates(rates, key=target.key, carry_minutes=carry))
            .transform(PRICERS[target.name])
        )
        append(fresh, lake=lake, name=target.name, app_id=app_id, version=batch_id)
        index.add(batch_keys)
        logger.info("%s batch %d: appended in %.1f s", app_id, batch_id, time.perf_counter() - started)
        return Written(minutes, validated)
    finally:
        try:
            if quarantining is not None:
                quarantining.result()  # its failure fails the batch, as an inline append did
        finally:
            if cached:
                source.unpersist()
            if validated is not None:
                validated.release()
            elif flagged is not None:
                flagged.release()


@dataclass(frozen=True)
class Written:
    """What :func:`write_priced_batch` wrote: the event minutes (epoch seconds) of its good rows,
    and its data-quality results (``None`` when it was not validated)."""

    minutes: tuple[int, ...]
    validated: Validated | None = None


def _observed() -> tuple[Column, ...]:
    """What :func:`_observe_first_copies` reads of each trade (besides ``ok``, ``m`` and ``k``)."""
    return (
        F.col("base"),
        F.col("quote"),
        F.col("price"),
        F.unix_micros("event_ts").alias("event_us"),
        F.unix_micros("recv_ts").alias("recv_us"),
        F.col("exchange"),
        F.col("trade_id"),
        F.col("source"),
        F.col("_raw"),
    )


def _observe_first_copies(book: RateBook, keyed: pa.Table, rows: Sequence[int], *, stored: set[str]) -> None:
    """Hand the book the batch's new trades: per key the copy silver keeps, none already stored.

    ``keyed`` holds the batch's collected columns (:func:`_observed`, ``m``, ``k``); ``rows`` are
    the indexes of its good rows. The copy kept is the first in the trades table's order (receive
    time, websocket before REST, raw text), as :func:`dedupe_first` picks it; the book keeps the
    latest trade per market and minute, so this gives what :func:`market_prices` of the kept rows
    would.
    """
    col = {name: keyed.column(name).to_pylist() for name in keyed.column_names if name != "ok"}
    m, k, recv, source, raw = col["m"], col["k"], col["recv_us"], col["source"], col["_raw"]

    def copy_order(i: int) -> tuple[int, bool, str]:
        return (recv[i], source[i] != "ws", raw[i])

    first: dict[str, int] = {}
    for i in rows:
        if k[i] in stored:
            continue
        seen = first.get(k[i])
        if seen is None or copy_order(i) < copy_order(seen):
            first[k[i]] = i
    for i in first.values():
        when = recency(col["event_us"][i], recv[i], col["exchange"][i], col["trade_id"][i])
        book.observe(col["base"][i], col["quote"][i], m[i], when, col["price"][i])


def reprice(
    spark: SparkSession,
    minutes: Sequence[int],
    *,
    target: PricedTable,
    lake: Lake,
    settings: SilverSettings,
    book: RateBook | None,
    reach_before: int = 0,
    app_id: str | None = None,
    batch_id: int | None = None,
) -> None:
    """Re-price the stored rows the rates of ``minutes`` reach: ``[m - reach_before, m + carry]``.

    Only rows whose USDT columns change are rewritten (an update-only MERGE bounded to those
    minutes' files). ``book`` gives the rates (else the ``silver.usdt_rates`` table).
    """
    if not minutes:
        return
    spec = table(target.name)
    carry = settings.rate_carry_minutes
    spans = minute_ranges(minutes, before=reach_before, after=carry)
    lo, hi = spans[0][0], spans[-1][1]
    needed = range(lo - carry * 60, hi, 60)
    if book is not None:
        load_minutes(book, read_table(spark, lake, SILVER_TRADES.name), needed)
        rates = rates_frame(spark, rate_rows(book, needed))
    else:
        rates = read_table(spark, lake, SILVER_USDT_RATES.name).where(
            F.col("minute").between(_ts(needed[0]), _ts(needed[-1]))
        )
    columns = PRICING_COLUMNS[target.name]
    candidates = read_table(spark, lake, target.name).where(within(spans, spec))
    priced = candidates.transform(attach_rates(rates, key=target.key, carry_minutes=carry)).transform(
        PRICERS[target.name]
    )
    changed = changed_pricing(candidates, priced, key=target.key, columns=columns)
    merge(
        changed.select(*spec.columns),
        lake=lake,
        name=target.name,
        mode="update_only",
        update_columns=columns,
        target_scope=within_sql(spans, spec, alias="t"),
        app_id=app_id,
        version=batch_id,
    )


def load_minutes(book: RateBook, trades: DataFrame, minutes: Iterable[int]) -> None:
    """Teach the book the minutes it has not seen, from the stored trades of those minutes only."""
    unknown = [m for m in minutes if not book.knows(m)]
    if not unknown:
        return
    in_minutes = F.array_contains(F.array(*[F.lit(_ts(m)) for m in unknown]), minute_of("event_ts"))
    observe_prices(
        book, market_prices(trades.where(within(minute_ranges(unknown), SILVER_TRADES)).where(in_minutes))
    )
    for m in unknown:
        book.mark_known(m)


def write_rates(spark: SparkSession, book: RateBook, minutes: Sequence[int], *, lake: Lake) -> None:
    """MERGE the rates of these minutes that differ from what this book last wrote (latest wins).

    Idempotent by itself (the same trades give the same rates), so it carries no txn id.
    """
    rows = [r for r in rate_rows(book, minutes) if book.written.get((r[0], r[1])) != (r[2], r[3])]
    if not rows:
        return
    merge(rates_frame(spark, rows), lake=lake, name=SILVER_USDT_RATES.name, mode="upsert", dedupe=True)
    book.written.update({(r[0], r[1]): (r[2], r[3]) for r in rows})
    book.trim()


class Repricer:
    """Re-prices, once per closed minute, what the live pipeline priced while the minute was open.

    A row is priced when it is written, with the rates known then; a minute's rate changes while
    trades of that minute keep arriving. Once the minute has closed (trades of a minute at least
    ``close_after_minutes`` later have arrived), its rates are written to ``silver.usdt_rates`` and
    the stored rows they reach (``[m, m + carry]`` in trades, tickers and L1) are re-priced, at the
    end of that micro-batch. (Not in a background thread: Delta's conflict check is per partition,
    so an update-only MERGE conflicts with the stream's concurrent appends to the same exchange and
    day.) A late trade re-opens its minute. The first
    batch of a process makes the ``catch_up_minutes`` before it due once, so the minutes a crash
    left open are finished when the pipeline is back within that time (after a longer outage they
    keep the rates known when they were written: re-run ``silver_trades`` over them to finish).
    """

    def __init__(
        self,
        *,
        lake: Lake,
        settings: SilverSettings,
        book: RateBook,
        targets: Sequence[PricedTable],
        close_after_minutes: int = 1,
        catch_up_minutes: int = 10,
    ) -> None:
        self._lake = lake
        self._settings = settings
        self._book = book
        self._targets = targets
        self._close_after = close_after_minutes
        self._catch_up = catch_up_minutes
        self._pending: set[int] = set()
        self._newest: int | None = None

    def touched(self, minutes: Sequence[int]) -> None:
        if not minutes:
            return
        if self._newest is None:  # first batch of this process: finish what a crash left open
            self._pending.update(range(minutes[0] - 60 * self._catch_up, minutes[0], 60))
        self._pending.update(minutes)
        self._newest = max(self._newest or minutes[-1], minutes[-1])

    def due(self) -> list[int]:
        if self._newest is None:
            return []
        closed_before = self._newest - 60 * self._close_after
        return sorted(m for m in self._pending if m < closed_before)

    def run_due(self, spark: SparkSession) -> list[int]:
        """Re-price the minutes that have closed (called at the end of a micro-batch); returns them."""
        due = self.due()
        if due:
            self._pending.difference_update(due)
            return self._run(spark, due)
        return []

    def finish(self, spark: SparkSession) -> list[int]:
        """On a clean stop: re-price every pending minute, open or not; returns them."""
        due = sorted(self._pending)
        self._pending.clear()
        return self._run(spark, due) if due else []

    def _run(self, spark: SparkSession, due: list[int]) -> list[int]:
        started = time.perf_counter()
        try:
            write_rates(spark, self._book, due, lake=self._lake)
            for target in self._targets:
                reprice(spark, due, target=target, lake=self._lake, settings=self._settings, book=self._book)
        except Exception:  # retried with the next closed minutes; never kills the stream
            self._pending.update(due)
            logger.exception("re-pricing %d minutes failed; they stay due", len(due))
            return []
        logger.info("re-priced %d closed minutes in %.1f s", len(due), time.perf_counter() - started)
        return due


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
