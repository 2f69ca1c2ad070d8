"""Spark's Kafka source (the jars of ``.cache/jars/spark``) reads what kafka-python wrote, byte for byte.

The source needs ``spark-token-provider-kafka-0-10`` on the class path even without delegation
tokens; the pom pins it to 4.0.0 (4.2.0 is missing from Maven Central here), so this test is also
the proof that the 4.0.0 module works with spark-sql-kafka 4.2.0.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from kafka import KafkaProducer
from pyspark.sql import SparkSession

from infra.services import KafkaService
from tests.conftest import seconds

pytestmark = [pytest.mark.integration, pytest.mark.spark]


def _produce(bootstrap: str, records: dict[str, list[tuple[bytes | None, bytes]]]) -> None:
    producer = KafkaProducer(bootstrap_servers=bootstrap, acks="all")
    try:
        futures = [
            producer.send(topic, key=key, value=value)
            for topic, pairs in records.items()
            for key, value in pairs
        ]
        producer.flush(timeout=seconds(30))
        for future in futures:
            future.get(timeout=seconds(30))
    finally:
        producer.close(timeout=seconds(10))


@pytest.mark.timeout(seconds(240))
def test_kafka_source_reads_raw_topics_by_pattern_with_identical_bytes(
    spark: SparkSession, kafka_service: KafkaService, kafka_topic_prefix: str, tmp_path: Path
) -> None:
    trades, ticker = f"raw.{kafka_topic_prefix}.trades", f"raw.{kafka_topic_prefix}.ticker"
    not_raw = f"bronze.{kafka_topic_prefix}.trades"
    written: dict[str, list[tuple[bytes | None, bytes]]] = {
        trades: [
            (b"BTCUSDT", b'{"e":"trade","p":"97000.10","q":"0.001","T":1}'),
            (b"ETHUSDT", bytes(range(256))),  # every byte value, not UTF-8
            (None, '{"msg":"ünïcödé €","nested":"a\\nb"}'.encode()),
            (b"BTCUSDT", b""),
        ],
        ticker: [(b"SOLUSDT", b'{"e":"24hrMiniTicker","c":"180.5"}')],
        not_raw: [(b"BTCUSDT", b"must not be read")],
    }
    _produce(kafka_service.bootstrap, written)

    name = f"kafka_{kafka_topic_prefix}"
    query = (
        spark.readStream.format("kafka")
        .option("kafka.bootstrap.servers", kafka_service.bootstrap)
        .option("subscribePattern", rf"raw\.{re.escape(kafka_topic_prefix)}\..*")
        .option("startingOffsets", "earliest")
        .load()
        .select("topic", "partition", "offset", "key", "value")
        .writeStream.format("memory")
        .queryName(name)
        .option("checkpointLocation", str(tmp_path / "checkpoint"))
        .trigger(availableNow=True)
        .start()
    )
    try:
        assert query.awaitTermination(seconds(180)), "the availableNow query did not finish"
        assert query.exception() is None
        rows = spark.table(name).collect()
    finally:
        query.stop()
        spark.catalog.dropTempView(name)

    got = sorted(
        (r.topic, r.partition, r.offset, None if r.key is None else bytes(r.key), bytes(r.value))
        for r in rows
    )
    expected = sorted(
        (topic, 0, offset, key, value)
        for topic in (trades, ticker)
        for offset, (key, value) in enumerate(written[topic])
    )
    assert got == expected
