"""Proves the jars are real: Delta MERGE, SQL, the Delta log, and a streaming read/write."""

from __future__ import annotations

import json
from datetime import datetime
from decimal import Decimal
from pathlib import Path

import pytest
from chispa import assert_df_equality
from pyspark.sql import SparkSession

from lake.delta_io import BATCHES, append, merge
from lake.tables import SILVER_MARKETS, SILVER_USDT_RATES, Lake

pytestmark = pytest.mark.spark


def _rates(spark: SparkSession, rows: list[tuple]) -> object:
    return spark.createDataFrame(rows, SILVER_USDT_RATES.schema)


def _delta_log_versions(path: str) -> list[dict]:
    log = Path(path) / "_delta_log"
    commits = []
    for file in sorted(log.glob("*.json")):
        actions = [json.loads(line) for line in file.read_text().splitlines()]
        info = next(a["commitInfo"] for a in actions if "commitInfo" in a)
        commits.append({"version": int(file.stem), "operation": info["operation"], "actions": actions})
    return commits


def test_merge_twice_is_idempotent_and_readable_with_sql(spark: SparkSession, lake: Lake) -> None:
    minute = datetime(2026, 11, 1, 12, 0)
    batch = _rates(
        spark,
        [
            ("BTC", minute, Decimal("97000.5"), "direct"),
            ("ETH", minute, Decimal("3500.25"), "direct"),
            ("ETH", minute, Decimal("3500.25"), "direct"),  # in-batch duplicate
        ],
    )
    merge(batch, lake=lake, name="silver.usdt_rates", mode="upsert", dedupe=True)
    merge(batch, lake=lake, name="silver.usdt_rates", mode="upsert", dedupe=True)

    path = lake.path("silver.usdt_rates")
    spark.read.format("delta").load(path).createOrReplaceTempView("rates")
    got = spark.sql("SELECT asset, minute, rate_to_usdt, method FROM rates ORDER BY asset")
    expected = _rates(
        spark,
        [
            ("BTC", minute, Decimal("97000.500000000000000000"), "direct"),
            ("ETH", minute, Decimal("3500.25"), "direct"),
        ],
    )
    assert_df_equality(got, expected, ignore_nullable=True)

    commits = _delta_log_versions(path)
    assert [c["version"] for c in commits] == [0, 1, 2]
    assert commits[0]["operation"] == "CREATE TABLE"
    assert [c["operation"] for c in commits[1:]] == ["MERGE", "MERGE"]
    history = spark.sql(f"DESCRIBE HISTORY delta.`{path}`").select("version", "operation").orderBy("version")
    assert [tuple(r) for r in history.collect()] == [(0, "CREATE TABLE"), (1, "MERGE"), (2, "MERGE")]
    # The second MERGE matched every row and inserted none: the data files did not grow.
    second = next(a for a in commits[2]["actions"] if "commitInfo" in a)["commitInfo"]
    assert second["operationMetrics"]["numTargetRowsInserted"] == "0"


def test_merge_with_same_txn_version_is_skipped_after_a_restart(spark: SparkSession, lake: Lake) -> None:
    minute = datetime(2026, 11, 1, 12, 1)
    first = _rates(spark, [("BTC", minute, Decimal("1"), "direct")])
    replay = _rates(spark, [("BTC", minute, Decimal("2"), "direct")])
    merge(first, lake=lake, name="silver.usdt_rates", app_id="query-a", version=7, mode="upsert", dedupe=True)
    merge(
        replay, lake=lake, name="silver.usdt_rates", app_id="query-a", version=7, mode="upsert", dedupe=True
    )  # replayed batch 7
    rate = spark.read.format("delta").load(lake.path("silver.usdt_rates")).collect()[0]["rate_to_usdt"]
    assert rate == Decimal("1")
    merge(
        replay, lake=lake, name="silver.usdt_rates", app_id="query-a", version=8, mode="upsert", dedupe=True
    )
    rate = spark.read.format("delta").load(lake.path("silver.usdt_rates")).collect()[0]["rate_to_usdt"]
    assert rate == Decimal("2")


def test_streaming_query_reads_and_writes_delta_with_available_now(spark: SparkSession, lake: Lake) -> None:
    source_path = lake.path("silver.markets")
    rows = [
        ("binance", "BTCUSDT", "BTC-USDT", "BTC", "USDT", "TRADING", None),
        ("coinbase", "BTC-USD", "BTC-USD", "BTC", "USD", "online", None),
    ]
    spark.createDataFrame(rows, SILVER_MARKETS.schema).write.format("delta").save(source_path)

    sink_path = str(Path(lake.root) / "copy")
    query = (
        spark.readStream.format("delta")
        .load(source_path)
        .writeStream.format("delta")
        .option("checkpointLocation", lake.checkpoint("copy"))
        .trigger(availableNow=True)
        .start(sink_path)
    )
    query.awaitTermination(120)
    assert query.exception() is None
    copied = spark.read.format("delta").load(sink_path).orderBy("exchange")
    assert [(r.exchange, r.symbol) for r in copied.collect()] == [
        ("binance", "BTC-USDT"),
        ("coinbase", "BTC-USD"),
    ]

    # A second availableNow run over new input picks up only the new row (the checkpoint works).
    more = [("kucoin", "ETH-USDT", "ETH-USDT", "ETH", "USDT", "trading", None)]
    spark.createDataFrame(more, SILVER_MARKETS.schema).write.format("delta").mode("append").save(source_path)
    query = (
        spark.readStream.format("delta")
        .load(source_path)
        .writeStream.format("delta")
        .option("checkpointLocation", lake.checkpoint("copy"))
        .trigger(availableNow=True)
        .start(sink_path)
    )
    query.awaitTermination(120)
    assert spark.read.format("delta").load(sink_path).count() == 3


def test_an_append_replayed_with_the_same_batch_is_skipped_even_after_a_restart(
    spark: SparkSession, lake: Lake
) -> None:
    minute = datetime(2026, 11, 1, 12, 1)
    rows = _rates(spark, [("BTC", minute, Decimal("1"), "direct")])
    path = lake.path("silver.usdt_rates")

    def count() -> int:
        return spark.read.format("delta").load(path).count()

    append(rows, lake=lake, name="silver.usdt_rates", app_id="query-a", version=3)
    append(rows, lake=lake, name="silver.usdt_rates", app_id="query-a", version=3)  # replayed in-process
    assert count() == 1
    BATCHES.forget()  # a new process knows only the table's history
    append(rows, lake=lake, name="silver.usdt_rates", app_id="query-a", version=2)
    append(rows, lake=lake, name="silver.usdt_rates", app_id="query-a", version=3)
    assert count() == 1
    append(rows, lake=lake, name="silver.usdt_rates", app_id="query-b", version=3)  # another writer
    append(rows, lake=lake, name="silver.usdt_rates", app_id="query-a", version=4)
    assert count() == 3
    BATCHES.forget()
    append(rows, lake=lake, name="silver.usdt_rates", app_id="query-b", version=3)
    assert count() == 3
    tags = [
        json.loads(next(a for a in c["actions"] if "commitInfo" in a)["commitInfo"]["userMetadata"])
        for c in _delta_log_versions(path)[1:]
    ]
    assert tags == [
        {"writer": "query-a", "batch": 3},
        {"writer": "query-b", "batch": 3},
        {"writer": "query-a", "batch": 4},
    ]
