"""The local KRaft broker keeps acknowledged records across a restart on the same storage."""

from __future__ import annotations

import os

import pytest
from kafka import KafkaConsumer, KafkaProducer, TopicPartition

from infra.services import KafkaService
from tests.conftest import seconds

pytestmark = pytest.mark.integration


def _records(start: int, count: int) -> list[tuple[bytes, bytes]]:
    """Keys and values with every byte value, non-UTF-8 bytes and an empty value among them."""
    records = []
    for i in range(start, start + count):
        value = bytes([i % 256, 0, 255]) + os.urandom(i % 64) + f'{{"n":{i},"s":"€"}}'.encode()
        records.append((f"BTCUSDT-{i % 3}".encode(), value if i % 50 else b""))
    return records


def _produce(producer: KafkaProducer, topic: str, records: list[tuple[bytes, bytes]]) -> None:
    futures = [producer.send(topic, key=key, value=value) for key, value in records]
    producer.flush(timeout=seconds(30))
    for future in futures:
        future.get(timeout=seconds(30))  # raises when the broker did not acknowledge (acks=all)


def _consume_all(bootstrap: str, topic: str, expected: int) -> list[tuple[bytes, bytes]]:
    consumer = KafkaConsumer(
        bootstrap_servers=bootstrap, enable_auto_commit=False, consumer_timeout_ms=int(seconds(10) * 1000)
    )
    try:
        partition = TopicPartition(topic, 0)
        consumer.assign([partition])
        consumer.seek_to_beginning(partition)
        got: list[tuple[bytes, bytes]] = []
        for message in consumer:
            got.append((message.key, message.value))
            if len(got) >= expected:
                break
        return got
    finally:
        consumer.close()


@pytest.mark.timeout(seconds(240))
def test_acked_records_survive_broker_restart_byte_identical(
    kafka_service: KafkaService, kafka_topic_prefix: str
) -> None:
    topic = f"raw.{kafka_topic_prefix}.trades"
    before, after = _records(0, 300), _records(300, 300)
    producer = KafkaProducer(
        bootstrap_servers=kafka_service.bootstrap,
        acks="all",
        retries=20,
        retry_backoff_ms=200,
        request_timeout_ms=int(seconds(15) * 1000),
    )
    try:
        _produce(producer, topic, before)
        bootstrap = kafka_service.bootstrap
        kafka_service.restart(timeout=seconds(90))
        assert kafka_service.bootstrap == bootstrap, "a restart must keep the endpoint clients know"
        _produce(producer, topic, after)  # the same producer reconnects to the restarted broker
    finally:
        producer.close(timeout=seconds(10))

    assert _consume_all(kafka_service.bootstrap, topic, len(before) + len(after)) == before + after
