"""Data quality: one Great Expectations suite per table, micro-batch validation, quarantine, replay.

The live pipeline calls, inside ``foreachBatch`` and before the write::

    v = validate(rows, table="silver.trades", batch_id=batch_id)   # never raises
    write_quarantine(v.bad, ...)        # silver.quarantine rows: reason "expectation:<names>"
    write the rows of v.good            # the input's columns, failing rows removed
    record(spark, [v, ...], lake=lake, app_id=..., version=batch_id)  # gold.dq_results, once per batch
    v.release()

See ``docs/quality.md``. The names below are imported lazily: importing Great Expectations pulls in
``pyspark.sql.connect``, which calls ``sys.exit(0)`` when imported while ``__main__`` is not set up
yet (``python -c``, and ``python -m expectations`` while this package is imported first).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from expectations.results import ResultsBuffer, record
    from expectations.suites import SUITES, DqSettings, suite_for
    from expectations.validate import REASON_PREFIX, ExpectationResult, Validated, Validator, validate

_WHERE = {
    "record": "expectations.results",
    "ResultsBuffer": "expectations.results",
    "SUITES": "expectations.suites",
    "DqSettings": "expectations.suites",
    "suite_for": "expectations.suites",
    "REASON_PREFIX": "expectations.validate",
    "ExpectationResult": "expectations.validate",
    "Validated": "expectations.validate",
    "Validator": "expectations.validate",
    "validate": "expectations.validate",
}

__all__ = [
    "REASON_PREFIX",
    "SUITES",
    "DqSettings",
    "ExpectationResult",
    "ResultsBuffer",
    "Validated",
    "Validator",
    "record",
    "suite_for",
    "validate",
]


def __getattr__(name: str) -> Any:
    if name in _WHERE:
        return getattr(importlib.import_module(_WHERE[name]), name)
    raise AttributeError(f"module 'expectations' has no attribute {name!r}")
