"""Replay: re-validate a table's quarantined rows with the current suite, re-insert those that pass.

    python -m spark_jobs.dq_replay --table silver.trades [--config cryptolake.yaml] [--master local[2]]

After a suite is fixed (a bound too tight, a symbol pattern too narrow), the rows it rejected are
still in ``silver.quarantine`` (``reason`` ``expectation:...``, the row as JSON). :func:`replay`
reads them back with the table's schema, validates them like a micro-batch and inserts the rows
that now pass with an insert-only MERGE on the table's natural key, so:

* running it again inserts nothing (idempotent), and a key already in the table (a twin that was
  accepted, or a row replayed before) is never overwritten;
* quarantine stays as it is: it is the log of what was rejected, when and why.

Rows the *parser* rejected (other reasons) are not replayed: their JSON holds what could be
parsed, not the frame; re-run silver from bronze for those. Priced silver tables get their USDT
columns from ``silver.usdt_rates`` (as a standalone silver job prices them).

It lives in ``spark_jobs`` (not ``expectations``) because it writes silver with silver's pricing:
the suites and the validator sit a layer below the Spark jobs, which call them on every batch.
"""

from __future__ import annotations

import argparse
import logging
import sys
from dataclasses import dataclass
from datetime import datetime

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql.types import StringType, StructField, StructType

from expectations.suites import DqSettings
from expectations.validate import REASON_PREFIX, Validator
from lake.delta_io import dedupe_first, ensure_table, merge, table_version
from lake.tables import SILVER_QUARANTINE, SILVER_USDT_RATES, Lake, table
from spark_jobs.columns import minute_of
from spark_jobs.runtime import read_table
from spark_jobs.usdt import PRICERS, attach_rates

logger = logging.getLogger(__name__)

#: The batch id replayed rows are validated under (never a stream's).
REPLAY_BATCH_ID = -1


@dataclass(frozen=True)
class ReplayReport:
    table: str
    #: Distinct quarantined rows re-validated.
    examined: int
    #: Of those, rows the current suite accepts.
    passing: int
    #: Rows inserted into the table (passing rows whose key was not there yet).
    inserted: int


def replay(
    spark: SparkSession,
    *,
    lake: Lake,
    table_name: str,
    settings: DqSettings | None = None,
    rate_carry_minutes: int = 5,
    now: datetime | None = None,
) -> ReplayReport:
    """Re-validate ``table_name``'s quarantined rows; insert those that pass (see the module doc)."""
    spec = table(table_name)
    schema = StructType([*[StructField(f.name, f.dataType, True) for f in spec.schema.fields]])
    has_raw = table_name.startswith("silver.")
    if has_raw:
        schema = schema.add(StructField("_raw", StringType(), True))
    quarantined = (
        read_table(spark, lake, SILVER_QUARANTINE.name)
        .where((F.col("source_table") == table_name) & F.col("reason").startswith(REASON_PREFIX))
        .select("row_json")
        .dropDuplicates(["row_json"])
    )
    rows = quarantined.select(F.from_json("row_json", schema).alias("r")).select("r.*")
    validated = Validator(settings).validate(rows, table=table_name, batch_id=REPLAY_BATCH_ID, now=now)
    try:
        if validated.error is not None:
            raise RuntimeError(f"replay of {table_name}: validation failed: {validated.error}")
        passing = validated.rows - validated.quarantined
        if passing == 0:
            return ReplayReport(table_name, validated.rows, 0, 0)
        good = validated.good
        if "recv_ts" in good.columns:  # first received wins, as in silver
            good = dedupe_first(good, spec.key, (F.col("recv_ts").asc(),))
        else:
            good = good.dropDuplicates(list(spec.key))
        if table_name in PRICERS:
            good = _price(spark, good, lake=lake, table_name=table_name, carry=rate_carry_minutes)
        before = table_version(spark, lake, table_name)
        merge(good.select(*spec.columns), lake=lake, name=table_name, mode="insert_only")
        inserted = _inserted_since(spark, lake, table_name, before)
        report = ReplayReport(table_name, validated.rows, passing, inserted)
        logger.info("replayed %s: %s", table_name, report)
        return report
    finally:
        validated.release()


def _price(spark: SparkSession, rows: DataFrame, *, lake: Lake, table_name: str, carry: int) -> DataFrame:
    """Set the USDT columns from ``silver.usdt_rates`` (the replayed minutes and ``carry`` before)."""
    spec = table(table_name)
    minute = minute_of("event_ts")
    span = rows.agg(F.min(minute).alias("lo"), F.max(minute).alias("hi")).first()
    rates = read_table(spark, lake, SILVER_USDT_RATES.name)
    if span is not None and span["lo"] is not None:
        lo = F.lit(span["lo"]) - F.expr(f"INTERVAL {carry} MINUTES")
        rates = rates.where(F.col("minute").between(lo, F.lit(span["hi"])))
    priced = rows.transform(attach_rates(rates, key=spec.key, carry_minutes=carry))
    return priced.transform(PRICERS[table_name])


def _inserted_since(spark: SparkSession, lake: Lake, table_name: str, version: int) -> int:
    """Rows our MERGE inserted: none if it committed nothing (Delta skips a MERGE that changes nothing)."""
    history = ensure_table(spark, lake, table_name).history(1)
    last = history.select("version", "operation", "operationMetrics").first()
    if last is None or last["version"] <= version or last["operation"] != "MERGE":
        return 0
    return int((last["operationMetrics"] or {}).get("numTargetRowsInserted", 0))


def main(argv: list[str] | None = None) -> int:
    """``python -m spark_jobs.dq_replay --table <name>``: replay one table, print what it did."""
    from expectations.suites import SUITES
    from lake.config import ConfigError, load_section, read_yaml
    from lake.session import build_spark
    from lake.settings import load_runtime

    parser = argparse.ArgumentParser(prog="python -m spark_jobs.dq_replay", description=__doc__)
    parser.add_argument("--config", help="YAML config (sections lake:, spark:, expectations:); env wins")
    parser.add_argument("--master", help="Spark master, e.g. local[2]")
    parser.add_argument("--table", required=True, choices=sorted(SUITES))
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
    report = replay(spark, lake=runtime.lake, table_name=args.table, settings=settings)
    print(
        f"{report.table}: {report.examined} quarantined rows re-validated, {report.passing} pass now, "
        f"{report.inserted} inserted"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
