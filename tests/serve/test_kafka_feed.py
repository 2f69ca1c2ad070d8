"""The Kafka feed on a real broker: batches produced by the extractor's Kafka sink to
``<prefix>raw.<exchange>.<channel>`` reach a WebSocket client subscribed to one market, and only it."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from extractors.sinks.kafka import KafkaSettings, KafkaSink
from lake.serve.app import create_app
from lake.serve.feeds import KafkaTail
from lake.serve.settings import ServeSettings
from lake.tables import Lake, LakeSettings
from tests.conftest import seconds
from tests.serve.helpers import running_server
from tests.serve.test_stream import Marker, SinkWriter, land_mixed_updates, start_feed, ws_collect

pytestmark = pytest.mark.integration


def test_kafka_feed_streams_the_subscribed_market_and_nothing_else(
    kafka_service, kafka_topic_prefix, tmp_path: Path
):
    prefix = f"{kafka_topic_prefix}."
    settings = KafkaSettings(bootstrap_servers=(kafka_service.bootstrap,), topic_prefix=prefix)
    writer = SinkWriter(lambda: KafkaSink(settings))

    def source() -> KafkaTail:
        return KafkaTail(bootstrap_servers=(kafka_service.bootstrap,), topic_prefix=prefix, refresh_s=0.5)

    serve = ServeSettings(min_interval_s=0.0, heartbeat_s=seconds(5))
    app = create_app(serve, Lake(LakeSettings(root=str(tmp_path / "lake"))), source_factory=source)
    try:
        with running_server(app) as host:
            start_feed(host, writer)
            query = "?exchange=binance&symbol=BTC-USDT"
            got = asyncio.run(ws_collect(host, query, Marker(lambda: land_mixed_updates(writer))))
    finally:
        writer.close()
    assert {(s["exchange"], s["native_symbol"], s["symbol"]) for s in got} == {
        ("binance", "BTCUSDT", "BTC-USDT")
    }
    assert (got[-1]["bid"], got[-1]["ask"], got[-1]["last"], got[-1]["last_usdt"]) == (
        "100",
        "101",
        "100.5",
        "100.5",
    )
