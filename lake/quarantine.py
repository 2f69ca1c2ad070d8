"""Rows of ``silver.quarantine``: rejected rows kept as data, whichever stage rejected them.

Bronze (malformed envelopes), the silver parsers (``_error``) and data-quality validation
(``_dq_reason``) all quarantine through :func:`to_quarantine`, so every rejected row has the same
shape: its source table, exchange, the row as JSON, the reason, the batch and when.
"""

from __future__ import annotations

from pyspark.sql import DataFrame
from pyspark.sql import functions as F
from pyspark.sql.types import LongType, StringType


def to_quarantine(*, source_table: str, batch_id: int | None, reason_col: str = "_error"):  # type: ignore[no-untyped-def]
    """Rows of ``silver.quarantine`` from rejected rows: every non-internal column as JSON.

    Internal columns start with ``_`` except ``_raw`` (the item text), which is kept in the JSON.
    """

    def transform(df: DataFrame) -> DataFrame:
        kept = [c for c in df.columns if not c.startswith("_") or c == "_raw"]
        return df.select(
            F.lit(source_table).alias("source_table"),
            (F.col("exchange") if "exchange" in df.columns else F.lit(None).cast(StringType())).alias(
                "exchange"
            ),
            F.to_json(F.struct(*[F.col(c) for c in kept])).alias("row_json"),
            F.col(reason_col).alias("reason"),
            F.lit(batch_id).cast(LongType()).alias("batch_id"),
            F.current_timestamp().alias("quarantined_ts"),
        )

    return transform
