"""What validation costs a micro-batch: ms per silver.trades-shaped batch, with and without it.

For each size, a batch of normalized trades (the shape ``write_priced_batch`` receives: the table's
columns with NULL USDT columns, ``_raw``, ``_error``; 2 % bad rows of several kinds) is written to
Parquet once and read back for every run, like a micro-batch's source. Timed, warm (the first run
of each kind is dropped), median of ``repeats``:

* ``write``: ``write_priced_batch`` alone (quarantine, dedupe, price, append to a fresh lake);
* ``validate``: :meth:`Validator.validate` (flag, persist, one counting job);
* ``validated write``: validate, append ``bad`` to ``silver.quarantine``, ``write_priced_batch``
  of ``good``, :func:`record` (append) to ``gold.dq_results``: what the pipeline would do;
* ``gx``: the full GX validation of the same batch (``--gx``).
"""

from __future__ import annotations

import statistics
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
) -> Iterator[str]:
    """Yield one line of figures per batch size (see the module doc)."""
    validator = Validator(settings)
    with tempfile.TemporaryDirectory(prefix="dq-bench-") as tmp:
        for n in sizes:
            yield _bench_size(spark, validator, n=n, repeats=repeats, gx=gx, tmp=Path(tmp) / str(n))


def _bench_size(
    spark: SparkSession, validator: Validator, *, n: int, repeats: int, gx: bool, tmp: Path
) -> str:
    from spark_jobs.runtime import SilverSettings, write_quarantine
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
        v = validator.validate(frames[i + repeats + 1], table=table, batch_id=i, now=now, run_gx=False)
        try:
            if v.quarantined:
                write_quarantine(v.bad, lake=checked, app_id="bench-v-dq", version=i)
            write_priced_batch(
                v.good,
                target=JOB.target,
                lake=checked,
                settings=silver,
                app_id="bench-v",
                batch_id=i,
                book=vbook,
                index=vindex,
            )
            record(spark, [v], lake=checked, app_id="bench-v-results", version=i)
        finally:
            v.release()

    # Interleaved, so a machine whose load changes (a shared one) weighs on the three alike.
    runs: dict[str, list[float]] = {"write": [], "validate": [], "validated": []}
    for i in range(repeats + 1):
        for kind, fn in (("write", write), ("validate", validate_only), ("validated", validated_write)):
            started = time.perf_counter()
            fn(i)
            if i:  # the first round warms up
                runs[kind].append((time.perf_counter() - started) * 1000)
    w, val, vw = (statistics.median(runs[k]) for k in ("write", "validate", "validated"))
    share = statistics.median(v / x for v, x in zip(runs["validate"], runs["write"], strict=True))
    line = (
        f"rows={n}: write {w:.0f} ms, validate {val:.0f} ms, validated write {vw:.0f} ms "
        f"(+{100 * (vw - w) / w:.0f} %; validate alone = {100 * share:.0f} % of the write, median of rounds)"
    )
    if gx:
        derived = SUITES[table].derived
        prepared = frames[0].where("_error IS NULL").withColumns({c: f() for c, f in derived.items()})
        g = _median_ms(lambda _i: validator.run_gx(prepared, table=table, now=now), max(2, repeats // 2))
        line += f", full GX run {g:.0f} ms"
    return line
