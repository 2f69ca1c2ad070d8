"""pipeline: bronze_ingest then every silver job, in dependency order, in one Spark application.

With ``--trigger availableNow`` (the default) each query processes what is there and stops before
the next one starts: bronze, markets (symbols), trades (and USDT rates), tickers, L1. That is the
batch backfill (and a re-run of silver from bronze with ``--skip-bronze``).

With ``processingTime=<interval>`` the pipeline is live: ONE streaming query reads the landing
zone or Kafka and, in each micro-batch, appends to bronze and writes every silver table from the
same rows (markets first, then trades, tickers and L1 in parallel, priced from one rate book;
closed minutes' trades re-priced at the end of the batch). One query pays Spark's fixed
per-trigger costs (source listing, checkpoint commits, planning) once instead of once per table,
and a row reaches silver in one trigger instead of two. Tables are created before the query
starts, so a fresh lake needs no ``lake init``.

    python -m spark_jobs.pipeline --landing-root landing --lake-root lake-data
    spark-submit spark_jobs/pipeline.py --source kafka --trigger "processingTime=10 seconds"
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from pyspark.errors import StreamingQueryException
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql.streaming import StreamingQuery

from lake.config import ConfigError
from lake.delta_io import ensure_tables
from lake.session import build_spark
from lake.tables import (
    BRONZE_RAW_EVENTS,
    GOLD_DQ_RESULTS,
    GOLD_EXCHANGE_VOLUME_DAILY,
    GOLD_L1_1S,
    GOLD_L1_LATEST,
    GOLD_OHLCV_1M,
    GOLD_OHLCV_1M_COMPOSITE,
    SILVER_L1_QUOTES,
    SILVER_MARKETS,
    SILVER_QUARANTINE,
    SILVER_TICKERS,
    SILVER_TRADES,
    SILVER_USDT_RATES,
    Lake,
)
from spark_jobs import bronze_ingest, silver_l1, silver_markets, silver_tickers, silver_trades
from spark_jobs.bronze_ingest import source_stream, write_bronze
from spark_jobs.market_replay import replay_unknown_markets
from spark_jobs.runtime import (
    SETTING_HELP,
    BronzeSettings,
    SilverSettings,
    WriterId,
    build_parser,
    parse_trigger,
    resolve,
    start,
)
from spark_jobs.silver import (
    BatchWriter,
    KeyIndex,
    MarketsCache,
    PricedJob,
    Repricer,
    Written,
    quality_validator,
    record_quality,
)
from spark_jobs.usdt import RateBook

logger = logging.getLogger(__name__)

#: Every table the pipeline writes, created in this order before any query starts.
LIVE_TABLES = tuple(
    t.name
    for t in (
        BRONZE_RAW_EVENTS,
        SILVER_MARKETS,
        SILVER_TRADES,
        SILVER_USDT_RATES,
        SILVER_TICKERS,
        SILVER_L1_QUOTES,
        SILVER_QUARANTINE,
        GOLD_OHLCV_1M,
        GOLD_OHLCV_1M_COMPOSITE,
        GOLD_EXCHANGE_VOLUME_DAILY,
        GOLD_L1_LATEST,
        GOLD_L1_1S,
        GOLD_DQ_RESULTS,
    )
)

SILVER_JOBS: tuple[tuple[str, Callable[..., StreamingQuery]], ...] = (
    (silver_markets.QUERY, silver_markets.build_query),
    *((job.query, job.build_query) for job in (silver_trades.JOB, silver_tickers.JOB, silver_l1.JOB)),
)


def live_query_name(bronze: BronzeSettings) -> str:
    """One checkpoint per source, like bronze_ingest's."""
    return f"lake_live_{bronze.source}"


#: How long a clean stop waits for the running micro-batch to commit before interrupting it.
STOP_WAIT_S = 120.0


@dataclass
class LiveWriter:
    """The live query's ``foreachBatch`` (``process``) and what a clean stop finishes (``finish``)."""

    process: BatchWriter
    repricer: Repricer
    quality: QualityLog
    gold: LiveGold | None = None


@dataclass
class LiveQuery:
    spark: SparkSession
    query: StreamingQuery
    writer: LiveWriter

    def _last_batch_id(self) -> int:
        progress = self.query.lastProgress
        return int(progress["batchId"]) if progress else -1

    def stop(self) -> None:
        """Stop at a batch boundary, re-price the open minutes (exact USDT at rest), bring gold up to date."""
        deadline = time.monotonic() + STOP_WAIT_S
        # Wait for the batch running now to commit, not for a quiet moment: with a short trigger
        # the next batch starts at once, and waiting for "no trigger active" waited for several.
        # A batch started since is interrupted by stop() and replayed at the next start.
        running = self._last_batch_id()
        while (
            self.query.isActive
            and self.query.status["isTriggerActive"]
            and self._last_batch_id() == running
            and time.monotonic() < deadline
        ):
            time.sleep(0.1)
        self.query.stop()
        finished = self.writer.repricer.finish(self.spark)
        self.writer.quality.flush(self.spark)
        if self.writer.gold is not None:
            self.writer.gold.add(repriced=finished)
            self.writer.gold.stop(self.spark)


class QualityLog:
    """The live batches' validation results, appended to ``gold.dq_results`` every ``every`` batches.

    One append per micro-batch was a Delta commit more in every batch; batched, the results of
    the batches since the last append are lost if the driver is killed (a clean stop flushes).
    The append is tagged with the newest batch id it holds, so a replay does not write it twice.
    """

    def __init__(self, *, lake: Lake, app_id: str | WriterId, every: int = 10) -> None:
        self._lake = lake
        self._writer_id = app_id  # resolved in the first batch (a WriterId needs the running query)
        self._app_id = ""
        self._every = every
        self._pending: list[Written] = []
        self._batches = 0
        self._newest = -1

    def add(self, spark: SparkSession, written: Sequence[Written], *, batch_id: int) -> None:
        self._app_id = self._app_id or f"{self._writer_id}-dq"
        self._pending.extend(w for w in written if w.validated is not None)
        self._batches += 1
        self._newest = max(self._newest, batch_id)
        if self._batches >= self._every:
            self.flush(spark)

    def flush(self, spark: SparkSession) -> None:
        if not self._pending:
            return
        try:
            record_quality(spark, self._pending, lake=self._lake, app_id=self._app_id, batch_id=self._newest)
        except Exception:  # kept for the next flush; never kills the stream
            logger.exception("writing %d data-quality results failed; kept", len(self._pending))
            return
        self._pending.clear()
        self._batches = 0


class LiveGold:
    """Gold from the live pipeline: bars, daily volumes and the L1 book, in a thread of its own.

    Micro-batches hand over the minutes they wrote (trades, L1) and the minutes the re-pricer
    finished; every ``interval_s`` the thread passes what has gathered to
    :class:`~spark_jobs.gold.GoldWriter` and :func:`~spark_jobs.gold.update_l1` in one call. A
    gold update reads whole minutes of silver: inside every micro-batch it made batches ~4x
    longer (measured), while off the batch it costs silver only the shared cores. The gold tables
    have no other writer, so nothing conflicts with the stream's appends. A failed update keeps
    its minutes for the next one; :meth:`stop` runs a last update.
    """

    def __init__(self, *, lake: Lake, silver: SilverSettings) -> None:
        from spark_jobs.gold import GoldWriter

        self._lake = lake
        self._carry = silver.rate_carry_minutes
        self._interval_s = silver.gold_interval_s
        self._writer = GoldWriter(lake)
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self._trades: set[int] = set()
        self._repriced: set[int] = set()
        self._l1: set[int] = set()

    def add(
        self, *, trades: Iterable[int] = (), repriced: Iterable[int] = (), l1: Iterable[int] = ()
    ) -> None:
        with self._lock:
            self._trades.update(trades)
            self._repriced.update(repriced)
            self._l1.update(l1)

    def start(self, spark: SparkSession) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._loop, args=(spark,), name="live-gold", daemon=True)
            self._thread.start()

    def stop(self, spark: SparkSession) -> None:
        """Stop the thread, then bring gold up to date with everything handed over."""
        self._stopping.set()
        if self._thread is not None:
            self._thread.join()
        self.update(spark)

    def _loop(self, spark: SparkSession) -> None:
        spark.sparkContext.setLocalProperty("spark.scheduler.pool", "gold")
        while not self._stopping.wait(self._interval_s):
            self.update(spark)

    def update(self, spark: SparkSession) -> None:
        from spark_jobs.gold import update_l1

        with self._lock:
            trades, repriced, l1 = self._trades, self._repriced, self._l1
            self._trades, self._repriced, self._l1 = set(), set(), set()
        if not (trades or repriced or l1):
            return
        started = time.perf_counter()
        try:
            if trades or repriced:
                self._writer.update(
                    spark, minutes=sorted(trades), repriced=sorted(repriced), carry_minutes=self._carry
                )
            # Live L1 quotes are not re-priced (see Repricer): only the minutes written are passed.
            if l1:
                update_l1(spark, self._lake, minutes=sorted(l1))
        except Exception:  # retried with the next update; never kills the stream
            self.add(trades=trades, repriced=repriced, l1=l1)
            logger.exception("gold update failed; its minutes stay due")
            return
        logger.info(
            "gold updated: %d trade minutes, %d re-priced, %d L1 minutes in %.1f s",
            len(trades),
            len(repriced),
            len(l1),
            time.perf_counter() - started,
        )


def live_batch_writer(*, lake: Lake, silver: SilverSettings, app_id: str | WriterId) -> LiveWriter:
    """The live query's ``foreachBatch``: bronze, then every silver table from the same rows."""
    # This query writes the markets itself (and says so); other writers are looked for each minute.
    markets = MarketsCache(lake, recheck_s=60.0)
    book = RateBook()
    priced = (silver_trades.JOB, silver_tickers.JOB, silver_l1.JOB)
    # Only trades are re-priced live: re-pricing tickers and L1 too doubled the work per minute and
    # the pipeline fell behind at the simulator's default load (measured); the backfill jobs
    # re-price all three.
    repricer = Repricer(lake=lake, settings=silver, book=book, targets=[silver_trades.JOB.target])
    indexes = {job.query: KeyIndex() for job in priced}
    writers = ThreadPoolExecutor(max_workers=len(priced), thread_name_prefix="silver-writer")
    validator = quality_validator(silver)
    quality = QualityLog(lake=lake, app_id=app_id)
    gold = LiveGold(lake=lake, silver=silver) if silver.gold_interval_s > 0 else None

    def process(batch: DataFrame, batch_id: int) -> None:
        started = time.perf_counter()
        spark = batch.sparkSession
        bronze = write_bronze(batch, batch_id, lake=lake, app_id=f"{app_id}-bronze")
        try:
            present = bronze.channels
            if silver_markets.CHANNEL in present:
                rows = bronze.good(silver_markets.CHANNEL)
                # No txn id: the MERGE is idempotent by itself (the newest snapshot wins), and a
                # session-wide txn setting would leak into the re-pricer's concurrent MERGEs.
                silver_markets.write_markets(rows, batch_id, lake=lake, app_id=None)
                markets.invalidate()
            known = markets.get(spark)

            def write(job: PricedJob) -> Written:
                spark.sparkContext.setLocalProperty("spark.scheduler.pool", "stream")
                return job.write(
                    bronze.good(*job.channels),
                    batch_id,
                    lake=lake,
                    settings=silver,
                    app_id=f"{app_id}-{job.query}",
                    markets=known,
                    book=book,
                    index=indexes[job.query],
                    validator=validator,
                )

            # The three tables are independent blind appends (txn ids as writer options, no shared
            # session setting): written at once, one table's planning overlaps another's jobs.
            due = [job for job in priced if any(c in present for c in job.channels)]
            written = list(writers.map(write, due))
            for job, done in zip(due, written, strict=True):
                if job.target.computes_rates:
                    repricer.touched(done.minutes)
                if gold is not None and job.target.name == SILVER_TRADES.name:
                    gold.add(trades=done.minutes)
                if gold is not None and job.target.name == SILVER_L1_QUOTES.name:
                    gold.add(l1=done.minutes)
            quality.add(spark, written, batch_id=batch_id)
            if silver_markets.CHANNEL in present:
                # Trades that arrived before their market's snapshot are in quarantine: bring them in.
                try:
                    replay_unknown_markets(
                        spark,
                        lake=lake,
                        target=silver_trades.JOB.target,
                        markets=known,
                        settings=silver,
                        index=indexes[silver_trades.JOB.query],
                    )
                except Exception:  # they stay in quarantine and are tried with the next snapshot
                    logger.exception("replaying trades of newly listed markets failed")
            finished = repricer.run_due(spark)
            if gold is not None:
                gold.add(repriced=finished)
                gold.start(spark)
        finally:
            bronze.release()
        logger.info(
            "live batch %d: %d envelopes in %.1f s",
            batch_id,
            sum(bronze.channels.values()),
            time.perf_counter() - started,
        )

    return LiveWriter(process=process, repricer=repricer, quality=quality, gold=gold)


def start_live(
    spark: SparkSession, *, lake: Lake, bronze: BronzeSettings, silver: SilverSettings
) -> LiveQuery:
    """Create the tables, then start the one live query (trigger: ``silver.trigger``)."""
    ensure_tables(spark, lake, LIVE_TABLES)
    name = live_query_name(bronze)
    writer = live_batch_writer(lake=lake, silver=silver, app_id=WriterId(spark, name))
    query = start(source_stream(spark, bronze), writer.process, name=name, lake=lake, trigger=silver.trigger)
    return LiveQuery(spark=spark, query=query, writer=writer)


def run(
    spark: SparkSession,
    *,
    lake: Lake,
    bronze: BronzeSettings | None,
    silver: SilverSettings,
    timeout_s: float | None = None,
    jobs: Sequence[str] | None = None,
) -> dict[str, float]:
    """Run bronze (unless ``bronze`` is ``None``) and the silver jobs; returns seconds per query.

    ``jobs`` limits the silver jobs to these names (default: all of :data:`SILVER_JOBS`).

    With an ``availableNow`` trigger the queries run one after the other; otherwise together.
    Raises the first query's exception.
    """
    starts: list[tuple[str, Callable[[], StreamingQuery]]] = []
    if bronze is not None:
        starts.append(
            (bronze_ingest.query_name(bronze), lambda: bronze_ingest.build_query(spark, bronze, lake=lake))
        )
    for name, build in SILVER_JOBS:
        if jobs is not None and name not in jobs:
            continue
        starts.append((name, lambda build=build: build(spark, silver, lake=lake)))  # type: ignore[misc]
    timings: dict[str, float] = {}
    if "availableNow" in parse_trigger(silver.trigger):
        for name, begin in starts:
            started = time.perf_counter()
            query = begin()
            try:
                query.awaitTermination(None if timeout_s is None else max(1, round(timeout_s)))
            except StreamingQueryException as exc:
                raise RuntimeError(f"query {name} failed: {exc}") from exc
            if query.isActive:
                query.stop()
                raise TimeoutError(f"query {name} did not finish within {timeout_s} s")
            if query.exception() is not None:
                raise RuntimeError(f"query {name} failed: {query.exception()}")
            timings[name] = time.perf_counter() - started
            logger.info("query %s done in %.1f s", name, timings[name])
        return timings
    if bronze is not None and jobs is None:
        live = start_live(spark, lake=lake, bronze=bronze, silver=silver)
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        try:
            _polling_stop.set()  # a signal now only asks for the stop (see _interrupt)
            while not live.query.awaitTermination(1):
                if _stop_requested.is_set() or (deadline is not None and time.monotonic() >= deadline):
                    break
        finally:
            _polling_stop.clear()
            live.stop()
        if live.query.exception() is not None:
            raise RuntimeError(f"query {live.query.name} failed: {live.query.exception()}")
        return timings
    # Silver (or some jobs) from bronze, continuously: one query per job.
    ensure_tables(spark, lake, LIVE_TABLES)
    queries = [begin() for _, begin in starts]
    spark.streams.awaitAnyTermination()
    for query in queries:
        if query.exception() is not None:
            raise RuntimeError(f"query {query.name} failed: {query.exception()}")
    return timings


#: Set by SIGINT/SIGTERM; the live loop of :func:`run` polls it between short waits.
_stop_requested = threading.Event()
#: Set while that loop polls: a signal must then not raise inside a py4j call. (Raising there
#: closes the driver's gateway connection mid-call, and the running micro-batch, whose
#: ``foreachBatch`` talks to the JVM from other threads, can fail instead of committing.)
_polling_stop = threading.Event()


def _interrupt(signum: int, frame: object) -> None:
    _stop_requested.set()
    if not _polling_stop.is_set():
        raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    parser = build_parser(
        prog="spark_jobs.pipeline", description=__doc__ or "", section="silver", settings_cls=SilverSettings
    )
    bronze_group = parser.add_argument_group("bronze settings (section bronze:)")
    silver_names = {f.name for f in dataclasses.fields(SilverSettings)}
    for f in dataclasses.fields(BronzeSettings):
        if f.name == "trigger":
            continue
        # A setting both layers have (max_files_per_trigger) is --bronze-<name> for bronze.
        flag = f"bronze_{f.name}" if f.name in silver_names else f.name
        bronze_group.add_argument(
            "--" + flag.replace("_", "-"),
            dest=f"bronze_{f.name}",
            default=None,
            metavar=f.name.upper(),
            help=f"{SETTING_HELP.get(f.name, '')} "
            f"(bronze.{f.name}, default {getattr(BronzeSettings(), f.name)!r})",
        )
    parser.add_argument("--skip-bronze", action="store_true", help="run only the silver jobs")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    try:
        ctx = resolve(args, section="silver", settings_cls=SilverSettings)
        bronze_args = argparse.Namespace(
            config=args.config,
            lake_root=args.lake_root,
            checkpoint_root=args.checkpoint_root,
            master=args.master,
            trigger=args.trigger,
            **{
                f.name: getattr(args, f"bronze_{f.name}")
                for f in dataclasses.fields(BronzeSettings)
                if f.name != "trigger"
            },
        )
        bronze = resolve(bronze_args, section="bronze", settings_cls=BronzeSettings).settings
        spark = build_spark(ctx.spark)
    except ConfigError as exc:
        print(f"config error: {exc}", file=sys.stderr)
        return 2
    # Ctrl-C and SIGTERM stop at a batch boundary (instead of PySpark's SIGINT handler, which
    # cancels the running jobs).
    signal.signal(signal.SIGINT, _interrupt)
    signal.signal(signal.SIGTERM, _interrupt)
    try:
        timings = run(spark, lake=ctx.lake, bronze=None if args.skip_bronze else bronze, silver=ctx.settings)
    except KeyboardInterrupt:
        print("stopped", file=sys.stderr)
        return 0
    if _stop_requested.is_set():
        print("stopped", file=sys.stderr)
        return 0
    for name, seconds in timings.items():
        print(f"{name:24} {seconds:8.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
