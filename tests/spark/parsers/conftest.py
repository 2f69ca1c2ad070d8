"""The ``silver.markets`` rows the parser tests normalize against, computed once per session."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from pyspark.sql import DataFrame, SparkSession

from tests.spark.envelopes import markets_df


@pytest.fixture(scope="session")
def markets(spark: SparkSession) -> Iterator[DataFrame]:
    """:func:`~tests.spark.envelopes.markets_df`, cached: each test's jobs join it."""
    df = markets_df(spark).cache()
    yield df
    df.unpersist()
