"""Kafka sink behind the spool against a real broker: byte-identical records across a broker outage."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from kafka import KafkaConsumer, TopicPartition

from extractors.envelope import Batch
from extractors.sinks.kafka import KafkaSettings, KafkaSink
from extractors.sinks.spool import SpooledSink, SpoolSettings
from infra.services import KafkaService
from tests.conftest import seconds
from tests.sinks.helpers import make_batch

pytestmark = pytest.mark.integration


def batch(i: int) -> Batch:
    key = ("BTCUSDT", "ETHUSDT")[i % 2]
    return make_batch(4, key=key, batch_id=f"run1-{i:05d}", seq=i * 4)


def consume_all(
    bootstrap: str, topic: str, *, expected: int, timeout: float
) -> list[tuple[bytes, bytes, dict[str, bytes]]]:
    """Every record of the (single-partition) topic from the start: (key, value, headers)."""
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False, group_id=None)
    try:
        tp = TopicPartition(topic, 0)
        consumer.assign([tp])
        consumer.seek_to_beginning(tp)
        out: list[tuple[bytes, bytes, dict[str, bytes]]] = []
        deadline = time.monotonic() + timeout
        quiet_until = 0.0  # after the expected count, keep polling 1 s to catch any extra record
        while time.monotonic() < deadline and (len(out) < expected or time.monotonic() < quiet_until):
            for records in consumer.poll(timeout_ms=200).values():
                out.extend((r.key, r.value, dict(r.headers)) for r in records)
            if len(out) >= expected and not quiet_until:
                quiet_until = time.monotonic() + 1.0
        return out
    finally:
        consumer.close()


class _Stage:
    """Hands broker stop/start to the main thread: ``KafkaService.start`` must run there, because
    the broker is tied to the thread that started it (PR_SET_PDEATHSIG) and must outlive this test."""

    def __init__(self) -> None:
        self.request = threading.Event()
        self.done = threading.Event()

    async def run_in_main(self) -> None:
        self.request.set()
        while not self.done.is_set():
            await asyncio.sleep(0.05)


def _serve(
    stage: _Stage, action: Callable[[], None], worker: threading.Thread, errors: list[BaseException]
) -> None:
    while not stage.request.wait(0.1):
        if not worker.is_alive():
            raise errors[0] if errors else AssertionError("writer stopped before the broker outage")
    action()
    stage.done.set()


def test_kafka_sink_lands_byte_identical_records_in_order_across_a_broker_outage(
    kafka_service: KafkaService, kafka_topic_prefix: str, tmp_path: Path
) -> None:
    settings = KafkaSettings(
        bootstrap_servers=(kafka_service.bootstrap,),
        topic_prefix=f"{kafka_topic_prefix}.",
        delivery_timeout_s=seconds(3),
        request_timeout_s=seconds(1),
    )
    spool = SpoolSettings(
        dir=str(tmp_path / "spool"),
        write_timeout_s=seconds(8),
        backoff_initial_s=0.2,
        backoff_max_s=1.0,
        drain_timeout_s=seconds(10),
    )
    written: list[Batch] = []
    latencies: list[float] = []
    phases: dict[str, float] = {}
    stop, start = _Stage(), _Stage()

    async def write(sink: SpooledSink, b: Batch) -> float:
        started = time.monotonic()
        await sink.write(b)
        written.append(b)
        return time.monotonic() - started

    async def run() -> None:
        sink = SpooledSink(KafkaSink(settings), spool)
        for i in range(15):  # broker up: straight through
            latencies.append(await write(sink, batch(i)))
            assert sink.depth == 0
        phases["up"] = time.monotonic()
        await stop.run_in_main()
        phases["stopped"] = time.monotonic()
        first = await write(sink, batch(15))  # fails within the delivery bound, then spooled
        assert first < seconds(8)
        for i in range(16, 35):  # outage: every write returns at once into the spool
            assert await write(sink, batch(i)) < seconds(1)
        assert sink.depth == 20
        start.request.set()
        i = 35
        while not start.done.is_set():  # collection goes on while the broker comes back
            await write(sink, batch(i))
            i += 1
            await asyncio.sleep(0.1)
        phases["started"] = time.monotonic()
        for j in range(i, i + 10):
            await write(sink, batch(j))
        deadline = time.monotonic() + seconds(60)
        while sink.depth and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
        assert sink.depth == 0, "spool did not drain after the broker came back"
        phases["drained"] = time.monotonic()
        await sink.close()

    errors: list[BaseException] = []

    def work() -> None:
        try:
            asyncio.run(run())
        except BaseException as exc:
            errors.append(exc)

    worker = threading.Thread(target=work, name="sink-writer")
    worker.start()
    try:
        _serve(stop, kafka_service.stop, worker, errors)
        _serve(start, lambda: kafka_service.start(timeout=seconds(90)), worker, errors)
    finally:
        if stop.done.is_set() and not start.done.is_set():
            kafka_service.start(timeout=seconds(90))  # leave the session's broker running
            start.done.set()
        worker.join(seconds(120))
    assert not worker.is_alive()
    if errors:
        raise errors[0]

    topic = f"{kafka_topic_prefix}.raw.binance.trades"
    records = consume_all(kafka_service.bootstrap, topic, expected=len(written), timeout=seconds(30))
    assert [value for _, value, _ in records] == [b.to_jsonl() for b in written]
    assert [key for key, _, _ in records] == [b.key.encode() for b in written]
    assert [h for _, _, h in records] == [
        {"batch_id": b.batch_id.encode(), "exchange": b"binance", "channel": b"trades"} for b in written
    ]
    assert list((tmp_path / "spool" / "kafka").iterdir()) == []
    median_ms = sorted(latencies)[len(latencies) // 2] * 1000
    print(
        f"kafka write latency (broker up, acks=all): median {median_ms:.1f} ms; {len(written)} batches; "
        f"stop {phases['stopped'] - phases['up']:.1f}s, start {phases['started'] - phases['stopped']:.1f}s, "
        f"drain {phases['drained'] - phases['started']:.1f}s"
    )
