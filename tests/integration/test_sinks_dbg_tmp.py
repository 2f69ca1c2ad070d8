import asyncio
import time

from kafka import KafkaConsumer, TopicPartition

from extractors.sinks.kafka import KafkaSettings, KafkaSink
from tests.sinks.helpers import make_batch


def consume(kafka_service, topic, n):
    c = KafkaConsumer(bootstrap_servers=kafka_service.bootstrap, enable_auto_commit=False, group_id=None)
    tp = TopicPartition(topic, 0)
    c.assign([tp])
    c.seek_to_beginning(tp)
    t = time.monotonic()
    out = []
    while time.monotonic() - t < 15 and len(out) < n:
        for recs in c.poll(timeout_ms=200).values():
            out.extend(recs)
    print("assign", len(out), time.monotonic() - t)
    c.close()


def test_dbg(kafka_service, kafka_topic_prefix):
    s = KafkaSettings(bootstrap_servers=(kafka_service.bootstrap,), topic_prefix=f"{kafka_topic_prefix}.")

    async def run(k):
        sink = KafkaSink(s)
        for i in range(3):
            t = time.monotonic()
            await sink.write(make_batch(2, batch_id=f"x{i}"))
            print("lat", time.monotonic() - t)
        await sink.close()

    asyncio.run(run(0))
    topic = f"{kafka_topic_prefix}.raw.binance.trades"
    consume(kafka_service, topic, 3)
    t = time.monotonic()
    kafka_service.stop()
    print("stop", time.monotonic() - t)
    t = time.monotonic()
    kafka_service.start()
    print("start", time.monotonic() - t)
    consume(kafka_service, topic, 3)
    asyncio.run(run(1))
    consume(kafka_service, topic, 6)
