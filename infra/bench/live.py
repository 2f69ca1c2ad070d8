"""Live benchmark: freshness of the streaming pipeline at a real load, measured from Delta commits.

The exchange simulator runs as its own process (default: 3 exchanges x 50 markets x 200 trades/s
each, with tickers and L1), one extractor process lands into a local landing zone rolled every
``roll_s`` seconds, and the live pipeline (:func:`spark_jobs.pipeline.start_live`: one query,
``processingTime`` trigger) runs in this process on ``local[<cores>]``. Spark starts first; the
extractor starts once the query runs, so the figures cover the whole run from the first frame.

**Freshness** of a row = the Delta commit time of the version that first held its key minus its
exchange ``event_ts``. Read from the tables' transaction logs: each commit's ``commitInfo``
timestamp and the files it added; every row of every added file is read back, and a key counts at
the first version it appears in (a MERGE that rewrites a file re-adds old rows, which are not new).
Reported per table: p50 / p99 / max over every row of the run, p99 per minute of the run (a flat
series means no growing backlog), and the micro-batch durations.

**Gold freshness** (``gold.ohlcv_1m``, rewritten by MERGEs, so rows cannot be followed by file):
every version of the table is read back (delta-rs time travel) for each bar's ``trade_count``;
the k-th trade of a bar (by event time, then trade id, from ``silver.trades`` at the end) counts as
in gold at the first commit whose bar holds at least k trades. Exact when a bar's trades reach
silver in event order; a late trade is timed by the commit that raised the count past its rank.

    python -m infra.bench --only live [--quick]                 # 5 minutes (quick: 1.5) at the default load
    python -m infra.bench.live --minutes 30 --rate 400     # longer, or another load (headroom)
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any
from urllib.parse import unquote

from pyspark.sql import SparkSession
from pyspark.sql import functions as F

from lake.session import SparkSettings, build_spark
from lake.tables import (
    GOLD_OHLCV_1M,
    SILVER_L1_QUOTES,
    SILVER_TICKERS,
    SILVER_TRADES,
    Lake,
    LakeSettings,
    table,
)
from spark_jobs import pipeline
from spark_jobs.runtime import BronzeSettings, SilverSettings

Figures = dict[str, Any]

EXCHANGES = ("binance", "kucoin", "coinbase")
#: The live pipeline's settings the figures are measured with (README states them).
ROLL_S = 1.0
TRIGGER = "processingTime=1 second"
MEASURED = (SILVER_TRADES.name, SILVER_TICKERS.name, SILVER_L1_QUOTES.name)


def _start_simulator(
    workdir: Path, *, symbols: int, rate: float, seed: int
) -> tuple[subprocess.Popen[str], dict]:
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "infra.exchange_sim",
            "--exchanges",
            ",".join(EXCHANGES),
            "--symbols",
            str(symbols),
            "--rate",
            str(rate),
            "--seed",
            str(seed),
            "--truth",
            str(workdir / "truth.jsonl"),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    for line in proc.stdout:
        if line.startswith("{"):
            return proc, json.loads(line)
    raise RuntimeError(f"the simulator exited with {proc.wait()} before printing its URLs")


def _start_extractor(workdir: Path, urls: dict) -> subprocess.Popen[bytes]:
    from infra.demo import extractor_env

    env = extractor_env(
        {ex: (u["rest"], u["ws"]) for ex, u in urls.items()},
        landing=workdir / "landing",
        spool=workdir / "spool",
    )
    env["CRYPTOLAKE_LANDING_ROLL_SECONDS"] = str(ROLL_S)
    return subprocess.Popen([sys.executable, "-m", "extractors", "run", "--sink", "landing"], env=env)


def _stop(proc: subprocess.Popen[Any], timeout_s: float = 60) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def commits(lake: Lake, name: str) -> list[tuple[int, int, str, str]]:
    """``(version, commit time ms, added file name, exchange partition value)`` from the Delta log."""
    out = []
    for entry in sorted((Path(lake.path(name)) / "_delta_log").glob("*.json")):
        version = int(entry.stem)
        actions = [json.loads(line) for line in entry.read_text().splitlines() if line.strip()]
        committed = next(a["commitInfo"]["timestamp"] for a in actions if "commitInfo" in a)
        for a in actions:
            if "add" in a:
                path = unquote(a["add"]["path"])
                exchange = a["add"].get("partitionValues", {}).get("exchange", "")
                out.append((version, int(committed), path.rsplit("/", 1)[-1], exchange))
    return out


def freshness(spark: SparkSession, lake: Lake, name: str) -> Figures:
    spec = table(name)
    added = spark.createDataFrame(
        commits(lake, name), "version long, commit_ms long, file string, part_exchange string"
    )
    files = sorted(str(p) for p in Path(lake.path(name)).rglob("*.parquet") if "_delta_log" not in p.parts)
    label = name.replace(".", "_")
    if not files:
        return {f"{label}_rows": 0}
    data = spark.read.parquet(*files).withColumn(
        "file", F.element_at(F.split(F.col("_metadata.file_path"), "/"), -1)
    )
    rows = data.join(F.broadcast(added), "file")
    if "exchange" not in data.columns:
        rows = rows.withColumn("exchange", F.col("part_exchange"))
    first = (
        rows.groupBy(*spec.key)
        .agg(
            F.min("commit_ms").alias("commit_ms"),
            *([] if "event_ts" in spec.key else [F.first("event_ts").alias("event_ts")]),
        )
        .withColumn("freshness_s", (F.col("commit_ms") - F.unix_micros("event_ts") / 1000) / 1000)
        .persist()
    )
    start_row = first.agg(F.min("commit_ms")).first()
    assert start_row is not None
    start_ms = start_row[0]
    p50, p99, top = first.approxQuantile("freshness_s", [0.5, 0.99, 1.0], 0.0)
    per_minute = (
        first.withColumn("m", F.floor((F.col("commit_ms") - F.lit(start_ms)) / 60000))
        .groupBy("m")
        .agg(F.percentile_approx("freshness_s", 0.99, 10000).alias("p99"), F.count("*").alias("n"))
        .orderBy("m")
        .collect()
    )
    figures = {
        f"{label}_rows": first.count(),
        f"{label}_freshness_p50_s": round(p50, 2),
        f"{label}_freshness_p99_s": round(p99, 2),
        f"{label}_freshness_max_s": round(top, 2),
        f"{label}_freshness_p99_per_minute_s": [round(r["p99"], 2) for r in per_minute],
        f"{label}_commits": len({v for v, *_ in commits(lake, name)}),
    }
    first.unpersist()
    return figures


def _rows(arrow: Any) -> Any:
    return zip(*(arrow.column(c).to_pylist() for c in arrow.column_names), strict=True)


def gold_freshness(lake: Lake) -> Figures:
    """Exchange ``event_ts`` -> first ``gold.ohlcv_1m`` commit holding the trade (see the module doc)."""
    import bisect

    from deltalake import DeltaTable

    path = lake.path(GOLD_OHLCV_1M.name)
    committed = {v: ms for v, ms, *_ in commits(lake, GOLD_OHLCV_1M.name)}
    if not committed:
        return {"gold_ohlcv_1m_trades": 0}
    # Per bar: the commit times at which its trade count grew, with the count.
    grew: dict[tuple[str, str, int], list[tuple[int, int]]] = {}
    for version in sorted(committed):
        bars = DeltaTable(path, version=version).to_pyarrow_table(
            columns=["exchange", "symbol", "minute", "trade_count"]
        )
        for ex, sym, minute, count in zip(
            *(bars.column(c).to_pylist() for c in bars.column_names), strict=True
        ):
            steps = grew.setdefault((ex, sym, int(minute.timestamp())), [])
            if not steps or count > steps[-1][1]:
                steps.append((committed[version], count))
    trades = DeltaTable(lake.path(SILVER_TRADES.name)).to_pyarrow_table(
        columns=["exchange", "symbol", "event_ts", "trade_id"]
    )
    by_bar: dict[tuple[str, str, int], list[tuple[Any, str]]] = {}
    for ex, sym, ts, tid in _rows(trades):
        by_bar.setdefault((ex, sym, int(ts.timestamp()) // 60 * 60), []).append((ts, tid))
    lags: list[float] = []
    missing = 0
    for bar, members in by_bar.items():
        steps = grew.get(bar, [])
        counts = [c for _, c in steps]
        for rank, (ts, _) in enumerate(sorted(members), start=1):
            i = bisect.bisect_left(counts, rank)
            if i == len(steps):
                missing += 1
                continue
            lags.append(steps[i][0] / 1000 - ts.timestamp())
    lags.sort()

    def q(p: float) -> float:
        return round(lags[min(len(lags) - 1, int(p * len(lags)))], 2)

    return {
        "gold_ohlcv_1m_trades": len(lags),
        "gold_ohlcv_1m_trades_not_in_gold": missing,
        "gold_ohlcv_1m_freshness_p50_s": q(0.5) if lags else None,
        "gold_ohlcv_1m_freshness_p99_s": q(0.99) if lags else None,
        "gold_ohlcv_1m_commits": len(committed),
    }


def run(
    *, quick: bool = False, minutes: float | None = None, rate: float = 200.0, symbols: int = 50
) -> Figures:
    """Run the live pipeline for ``minutes`` (default 5, quick 1.5) and measure its freshness."""
    minutes = minutes if minutes is not None else (1.5 if quick else 5.0)
    cores = os.cpu_count() or 2
    figures: Figures = {
        "load": f"{len(EXCHANGES)} exchanges x {symbols} markets x {rate:g} trades/s each, tickers and L1",
        "settings": f"trigger {TRIGGER}; landing roll {ROLL_S:g} s; extractor batches <= 100 envelopes/1 s",
        "spark_master": f"local[{cores}]",
        "minutes": minutes,
    }
    with tempfile.TemporaryDirectory(prefix="cryptolake-live-bench-", ignore_cleanup_errors=True) as tmp:
        workdir = Path(tmp)
        spark = build_spark(
            SparkSettings(
                master=f"local[{cores}]",
                app_name="cryptolake-bench-live",
                shuffle_partitions=cores,
                driver_memory="4g",
                extra={"spark.sql.warehouse.dir": str(workdir / "warehouse")},
            )
        )
        spark.sparkContext.setLogLevel("ERROR")
        lake = Lake(LakeSettings(root=str(workdir / "lake")))
        bronze = BronzeSettings(source="landing", landing_root=str(workdir / "landing"))
        silver = SilverSettings(trigger=TRIGGER)
        sim = extractor = None
        durations: list[float] = []
        try:
            live = pipeline.start_live(spark, lake=lake, bronze=bronze, silver=silver)
            query = live.query
            sim, urls = _start_simulator(workdir, symbols=symbols, rate=rate, seed=7)
            extractor = _start_extractor(workdir, urls)
            started = time.monotonic()
            seen = -1
            while (elapsed := time.monotonic() - started) < minutes * 60:
                time.sleep(5)
                if query.exception() is not None:
                    raise RuntimeError(f"the live query failed: {query.exception()}")
                if extractor.poll() is not None:
                    raise RuntimeError(f"the extractor exited with {extractor.returncode}")
                for progress in query.recentProgress:
                    if progress["batchId"] > seen and progress["numInputRows"]:
                        seen = progress["batchId"]
                        durations.append(progress["durationMs"]["triggerExecution"] / 1000)
                last = durations[-1] if durations else float("nan")
                print(f"   live: {elapsed:5.0f} s, {len(durations)} batches, last {last:.1f} s", flush=True)
            _stop(extractor)
            time.sleep(ROLL_S + 5)  # the last landing files are picked up by the next trigger
            live.stop()
        finally:
            for proc in (extractor, sim):
                if proc is not None:
                    _stop(proc)
        durations.sort()
        if durations:
            figures |= {
                "batches": len(durations),
                "batch_seconds_p50": round(durations[len(durations) // 2], 2),
                "batch_seconds_p99": round(durations[min(len(durations) - 1, int(len(durations) * 0.99))], 2),
            }
        for name in MEASURED:
            figures |= freshness(spark, lake, name)
        spark.stop()
        figures |= gold_freshness(lake)
    return figures


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m infra.bench.live", description=__doc__)
    parser.add_argument("--minutes", type=float, default=5.0, help="how long to run (default 5)")
    parser.add_argument("--rate", type=float, default=200.0, help="trades/s per exchange (default 200)")
    parser.add_argument("--symbols", type=int, default=50, help="markets per exchange (default 50)")
    args = parser.parse_args(argv)
    for key, value in run(minutes=args.minutes, rate=args.rate, symbols=args.symbols).items():
        print(f"{key:40} {value}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
