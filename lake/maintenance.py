"""Table maintenance: compaction with Z-order (``python -m lake optimize``) and ``vacuum``.

Streaming writes leave many small files (one or more per micro-batch and partition). ``optimize``
rewrites them into large ones, Z-ordered by symbol and time so that a query for a few symbols over
a time range reads few files (Delta skips files by their min/max statistics); the rewrite is a
``dataChange=false`` commit, so streams reading the table do not see it as new data. ``vacuum``
deletes the files no version newer than the retention needs (the ones compaction, MERGEs and
re-pricing replaced): time travel and streams that are behind need those, so keep the retention
longer than the longest a reader can lag (default 168 h, Delta's own floor; a shorter one is
allowed only explicitly).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass

from pyspark.sql import SparkSession

from lake.tables import TABLES, Lake

logger = logging.getLogger(__name__)

#: Z-order columns per table (never a partition column); tables not listed are only compacted.
ZORDER: dict[str, tuple[str, ...]] = {
    "silver.trades": ("symbol", "event_ts"),
    "silver.tickers": ("symbol", "event_ts"),
    "silver.l1_quotes": ("symbol", "event_ts"),
    "gold.ohlcv_1m": ("symbol", "minute"),
    "gold.ohlcv_1m_composite": ("base", "minute"),
    "gold.l1_1s": ("symbol", "second"),
    "gold.exchange_volume_daily": ("symbol", "trade_date"),
}

#: Delta refuses a shorter retention unless its safety check is turned off for the call.
DELTA_MIN_RETENTION_HOURS = 168.0


@dataclass(frozen=True, kw_only=True)
class MaintenanceSettings:
    """YAML section ``maintenance:``, env ``CRYPTOLAKE_MAINTENANCE_<KEY>``.

    ``vacuum_retention_hours``: files older than this that no current version needs are deleted;
    below 168 h only with ``allow_short_retention`` (readers lagging more than it can fail).
    """

    vacuum_retention_hours: float = DELTA_MIN_RETENTION_HOURS
    allow_short_retention: bool = False
    zorder: bool = True


@dataclass(frozen=True)
class Outcome:
    table: str
    metrics: dict[str, object]
    seconds: float


def _existing(spark: SparkSession, lake: Lake, names: Sequence[str] | None) -> list[str]:
    from delta.tables import DeltaTable

    unknown = sorted(set(names or ()) - set(TABLES))
    if unknown:
        raise KeyError(f"unknown table(s) {', '.join(unknown)}; known tables: {', '.join(TABLES)}")
    return [n for n in (names or TABLES) if DeltaTable.isDeltaTable(spark, lake.path(n))]


def optimize(
    spark: SparkSession, lake: Lake, names: Sequence[str] | None = None, *, zorder: bool = True
) -> list[Outcome]:
    """Compact every existing table (or ``names``), Z-ordered by :data:`ZORDER` when ``zorder``."""
    from delta.tables import DeltaTable

    out = []
    for name in _existing(spark, lake, names):
        started = time.perf_counter()
        builder = DeltaTable.forPath(spark, lake.path(name)).optimize()
        columns = ZORDER.get(name, ()) if zorder else ()
        result = builder.executeZOrderBy(*columns) if columns else builder.executeCompaction()
        row = result.select("metrics.numFilesAdded", "metrics.numFilesRemoved").first()
        metrics = {"files_added": row[0], "files_removed": row[1]} if row is not None else {}
        out.append(Outcome(name, metrics, time.perf_counter() - started))
        logger.info("optimized %s: %s", name, metrics)
    return out


def vacuum(
    spark: SparkSession,
    lake: Lake,
    names: Sequence[str] | None = None,
    *,
    retention_hours: float = DELTA_MIN_RETENTION_HOURS,
    allow_short_retention: bool = False,
) -> list[Outcome]:
    """Delete the files of every existing table (or ``names``) unneeded for ``retention_hours``."""
    from delta.tables import DeltaTable

    if retention_hours < DELTA_MIN_RETENTION_HOURS and not allow_short_retention:
        raise ValueError(
            f"a vacuum retention of {retention_hours} h is below Delta's {DELTA_MIN_RETENTION_HOURS:.0f} h:"
            " streams and time travel lagging more than it break; pass --allow-short-retention"
            " (maintenance.allow_short_retention) to do it anyway"
        )
    check = "spark.databricks.delta.retentionDurationCheck.enabled"
    out = []
    spark.conf.set(check, "false" if allow_short_retention else "true")
    try:
        for name in _existing(spark, lake, names):
            started = time.perf_counter()
            path = lake.path(name)
            before = _file_count(spark, path)
            DeltaTable.forPath(spark, path).vacuum(retention_hours)
            after = _file_count(spark, path)
            metrics: dict[str, object] = {"data_files_before": before, "data_files_after": after}
            out.append(Outcome(name, metrics, time.perf_counter() - started))
            logger.info("vacuumed %s: %s", name, metrics)
    finally:
        spark.conf.unset(check)
    return out


def _file_count(spark: SparkSession, path: str) -> int:
    """Parquet files under the table folder (the log excluded), via Hadoop's file system."""
    jvm = spark.sparkContext._jvm
    assert jvm is not None
    hpath = jvm.org.apache.hadoop.fs.Path(path)
    fs = hpath.getFileSystem(spark.sparkContext._jsc.hadoopConfiguration())  # type: ignore[union-attr]
    files = fs.listFiles(hpath, True)
    n = 0
    while files.hasNext():
        p = files.next().getPath().toString()
        if p.endswith(".parquet") and "/_delta_log/" not in p:
            n += 1
    return n
