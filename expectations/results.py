"""``gold.dq_results``: one row per validated batch and table, idempotent per (suite, table, batch_id).

:func:`record` writes the results of one micro-batch (every table validated in it) in one Delta
commit, one of two ways:

* with ``app_id`` and ``version`` (a streaming writer: its query id and the micro-batch id): a blind
  append tagged ``txnAppId``/``txnVersion``. Delta skips it when the batch is replayed after a
  crash, so each (suite, table, batch_id) of that writer is written once. This is the cheap way:
  a MERGE costs about 5x an append here (figures in ``docs/quality.md``);
* without them: a MERGE on the key (the same batch recorded again overwrites its row), bounded to
  the batch ids written so it reads only the files that can hold them.

:class:`ResultsBuffer` amortizes that commit: it keeps the rows on the driver and MERGEs them every
``flush_every`` batches (a crash loses at most the rows not flushed yet; quarantine and the
Prometheus metrics have them anyway), and a failed flush is logged and retried, never raised.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from typing import Any

from pyspark.sql import SparkSession

from expectations.validate import Validated
from lake.delta_io import append, dedupe_latest, merge
from lake.tables import GOLD_DQ_RESULTS, Lake

logger = logging.getLogger(__name__)


def result_row(v: Validated) -> tuple[Any, ...]:
    """One ``gold.dq_results`` row, in the table's column order."""
    details = json.dumps(v.gx_result, default=str) if v.gx_result is not None else None
    expectations = [
        (r.name, r.expectation_type, r.severity, r.evaluated, r.failed, r.success) for r in v.results
    ]
    return (
        v.suite,
        v.table,
        v.batch_id,
        v.success,
        v.rows - v.parse_rejected,
        v.failed,
        v.quarantined,
        expectations,
        v.engine,
        v.error,
        details,
        round(v.elapsed_ms),
        v.checked_ts,
        v.checked_ts.date(),
    )


def _merge(spark: SparkSession, rows: Sequence[tuple[Any, ...]], *, lake: Lake) -> None:
    df = spark.createDataFrame(list(rows), GOLD_DQ_RESULTS.schema)
    ids = sorted({r[2] for r in rows})
    merge(
        dedupe_latest(df, GOLD_DQ_RESULTS.key, order_by=("checked_ts",)),
        lake=lake,
        name=GOLD_DQ_RESULTS.name,
        mode="upsert",
        target_scope=f"t.batch_id IN ({', '.join(str(i) for i in ids)})",
    )


def record(
    spark: SparkSession,
    validated: Sequence[Validated],
    *,
    lake: Lake,
    app_id: str | None = None,
    version: int | None = None,
) -> None:
    """Write these batches' results to ``gold.dq_results`` in one commit (see the module doc)."""
    if not validated:
        return
    rows = [result_row(v) for v in validated]
    if app_id is not None and version is not None:
        df = spark.createDataFrame(rows, GOLD_DQ_RESULTS.schema)
        append(df, lake=lake, name=GOLD_DQ_RESULTS.name, app_id=app_id, version=version)
        return
    _merge(spark, rows, lake=lake)


class ResultsBuffer:
    """``gold.dq_results`` rows held on the driver, MERGEd every ``flush_every`` batches.

    ``max_rows`` bounds what a sink that keeps failing can pile up (the oldest rows are dropped,
    with a warning).
    """

    def __init__(self, *, lake: Lake, flush_every: int = 10, max_rows: int = 10_000) -> None:
        self._lake = lake
        self._flush_every = flush_every
        self._max_rows = max_rows
        self._rows: list[tuple[Any, ...]] = []
        self._batches = 0

    @property
    def pending(self) -> int:
        return len(self._rows)

    def add(self, spark: SparkSession, validated: Sequence[Validated]) -> None:
        """Keep one micro-batch's results; flush when ``flush_every`` batches are held."""
        self._rows.extend(result_row(v) for v in validated)
        self._batches += 1
        if len(self._rows) > self._max_rows:
            dropped = len(self._rows) - self._max_rows
            logger.warning("gold.dq_results: dropping %d unwritten rows (flushes keep failing)", dropped)
            del self._rows[:dropped]
        if self._batches >= self._flush_every:
            self.flush(spark)

    def flush(self, spark: SparkSession) -> None:
        """MERGE what is held (on a clean stop too); a failure is logged and retried at the next flush."""
        if not self._rows:
            return
        try:
            _merge(spark, self._rows, lake=self._lake)
        except Exception:
            logger.exception(
                "writing %d gold.dq_results rows failed; kept for the next flush", len(self._rows)
            )
            return
        self._rows.clear()
        self._batches = 0
