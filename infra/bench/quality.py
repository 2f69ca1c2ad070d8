"""Quality benchmark: ms per silver.trades-shaped micro-batch, with and without validation.

For each size, a batch of normalized trades (the shape ``write_priced_batch`` receives: the table's
columns with NULL USDT columns, ``_raw``, ``_error``; 8 % bad rows of four kinds) is written to
Parquet once and read back for every run, like a micro-batch's source. Timed, warm (the first run
of each kind is dropped), median of ``repeats``:

* ``write``: ``write_priced_batch`` alone (quarantine, dedupe, price, append to a fresh lake);
* ``validate``: :meth:`Validator.validate` (flag, persist, one counting job);
* ``validated write``: ``write_priced_batch`` with the validator (flag, verdicts counted from the
  writer's own key collect, quarantine append, write) and :func:`record` (append) to
  ``gold.dq_results`` (timed apart too: the live pipeline appends 10 batches' results at once,
  so ``live_validation_overhead_pct`` counts a tenth of it);
* ``gx``: the full GX validation of the same batch (``--gx``).

    python -m infra.bench --only quality [--quick]       # make bench: 1,000 and 10,000 rows (quick: 1,000)
    python -m infra.bench.quality --rows 1000 10000 --gx  # other sizes, and the full GX run
"""

from __future__ import annotations

import argparse
import logging
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql.types import StringType, StructField, StructType

from expectations.results import record
from expectations.suites import SUITES, DqSettings
from expectations.validate import Validator
from lake.tables import SILVER_TRADES, Lake, LakeSettings

BENCH_SCHEMA = StructType(
    [
        *SILVER_TRADES.schema.fields,
        StructField("_raw", StringType(), True),
        StructField("_error", StringType(), True),
    ]
)


def sample_rows(n: int, *, now: datetime, batch: int = 0) -> list[tuple[object, ...]]:
    """``n`` normalized trades of 20 markets, every 50th bad (negative price, bad side, future time)."""
    out = []
    for i in range(n):
        sym = f"C{i % 20}"
        event = now - timedelta(seconds=2, milliseconds=i % 1000)
        price, side, error = Decimal("100.25") + i % 7, ("buy", "sell")[i % 2], None
        if i % 50 == 7:
            price = Decimal("-1")
        elif i % 50 == 17:
            side = "hold"
        elif i % 50 == 27:
            event = now + timedelta(minutes=10)
        elif i % 50 == 37:
            error = "unknown_market"
        row = {
            "exchange": "binance",
            "symbol": f"{sym}-USDT",
            "native_symbol": f"{sym}USDT",
            "base": sym,
            "quote": "USDT",
            "trade_id": f"{batch}-{i}",
            "price": price,
            "size": Decimal("0.5"),
            "side": side,
            "event_ts": event,
            "recv_ts": now - timedelta(seconds=1),
            "source": "ws",
            "trade_date": event.date(),
            "_raw": f'{{"t":{i}}}',
            "_error": error,
        }
        out.append(tuple(row.get(f.name) for f in BENCH_SCHEMA.fields))
    return out


def _median_ms(fn: Callable[[int], None], repeats: int) -> float:
    times = []
    for i in range(repeats + 1):
        started = time.perf_counter()
        fn(i)
        times.append((time.perf_counter() - started) * 1000)
    return statistics.median(times[1:])


def run_bench(
    spark: SparkSession,
    *,
    sizes: Sequence[int],
    repeats: int = 5,
    settings: DqSettings | None = None,
    gx: bool = False,
) -> Iterator[dict[str, float]]:
    """Yield the figures of each batch size (see the module doc; :func:`describe` as a line)."""
    validator = Validator(settings)
    with tempfile.TemporaryDirectory(prefix="dq-bench-") as tmp:
        for n in sizes:
            yield _bench_size(spark, validator, n=n, repeats=repeats, gx=gx, tmp=Path(tmp) / str(n))


def describe(figures: dict[str, float]) -> str:
    """One line of one batch size's figures."""
    f = figures
    line = (
        f"rows={f['rows']:.0f}: write {f['write_ms']:.0f} ms, validate {f['validate_ms']:.0f} ms, "
        f"validated write {f['validated_write_ms']:.0f} ms (+{f['validated_write_overhead_pct']:.0f} %; "
        f"validate alone = {f['validate_share_of_write_pct']:.0f} % of the write, median of rounds); "
        f"as live (results appended every 10 batches): {f['live_validated_write_ms']:.0f} ms "
        f"(+{f['live_validation_overhead_pct']:.0f} %)"
    )
    if "full_gx_ms" in f:
        line += f", full GX run {f['full_gx_ms']:.0f} ms"
    return line


def _bench_size(
    spark: SparkSession, validator: Validator, *, n: int, repeats: int, gx: bool, tmp: Path
) -> dict[str, float]:
    from spark_jobs.runtime import SilverSettings
    from spark_jobs.silver import KeyIndex, write_priced_batch
    from spark_jobs.silver_trades import JOB
    from spark_jobs.usdt import RateBook

    silver = SilverSettings()
    now = datetime.now(UTC)
    frames: dict[int, DataFrame] = {}
    for i in range(2 * repeats + 2):  # each run its own trade ids: appends are never deduped away
        path = str(tmp / f"src-{i}")
        spark.createDataFrame(sample_rows(n, now=now, batch=i), BENCH_SCHEMA).write.parquet(path)
        frames[i] = spark.read.parquet(path)
    plain, checked = (
        Lake(LakeSettings(root=str(tmp / "plain"))),
        Lake(LakeSettings(root=str(tmp / "checked"))),
    )
    book, index = RateBook(), KeyIndex()
    vbook, vindex = RateBook(), KeyIndex()
    table = SILVER_TRADES.name

    def write(i: int) -> None:
        write_priced_batch(
            frames[i],
            target=JOB.target,
            lake=plain,
            settings=silver,
            app_id="bench-w",
            batch_id=i,
            book=book,
            index=index,
        )

    def validate_only(i: int) -> None:
        validator.validate(frames[i], table=table, batch_id=i, now=now, run_gx=False).release()

    def validated_write(i: int) -> None:
        # What the silver writers do: validation rides on the writer's key collect.
        written = write_priced_batch(
            frames[i + repeats + 1],
            target=JOB.target,
            lake=checked,
            settings=silver,
            app_id="bench-v",
            batch_id=i,
            book=vbook,
            index=vindex,
            validator=validator,
        )
        assert written.validated is not None and written.validated.engine == "spark"
        started = time.perf_counter()
        record(spark, [written.validated], lake=checked, app_id="bench-v-results", version=i)
        if i:
            runs["results"].append((time.perf_counter() - started) * 1000)

    # Interleaved, so a machine whose load changes (a shared one) weighs on the three alike.
    runs: dict[str, list[float]] = {"write": [], "validate": [], "validated": [], "results": []}
    for i in range(repeats + 1):
        for kind, fn in (("write", write), ("validate", validate_only), ("validated", validated_write)):
            started = time.perf_counter()
            fn(i)
            if i:  # the first round warms up
                runs[kind].append((time.perf_counter() - started) * 1000)
    w, val, vw, res = (statistics.median(runs[k]) for k in ("write", "validate", "validated", "results"))
    share = statistics.median(v / x for v, x in zip(runs["validate"], runs["write"], strict=True))
    # The live pipeline appends the results of 10 batches at once (spark_jobs.pipeline.QualityLog).
    live = vw - res + res / 10
    figures: dict[str, float] = {
        "rows": n,
        "write_ms": round(w),
        "validate_ms": round(val),
        "validated_write_ms": round(vw),
        "validated_write_overhead_pct": round(100 * (vw - w) / w),
        "results_append_ms": round(res),
        "live_validated_write_ms": round(live),
        "live_validation_overhead_pct": round(100 * (live - w) / w),
        "validate_share_of_write_pct": round(100 * share),
    }
    if gx:
        derived = SUITES[table].derived
        prepared = frames[0].where("_error IS NULL").withColumns({c: f() for c, f in derived.items()})
        g = _median_ms(lambda _i: validator.run_gx(prepared, table=table, now=now), max(2, repeats // 2))
        figures["full_gx_ms"] = round(g)
    return figures


def _spark(master: str | None = None) -> SparkSession:
    from lake.session import SparkSettings, build_spark

    cores = os.cpu_count() or 2
    return build_spark(
        SparkSettings(
            master=master or f"local[{cores}]",
            app_name="cryptolake-bench-quality",
            shuffle_partitions=cores,
            driver_memory="2g",
        )
    )


def run(*, quick: bool = False) -> dict[str, float | int | str]:
    """``make bench``'s figures: 1,000- and 10,000-row batches, 5 rounds (quick: 1,000 rows, 2)."""
    sizes, repeats = ((1000,), 2) if quick else ((1000, 10_000), 5)
    spark = _spark()
    out: dict[str, float | int | str] = {
        "batch": "silver.trades-shaped, 20 markets, 8 % bad rows; median of warm rounds",
        "rounds": repeats,
    }
    try:
        for figures in run_bench(spark, sizes=sizes, repeats=repeats):
            print(f"   {describe(figures)}", flush=True)
            n = int(figures["rows"])
            out |= {f"rows_{n}_{k}": v for k, v in figures.items() if k != "rows"}
    finally:
        spark.stop()
    return out


def main(argv: list[str] | None = None) -> int:
    """``python -m infra.bench.quality``: the figures of each batch size, one line each."""
    from lake.config import ConfigError, load_section, read_yaml
    from lake.session import build_spark
    from lake.settings import load_runtime

    parser = argparse.ArgumentParser(prog="python -m infra.bench.quality", description=__doc__)
    parser.add_argument("--config", help="YAML config (sections spark:, expectations:); env wins")
    parser.add_argument("--master", help="Spark master, e.g. local[2]")
    parser.add_argument("--rows", type=int, nargs="+", default=[1000, 10000])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--gx", action="store_true", help="also time the full GX validation")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    try:
        config = read_yaml(args.config)
        settings = load_section(DqSettings, "expectations", config=config)
        runtime = load_runtime(args.config, spark_overrides={"master": args.master})
    except ConfigError as exc:
        print(f"config error: {exc}", file=sys.stderr)
        return 2
    spark = build_spark(runtime.spark)
    try:
        for figures in run_bench(spark, sizes=args.rows, repeats=args.repeats, settings=settings, gx=args.gx):
            print(describe(figures), flush=True)
    finally:
        spark.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
