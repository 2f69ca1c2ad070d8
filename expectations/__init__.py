"""Data quality: one Great Expectations suite per table, micro-batch validation, quarantine, replay.

The live pipeline calls, inside ``foreachBatch`` and before the write::

    v = validate(rows, table="silver.trades", batch_id=batch_id)   # never raises
    write_quarantine(v.bad, ...)        # silver.quarantine rows: reason "expectation:<names>"
    write the rows of v.good            # the input's columns, failing rows removed
    record(spark, [v, ...], lake=lake)  # gold.dq_results, idempotent per (suite, table, batch_id)
    v.release()

See ``docs/quality.md``.
"""

from __future__ import annotations

from expectations.results import record
from expectations.suites import SUITES, DqSettings, suite_for
from expectations.validate import REASON_PREFIX, ExpectationResult, Validated, Validator, validate

__all__ = [
    "REASON_PREFIX",
    "SUITES",
    "DqSettings",
    "ExpectationResult",
    "Validated",
    "Validator",
    "record",
    "suite_for",
    "validate",
]
