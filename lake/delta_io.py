"""Delta table I/O shared by every job: create from the registry, idempotent appends and MERGEs.

Every MERGE goes through :func:`merge`, its ``mode`` one of :data:`MergeMode`.

Streaming jobs write from ``foreachBatch`` with their writer id and the micro-batch id, so a batch
replayed after a crash does not apply twice: :func:`append` tags its commit and skips a batch the
writer already committed (:class:`CommittedBatches`); the MERGEs use Delta's
``txnAppId``/``txnVersion``, which Delta checks itself (they are off the live hot path).
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Literal

from delta.tables import DeltaTable
from pyspark.sql import Column, DataFrame, SparkSession, Window
from pyspark.sql import functions as F

from lake.tables import Lake, TableSpec, table

logger = logging.getLogger(__name__)

_TXN_APP_ID = "spark.databricks.delta.write.txnAppId"
_TXN_VERSION = "spark.databricks.delta.write.txnVersion"


#: Commits between two Delta checkpoints. Delta's default (10) makes every 10th live micro-batch
#: rewrite the whole table state as a parquet checkpoint: 2-5 s spikes per table on 2 cores once
#: bronze holds a few thousand files. The log in between is replayed incrementally in-process.
CHECKPOINT_INTERVAL = 100

#: Table paths this process has created or found: checking again costs a catalog round trip per write.
_KNOWN: set[str] = set()


def ensure_table(spark: SparkSession, lake: Lake, name: str) -> DeltaTable:
    """Create the registry table at its lake path if it does not exist; return it."""
    spec = table(name)
    path = lake.path(name)
    if path in _KNOWN:
        return DeltaTable.forPath(spark, path)
    builder = (
        DeltaTable.createIfNotExists(spark)
        .location(path)
        .addColumns(spec.schema)
        .property("delta.checkpointInterval", str(CHECKPOINT_INTERVAL))
    )
    if spec.partition_by:
        builder = builder.partitionedBy(*spec.partition_by)
    created = builder.execute()
    _KNOWN.add(path)
    return created


def ensure_tables(spark: SparkSession, lake: Lake, names: Sequence[str]) -> None:
    """Create these tables one after the other (concurrent first commits of one table conflict)."""
    for name in names:
        ensure_table(spark, lake, name)


def table_version(spark: SparkSession, lake: Lake, name: str) -> int:
    """The table's current version (reads the tail of its transaction log, no data)."""
    history = ensure_table(spark, lake, name).history(1).select("version").first()
    return -1 if history is None else int(history[0])


def dedupe_first(df: DataFrame, key: Sequence[Column | str], order: Sequence[Column]) -> DataFrame:
    """One row per key: the first by ``order`` (``row_number`` over a window by key).

    The one window dedupe of the project: silver's in-batch dedupe, gold's latest quotes, the
    rate pick, ... Rows that tie on ``order`` keep an arbitrary one.
    """
    w = Window.partitionBy(*key).orderBy(*order)
    return df.withColumn("_n", F.row_number().over(w)).where("_n = 1").drop("_n")


def dedupe_latest(df: DataFrame, key: Sequence[str], *, order_by: Sequence[str] = ()) -> DataFrame:
    """One row per key: the last by ``order_by`` (descending), so a MERGE source has no duplicate keys."""
    if not order_by:
        return df.dropDuplicates(list(key))
    return dedupe_first(df, key, [F.col(c).desc_nulls_last() for c in order_by])


@contextmanager
def idempotent_write(spark: SparkSession, *, app_id: str | None, version: int | None) -> Iterator[None]:
    """Tag the Delta writes inside the block with (app_id, version); Delta skips repeats."""
    if app_id is None or version is None:
        yield
        return
    spark.conf.set(_TXN_APP_ID, app_id)
    spark.conf.set(_TXN_VERSION, str(version))
    try:
        yield
    finally:
        spark.conf.unset(_TXN_APP_ID)
        spark.conf.unset(_TXN_VERSION)


def append(
    df: DataFrame,
    *,
    lake: Lake,
    name: str,
    app_id: str | None = None,
    version: int | None = None,
) -> None:
    """Append ``df`` to table ``name``, idempotent under (app_id, version) when given.

    A batch whose version is not newer than the writer's last committed one is skipped
    (:class:`CommittedBatches`), so a micro-batch replayed after a crash is not appended twice.
    """
    spec = table(name)
    spark = df.sparkSession
    path = lake.path(name)
    ensure_table(spark, lake, name)
    writer = df.select(*spec.columns).write.format("delta").mode("append")
    if app_id is not None and version is not None:
        if version <= BATCHES.last(spark, path, app_id):
            logger.info("%s: batch %d of %s already committed, skipped", name, version, app_id)
            return
        writer = writer.option("userMetadata", json.dumps({"writer": app_id, "batch": version}))
    writer.save(path)
    if app_id is not None and version is not None:
        BATCHES.committed(path, app_id, version)


class CommittedBatches:
    """The newest batch id each writer has appended to each table: what makes a replay a no-op.

    Delta's own ``txnAppId``/``txnVersion`` look the writer up in the table state on every write,
    which measured ~1 s per append on the 2-core machine (a 400-row append: 0.23 s without, 1.0-1.3 s
    with). Instead each append records ``{"writer", "batch"}`` in its commit's ``userMetadata``
    (atomic with the data), and the writer's newest batch is read from the table's history once
    per process (the newest :data:`HISTORY_LOOKBACK` commits), then kept here as it appends.
    Sound because each writer id has one writer at a time (a streaming query and its checkpoint).
    """

    #: Commits read back at start: a replayed batch is the writer's newest commit, unless other
    #: writers committed this many times to the table between the crash and the restart.
    HISTORY_LOOKBACK = 1000

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._last: dict[tuple[str, str], int] = {}

    def last(self, spark: SparkSession, path: str, writer: str) -> int:
        """The newest batch ``writer`` committed to the table at ``path`` (-1: none)."""
        with self._lock:
            known = self._last.get((path, writer))
        if known is not None:
            return known
        tags = (
            DeltaTable.forPath(spark, path)
            .history(self.HISTORY_LOOKBACK)
            .where(F.get_json_object("userMetadata", "$.writer") == writer)
            .select(F.max(F.get_json_object("userMetadata", "$.batch").cast("long")))
            .first()
        )
        newest = -1 if tags is None or tags[0] is None else int(tags[0])
        with self._lock:
            return self._last.setdefault((path, writer), newest)

    def committed(self, path: str, writer: str, batch: int) -> None:
        with self._lock:
            self._last[(path, writer)] = max(batch, self._last.get((path, writer), -1))

    def forget(self) -> None:
        """Drop what this process knows (as a restarted process would); tests use it."""
        with self._lock:
            self._last.clear()


BATCHES = CommittedBatches()


#: What a MERGE does with a source row: ``upsert`` inserts new keys and updates matched rows,
#: ``insert_only`` inserts new keys and never touches a stored row (first write wins),
#: ``update_only`` updates matched rows and inserts nothing (re-pricing stored rows).
MergeMode = Literal["upsert", "insert_only", "update_only"]


def merge(
    df: DataFrame,
    *,
    lake: Lake,
    name: str,
    mode: MergeMode,
    key: Sequence[str] | None = None,
    dedupe: bool = False,
    order_by: Sequence[str] = (),
    update_columns: Sequence[str] | None = None,
    update_condition: str | None = None,
    target_scope: str | None = None,
    app_id: str | None = None,
    version: int | None = None,
) -> None:
    """MERGE ``df`` into table ``name`` on ``key`` (default: the table's natural key, null-safe).

    ``df`` holds the table's columns and one row per key; extra columns may be used in the
    conditions, which are SQL over the aliases ``s`` (source) and ``t`` (target). ``dedupe``
    first keeps one row per key, the last by ``order_by`` (:func:`dedupe_latest`).

    ``mode`` (:data:`MergeMode`): the matched rows of ``upsert`` and ``update_only`` get
    ``update_columns`` (``None``: every column), only where ``update_condition`` holds when given;
    ``insert_only`` takes neither. ``target_scope`` (SQL over ``t``) bounds the target rows a source
    row can match: Delta reads only the files whose partition values and statistics can satisfy
    it. ``app_id``/``version`` make the MERGE idempotent across query restarts (Delta's
    ``txnAppId``/``txnVersion``: a repeated version is skipped).
    """
    if mode == "insert_only" and (update_columns is not None or update_condition is not None):
        raise ValueError("an insert_only MERGE updates nothing: no update_columns or update_condition")
    if mode != "insert_only" and update_columns is not None and not update_columns:
        raise ValueError(f"a {mode} MERGE updates some columns: update_columns is empty")
    spark = df.sparkSession
    spec: TableSpec = table(name)
    key = tuple(key or spec.key)
    target = ensure_table(spark, lake, name)
    source = dedupe_latest(df, key, order_by=order_by) if dedupe else df
    condition = " AND ".join(f"t.`{k}` <=> s.`{k}`" for k in key)
    if target_scope:
        condition = f"({target_scope}) AND {condition}"
    builder = target.alias("t").merge(source.alias("s"), condition)
    if mode != "insert_only":
        columns = spec.columns if update_columns is None else list(update_columns)
        builder = builder.whenMatchedUpdate(condition=update_condition, set={c: f"s.`{c}`" for c in columns})
    if mode != "update_only":
        values: dict[str, str | Column] = {c: f"s.`{c}`" for c in spec.columns}
        builder = builder.whenNotMatchedInsert(values=values)
    with idempotent_write(spark, app_id=app_id, version=version):
        builder.execute()
