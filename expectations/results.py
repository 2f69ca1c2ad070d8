"""``gold.dq_results``: one row per validated batch and table, idempotent per (suite, table, batch_id).

:func:`record` writes the results of one micro-batch (every table validated in it) in one Delta
commit, one of two ways:

* with ``app_id`` and ``version`` (a streaming writer: its query id and the micro-batch id): a blind
  append tagged ``txnAppId``/``txnVersion``. Delta skips it when the batch is replayed after a
  crash, so each (suite, table, batch_id) of that writer is written once. This is the cheap way:
  a MERGE costs about 5x an append here (figures in ``docs/quality.md``);
* without them: a MERGE on the key (the same batch recorded again overwrites its row), bounded to
  the batch ids written so it reads only the files that can hold them.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from pyspark.sql import SparkSession

from expectations.validate import Validated
from lake.delta_io import append, dedupe_latest, merge_rows
from lake.tables import GOLD_DQ_RESULTS, Lake


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
    df = spark.createDataFrame([result_row(v) for v in validated], GOLD_DQ_RESULTS.schema)
    if app_id is not None and version is not None:
        append(df, lake=lake, name=GOLD_DQ_RESULTS.name, app_id=app_id, version=version)
        return
    ids = sorted({v.batch_id for v in validated})
    merge_rows(
        dedupe_latest(df, GOLD_DQ_RESULTS.key, order_by=("checked_ts",)),
        lake=lake,
        name=GOLD_DQ_RESULTS.name,
        target_scope=f"t.batch_id IN ({', '.join(str(i) for i in ids)})",
    )
