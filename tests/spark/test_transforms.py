"""Bronze ingest on inline lines: envelopes split out of batches, malformed ones rejected.

Each exchange's parsing is tested beside it, in ``tests/spark/parsers/test_<exchange>.py``.
"""

from __future__ import annotations

import pytest
from pyspark.sql import SparkSession
from pyspark.sql.types import IntegerType, LongType, StringType, StructField, StructType

from spark_jobs.bronze_ingest import envelopes_to_bronze
from tests.spark.envelopes import T0_NS, envelope, ts

pytestmark = pytest.mark.spark


def test_bronze_lines_split_batches_and_reject_malformed(spark: SparkSession) -> None:
    import json

    good = envelope("binance", "trades", {"e": "trade"}, recv_ns=T0_NS + 1, conn_seq=7)
    value = json.dumps(good) + "\n" + '{"exchange":"binance"}\n\n' + "garbage\n"
    schema = StructType(
        [
            StructField("value", StringType()),
            StructField("kafka_topic", StringType()),
            StructField("kafka_partition", IntegerType()),
            StructField("kafka_offset", LongType()),
            StructField("source_file", StringType()),
        ]
    )
    lines = spark.createDataFrame([(value, "raw.binance.trades", 0, 41, None)], schema)
    got = envelopes_to_bronze(lines).select(
        "exchange", "channel", "payload", "recv_ts_ns", "conn_seq", "recv_date", "kafka_offset", "_error"
    )
    assert [tuple(x) for x in got.collect()] == [
        ("binance", "trades", good["payload"], T0_NS + 1, 7, ts(T0_NS).date(), 41, None),
        ("binance", None, None, None, None, None, 41, "malformed_envelope"),
        (None, None, None, None, None, None, 41, "malformed_envelope"),
    ]
