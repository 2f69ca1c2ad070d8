"""What bronze cannot use is quarantined with its reason: malformed envelopes and dead letters."""

from __future__ import annotations

import json

from pyspark.sql import SparkSession
from pyspark.sql.types import IntegerType, LongType, StringType, StructField, StructType

from spark_jobs.bronze_ingest import envelopes_to_bronze, rejected_to_quarantine
from tests.spark.envelopes import T0_NS, envelope

SOURCE_SCHEMA = StructType(
    [
        StructField("value", StringType()),
        StructField("kafka_topic", StringType()),
        StructField("kafka_partition", IntegerType()),
        StructField("kafka_offset", LongType()),
        StructField("source_file", StringType()),
    ]
)


def test_malformed_lines_and_dead_letters_become_quarantine_rows_with_their_reason(
    spark: SparkSession,
) -> None:
    good = envelope("kucoin", "trades", {"type": "message"}, recv_ns=T0_NS, conn_seq=3)
    dead = envelope("kucoin", "deadletter", '{"type":"message","data":{"pri', recv_ns=T0_NS + 5, conn_seq=4)
    dead["error"] = "not JSON: unexpected end of data"
    unexplained = envelope("binance", "deadletter", "\x00", recv_ns=T0_NS + 6)
    lines = [json.dumps(good), json.dumps(dead), '{"exchange":"coinbase"}', json.dumps(unexplained)]
    source = spark.createDataFrame([("\n".join(lines), None, None, None, "part-1.jsonl.gz")], SOURCE_SCHEMA)

    rows = rejected_to_quarantine(envelopes_to_bronze(source), batch_id=9).collect()

    assert [(r.source_table, r.exchange, r.reason, r.batch_id) for r in rows] == [
        ("bronze.raw_events", "kucoin", "deadletter: not JSON: unexpected end of data", 9),
        ("bronze.raw_events", "coinbase", "malformed_envelope", 9),
        ("bronze.raw_events", "binance", "deadletter: no reason given", 9),
    ]
    # The row keeps the line exactly as it arrived, and where it came from.
    assert [json.loads(r.row_json)["line"] for r in rows] == lines[1:]
    assert {json.loads(r.row_json)["source_file"] for r in rows} == {"part-1.jsonl.gz"}
