"""Gold benchmark: milliseconds per :func:`spark_jobs.gold.update_gold` / ``update_l1`` call, warm lake.

A warm lake: ``silver.trades`` with ``--warm-trades`` trades over ``--warm-minutes`` minutes on
3 exchanges x ``--markets`` markets, and gold built from it. Then ``--batches`` batches of
``--batch-trades`` trades (every market, the newest minute) are appended to silver and gold is
updated the way the live pipeline would call it (``minutes=`` the batch's minutes) and the way
the standalone job does (``trades=`` the batch rows). Same for L1 quotes.

    python -m infra.bench --only gold [--quick]              # make bench's figures (the defaults)
    python -m infra.bench.gold --batches 5 --batch-trades 1000
    python -m infra.bench.gold --queries var/demo/lake     # the example queries, both engines
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from lake.delta_io import append, ensure_tables
from lake.session import SparkSettings, build_spark
from lake.tables import SILVER_L1_QUOTES, SILVER_TRADES, Lake, LakeSettings
from spark_jobs import gold

T0 = int(datetime(2026, 1, 1, tzinfo=UTC).timestamp())
EXCHANGES = ("binance", "kucoin", "coinbase")
#: Figure names of the timed calls.
_LABEL = {"minutes=": "update_gold_minutes", "trades=": "update_gold_trades", "update_l1": "update_l1"}


def synthetic_trades(
    spark: SparkSession, *, n: int, markets: int, start_s: float, span_s: float, id_offset: int
) -> DataFrame:
    """``n`` silver-shaped trades spread evenly over ``[start_s, start_s + span_s)`` (epoch s)."""
    ex = F.element_at(F.array(*[F.lit(e) for e in EXCHANGES]), (F.col("id") % 3 + 1).cast("int"))
    base = F.concat(F.lit("A"), (F.col("id") % markets).cast("string"))
    price = (F.lit(100) + (F.col("id") % 97) / 100).cast("decimal(38,18)")
    size = ((F.col("id") % 13 + 1) / 1000).cast("decimal(38,18)")
    at = F.timestamp_micros((F.lit(start_s * 1e6) + F.col("id") * (span_s * 1e6 / n)).cast("long"))
    rate = F.lit(1).cast("decimal(38,18)")
    return spark.range(n).select(
        ex.alias("exchange"),
        F.concat(base, F.lit("-USDT")).alias("symbol"),
        F.concat(base, F.lit("USDT")).alias("native_symbol"),
        base.alias("base"),
        F.lit("USDT").alias("quote"),
        (F.col("id") + id_offset).cast("string").alias("trade_id"),
        price.alias("price"),
        size.alias("size"),
        F.lit("buy").alias("side"),
        at.alias("event_ts"),
        at.alias("recv_ts"),
        F.lit("ws").alias("source"),
        rate.alias("usdt_rate"),
        price.alias("price_usdt"),
        (price * size).cast("decimal(38,18)").alias("notional_usdt"),
        F.lit("direct").alias("usdt_method"),
        F.to_date(at).alias("trade_date"),
    )


def synthetic_quotes(spark: SparkSession, trades: DataFrame) -> DataFrame:
    """One quote per trade, at its time (sequence = trade id)."""
    half = F.lit("0.01").cast("decimal(38,18)")
    return trades.select(
        "exchange",
        "symbol",
        "base",
        "quote",
        (F.col("price") - half).cast("decimal(38,18)").alias("bid_price"),
        F.col("size").alias("bid_size"),
        (F.col("price") + half).cast("decimal(38,18)").alias("ask_price"),
        F.col("size").alias("ask_size"),
        F.col("trade_id").cast("long").alias("sequence"),
        "event_ts",
        "recv_ts",
        F.lit("l1").alias("source_channel"),
        "usdt_rate",
        F.col("price").alias("mid_usdt"),
        F.lit(2).cast("decimal(38,18)").alias("spread_bps"),
        "usdt_method",
    )


def time_queries(lake_root: str, *, symbol: str, base: str, repeats: int, master: str) -> None:
    """The example queries (lake.sql.EXAMPLES) in DuckDB and in Spark (persistent catalog): ms each.

    DuckDB: the connection (delta-rs opens every table) once, then each query ``repeats`` times.
    Spark: the session with the catalog, then each query (first run, then the median of the rest).
    """
    from lake.sql import (
        SqlSettings,
        catalog_session,
        duckdb_connect,
        example_queries,
        format_table,
        run_duckdb,
        run_spark,
    )

    lake = Lake(LakeSettings(root=lake_root))
    queries = example_queries(symbol=symbol, base=base)
    t = time.perf_counter()
    con = duckdb_connect(lake)
    print(f"duckdb: connection with every table in {(time.perf_counter() - t) * 1000:.0f} ms")
    duck: dict[str, list[float]] = {}
    for name, sql in queries.items():
        results = [run_duckdb(con, sql) for _ in range(repeats)]
        duck[name] = [r.seconds for r in results]
        print(f"\n-- {name}\n{sql}\n\n{format_table(results[0])}\n")
    t = time.perf_counter()
    spark_times: dict[str, list[float]] = {}
    settings = SparkSettings(master=master, shuffle_partitions=2, driver_memory="2g")
    with catalog_session(settings, lake, SqlSettings()) as spark:
        print(f"spark: session + catalog registration in {(time.perf_counter() - t) * 1000:.0f} ms")
        for name, sql in queries.items():
            spark_times[name] = [run_spark(spark, lake, sql).seconds for _ in range(repeats)]
    print("| query | DuckDB first / median ms | Spark first / median ms |")
    print("|---|---|---|")
    for name in queries:
        d, sp = duck[name], spark_times[name]
        print(
            f"| {name} | {d[0] * 1000:.0f} / {statistics.median(d[1:] or d) * 1000:.0f} "
            f"| {sp[0] * 1000:.0f} / {statistics.median(sp[1:] or sp) * 1000:.0f} |"
        )


def measure(
    *, warm_trades: int, warm_minutes: int, markets: int, batches: int, batch_trades: int, master: str
) -> dict[str, Any]:
    """Build the warm lake, time ``batches`` gold and L1 updates on it; prints as it goes, returns figures."""
    root = Path(tempfile.mkdtemp(prefix="bench-gold-"))
    spark = build_spark(SparkSettings(master=master, shuffle_partitions=2, driver_memory="3g"))
    lake = Lake(LakeSettings(root=str(root / "lake")))
    try:
        ensure_tables(spark, lake, (SILVER_TRADES.name, SILVER_L1_QUOTES.name, *gold.GOLD_TABLES))
        span = warm_minutes * 60
        warm = synthetic_trades(spark, n=warm_trades, markets=markets, start_s=T0, span_s=span, id_offset=0)
        # One file per minute and partition, as a stream of micro-batches leaves them (statistics skip).
        warm = warm.repartitionByRange(warm_minutes, "event_ts")
        append(warm, lake=lake, name=SILVER_TRADES.name)
        append(synthetic_quotes(spark, warm), lake=lake, name=SILVER_L1_QUOTES.name)
        started = time.perf_counter()
        writer = gold.GoldWriter(lake)  # what the pipeline keeps across batches
        gold.update_gold(spark, lake, minutes=range(T0, T0 + span, 60), writer=writer)
        gold.update_l1(spark, lake, minutes=range(T0, T0 + span, 60))
        warm_s = time.perf_counter() - started
        print(f"warm: {warm_trades} trades, gold built in {warm_s:.1f} s")
        figures: dict[str, Any] = {
            "warm_lake": f"{warm_trades} trades, {warm_minutes} min, {len(EXCHANGES)} x {markets} markets",
            "batches": f"{batches} of {batch_trades} trades (every market, the newest minute)",
            "spark_master": master,
            "warm_gold_build_seconds": round(warm_s, 1),
        }

        timings: dict[str, list[float]] = {"minutes=": [], "trades=": [], "update_l1": []}
        newest = T0 + span
        for i in range(batches):
            batch = synthetic_trades(
                spark,
                n=batch_trades,
                markets=markets,
                start_s=newest + i * 2,
                span_s=2,
                id_offset=10_000_000 + i * batch_trades,
            ).persist()
            batch.count()
            append(batch, lake=lake, name=SILVER_TRADES.name)
            quotes = synthetic_quotes(spark, batch)
            append(quotes, lake=lake, name=SILVER_L1_QUOTES.name)
            mode = "minutes=" if i % 2 == 0 else "trades="
            t = time.perf_counter()
            if mode == "minutes=":
                result = gold.update_gold(spark, lake, minutes=[newest + (i * 2) // 60 * 60], writer=writer)
            else:
                result = gold.update_gold(spark, lake, trades=batch, writer=writer)
            timings[mode].append(time.perf_counter() - t)
            print(f"batch {i} ({mode}): {result.bars} bars, steps {result.steps}", flush=True)
            t = time.perf_counter()
            gold.update_l1(spark, lake, quotes=quotes)
            timings["update_l1"].append(time.perf_counter() - t)
            batch.unpersist()
        for name, values in timings.items():
            if values:
                ms = [round(v * 1000) for v in values]
                print(f"{name:10} ms per call: median {statistics.median(ms):.0f}, all {ms}")
                figures[f"{_LABEL[name]}_ms_median"] = round(statistics.median(ms))
    finally:
        spark.stop()
        shutil.rmtree(root, ignore_errors=True)
    return figures


def run(*, quick: bool = False) -> dict[str, Any]:
    """``make bench``'s gold figures: the CLI's defaults (quick: a small warm lake, 3 batches)."""
    if quick:
        return measure(
            warm_trades=20_000, warm_minutes=10, markets=10, batches=3, batch_trades=500, master="local[2]"
        )
    return measure(
        warm_trades=200_000, warm_minutes=30, markets=50, batches=5, batch_trades=1000, master="local[2]"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m infra.bench.gold", description=__doc__)
    parser.add_argument("--queries", metavar="LAKE_ROOT", help="only time the example queries on this lake")
    parser.add_argument("--symbol", default="BTC-USDT")
    parser.add_argument("--base", default="BTC")
    parser.add_argument("--repeats", type=int, default=4)
    parser.add_argument("--warm-trades", type=int, default=200_000)
    parser.add_argument("--warm-minutes", type=int, default=30)
    parser.add_argument("--markets", type=int, default=50)
    parser.add_argument("--batches", type=int, default=5)
    parser.add_argument("--batch-trades", type=int, default=1000)
    parser.add_argument("--master", default="local[2]")
    args = parser.parse_args(argv)
    if args.queries:
        time_queries(
            args.queries, symbol=args.symbol, base=args.base, repeats=args.repeats, master=args.master
        )
        return 0

    measure(
        warm_trades=args.warm_trades,
        warm_minutes=args.warm_minutes,
        markets=args.markets,
        batches=args.batches,
        batch_trades=args.batch_trades,
        master=args.master,
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
