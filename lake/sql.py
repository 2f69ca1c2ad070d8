"""SQL access to the lake: every registry table as a view named ``<layer>_<entity>``."""

from __future__ import annotations

from pyspark.sql import DataFrame, SparkSession

from lake.delta_io import ensure_table
from lake.tables import TABLES, Lake


def view_name(table_name: str) -> str:
    return table_name.replace(".", "_")


def register_views(spark: SparkSession, lake: Lake, *, create_missing: bool = False) -> list[str]:
    """Register each existing table (or all, creating empty ones) as a temp view; return the view names."""
    from delta.tables import DeltaTable

    registered = []
    for name in TABLES:
        path = lake.path(name)
        if create_missing:
            ensure_table(spark, lake, name)
        elif not DeltaTable.isDeltaTable(spark, path):
            continue
        spark.read.format("delta").load(path).createOrReplaceTempView(view_name(name))
        registered.append(view_name(name))
    return registered


def query(spark: SparkSession, lake: Lake, statement: str) -> DataFrame:
    """Run ``statement`` with the lake's tables available as views (``gold_ohlcv_1m`` ...)."""
    register_views(spark, lake)
    return spark.sql(statement)
