"""``gold.dq_results``: one row per validated batch and table, idempotent per (suite, table, batch_id).

:func:`record` writes the results of one micro-batch (every table validated in it) in one Delta
commit: a MERGE on the key (the same batch validated again, after a restart, overwrites its row),
bounded to the batch ids written so the MERGE reads only the files that can hold them.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from pyspark.sql import SparkSession

from expectations.validate import Validated
from lake.delta_io import dedupe_latest, merge_rows
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


def record(spark: SparkSession, validated: Sequence[Validated], *, lake: Lake) -> None:
    """Upsert these batches' results into ``gold.dq_results`` (one commit; nothing to do if empty)."""
    if not validated:
        return
    df = spark.createDataFrame([result_row(v) for v in validated], GOLD_DQ_RESULTS.schema)
    ids = sorted({v.batch_id for v in validated})
    merge_rows(
        dedupe_latest(df, GOLD_DQ_RESULTS.key, order_by=("checked_ts",)),
        lake=lake,
        name=GOLD_DQ_RESULTS.name,
        target_scope=f"t.batch_id IN ({', '.join(str(i) for i in ids)})",
    )
