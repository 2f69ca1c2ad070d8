"""bronze_ingest from real Kafka and from the landing zone yields the same ``bronze.raw_events`` rows.

The same batches go through the production sinks (Kafka: one record per batch on
``raw.<exchange>.<channel>``; landing: gzip JSON lines), then bronze_ingest reads each source with
an ``availableNow`` query. Envelope columns must match exactly; each side keeps its own lineage.
"""

from __future__ import annotations

import asyncio
import re
from pathlib import Path

import pytest
from pyspark.sql import Row, SparkSession

from extractors.envelope import Batch
from extractors.sinks.kafka import KafkaSettings, KafkaSink
from extractors.sinks.landing import LandingSettings, LandingSink
from infra.services import KafkaService
from lake.tables import Lake, LakeSettings
from spark_jobs import bronze_ingest
from spark_jobs.runtime import BronzeSettings
from tests.conftest import seconds
from tests.sinks.helpers import make_batch

pytestmark = [pytest.mark.integration, pytest.mark.spark]

ENVELOPE_COLUMNS = (
    "exchange", "channel", "stream", "native_symbol", "payload", "recv_ts_ns", "conn_id", "conn_seq",
    "source", "error", "recv_date",
)  # fmt: skip


def _batches() -> list[Batch]:
    return [
        make_batch(3, exchange="binance", channel="trades", key="BTCUSDT", batch_id="b-1"),
        make_batch(2, exchange="kucoin", channel="l1", key="BTC-USDT", batch_id="b-2", seq=10),
        make_batch(4, exchange="coinbase", channel="ticker", key="ETH-USD", batch_id="b-3", seq=20),
        make_batch(2, exchange="binance", channel="trades", key="ETHUSDT", batch_id="b-4", seq=30),
    ]


async def _deliver(batches: list[Batch], kafka: KafkaSettings, landing: LandingSettings) -> None:
    kafka_sink, landing_sink = KafkaSink(kafka), LandingSink(landing)
    try:
        for b in batches:
            await kafka_sink.write(b)
            await landing_sink.write(b)
    finally:
        await kafka_sink.close()
        await landing_sink.close()


def _bronze(spark: SparkSession, settings: BronzeSettings, lake: Lake) -> list[Row]:
    query = bronze_ingest.build_query(spark, settings, lake=lake)
    assert query.awaitTermination(round(seconds(300))), "bronze_ingest did not finish"
    assert query.exception() is None
    return spark.read.format("delta").load(lake.path("bronze.raw_events")).collect()


@pytest.mark.timeout(seconds(600))
def test_kafka_and_landing_sources_give_identical_bronze_rows(
    spark: SparkSession, kafka_service: KafkaService, kafka_topic_prefix: str, tmp_path: Path
) -> None:
    batches = _batches()
    landing_root = tmp_path / "landing"
    asyncio.run(
        _deliver(
            batches,
            KafkaSettings(
                bootstrap_servers=(kafka_service.bootstrap,), topic_prefix=f"{kafka_topic_prefix}."
            ),
            LandingSettings(root=str(landing_root), fsync=False),
        )
    )

    from_kafka = _bronze(
        spark,
        BronzeSettings(
            source="kafka",
            kafka_bootstrap_servers=kafka_service.bootstrap,
            kafka_topic_pattern=rf"{re.escape(kafka_topic_prefix)}\.raw\..*",
        ),
        Lake(LakeSettings(root=str(tmp_path / "lake-kafka"))),
    )
    from_landing = _bronze(
        spark,
        BronzeSettings(source="landing", landing_root=str(landing_root)),
        Lake(LakeSettings(root=str(tmp_path / "lake-landing"))),
    )

    def envelopes(rows: list[Row]) -> list[tuple]:
        return sorted(tuple(r[c] for c in ENVELOPE_COLUMNS) for r in rows)

    sent = sorted(
        (e.exchange, e.channel, e.stream, e.native_symbol, e.payload, e.recv_ts_ns, e.conn_id, e.conn_seq)
        for b in batches
        for e in b.envelopes
    )
    assert envelopes(from_kafka) == envelopes(from_landing)
    assert sorted(t[:8] for t in envelopes(from_kafka)) == sent
    topics = {f"{kafka_topic_prefix}.raw.{b.exchange}.{b.channel}" for b in batches}
    assert {r.kafka_topic for r in from_kafka} == topics
    assert all(r.kafka_offset is not None and r.source_file is None for r in from_kafka)
    assert all(r.source_file.endswith(".jsonl.gz") and r.kafka_topic is None for r in from_landing)
