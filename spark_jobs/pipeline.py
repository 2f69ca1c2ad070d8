"""pipeline: bronze_ingest then every silver job, in dependency order, in one Spark application.

With ``--trigger availableNow`` (the default) each query processes what is there and stops before
the next one starts: bronze, markets (symbols), trades (and USDT rates), tickers, L1. That is the
batch backfill and what ``make run`` and the benchmark use. With ``processingTime=<interval>``
all queries run concurrently until one fails or the process is stopped.

    python -m spark_jobs.pipeline --landing-root landing --lake-root lake-data
    spark-submit spark_jobs/pipeline.py --source kafka --trigger "processingTime=10 seconds"
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import sys
import time
from collections.abc import Callable, Sequence

from pyspark.errors import StreamingQueryException
from pyspark.sql import SparkSession
from pyspark.sql.streaming import StreamingQuery

from lake.config import ConfigError
from lake.session import build_spark
from lake.tables import Lake
from spark_jobs import bronze_ingest, silver_l1, silver_markets, silver_tickers, silver_trades
from spark_jobs.runtime import (
    SETTING_HELP,
    BronzeSettings,
    SilverSettings,
    build_parser,
    parse_trigger,
    resolve,
)

logger = logging.getLogger(__name__)

SILVER_JOBS: tuple[tuple[str, Callable[..., StreamingQuery]], ...] = (
    (silver_markets.QUERY, silver_markets.build_query),
    *((job.query, job.build_query) for job in (silver_trades.JOB, silver_tickers.JOB, silver_l1.JOB)),
)


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
    queries = [begin() for _, begin in starts]
    spark.streams.awaitAnyTermination()
    for query in queries:
        if query.exception() is not None:
            raise RuntimeError(f"query {query.name} failed: {query.exception()}")
    return timings


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
    timings = run(spark, lake=ctx.lake, bronze=None if args.skip_bronze else bronze, silver=ctx.settings)
    for name, seconds in timings.items():
        print(f"{name:24} {seconds:8.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
