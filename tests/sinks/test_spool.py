"""The disk spool: outages spool and replay in order, restarts replay, the bound surfaces."""

from __future__ import annotations

import asyncio
import struct
import time
import zlib
from pathlib import Path

import pytest
from prometheus_client import REGISTRY

from extractors.envelope import Batch
from extractors.sinks.base import SinkError
from extractors.sinks.spool import CORRUPT_DIRNAME, DiskQueue, SpooledSink, SpoolSettings, encode_batch
from tests.conftest import seconds
from tests.sinks.helpers import FlakySink, batches, make_batch

#: A backoff or drain no test waits out: an operation that waited for it would hang the test.
#: (The first backoff delay is random in [0, initial]: this large, it is never short.)
LONG_S = 1_000_000.0


def spool_settings(tmp_path: Path, **kw: object) -> SpoolSettings:
    base: dict[str, object] = {
        "dir": str(tmp_path / "spool"),
        "backoff_initial_s": 0.02,
        "backoff_max_s": 0.1,
        "drain_timeout_s": seconds(2),
    }
    base.update(kw)
    return SpoolSettings(**base)  # type: ignore[arg-type]


async def wait_until(cond: object, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not cond() and time.monotonic() < deadline:  # type: ignore[operator]
        await asyncio.sleep(0.01)
    assert cond(), "condition not met in time"  # type: ignore[operator]


def test_outage_spools_and_every_batch_is_delivered_in_order_after_recovery(tmp_path: Path) -> None:
    written = batches(30)
    inner = FlakySink()

    async def run() -> None:
        sink = SpooledSink(inner, spool_settings(tmp_path, backoff_initial_s=LONG_S, backoff_max_s=LONG_S))
        for b in written[:5]:
            await sink.write(b)
        assert sink.depth == 0 and inner.delivered == written[:5]
        inner.down = True
        attempts = inner.attempts
        for b in written[5:25]:
            await sink.write(b)  # collection goes on: each write returns with the batch on disk
        # Only the first write tried the sink; the others went to disk behind it, none waited
        # for a retry (the replayer sleeps out its long first backoff meanwhile).
        assert inner.attempts == attempts + 1
        assert sink.depth == 20
        inner.down = False
        for b in written[25:]:
            await sink.write(b)  # behind the backlog, not ahead of it
        await sink.close()  # cuts the replayer's backoff short and drains the spool in order
        assert sink.depth == 0
        assert inner.delivered == written
        assert [b.to_jsonl() for b in inner.delivered] == [b.to_jsonl() for b in written]
        assert inner.closed

    asyncio.run(run())
    assert list((tmp_path / "spool" / "fake").iterdir()) == []


def test_spool_survives_a_restart_and_replays_first(tmp_path: Path) -> None:
    written = batches(11)
    down = FlakySink()
    down.down = True

    async def first_run() -> None:
        sink = SpooledSink(down, spool_settings(tmp_path, drain_timeout_s=0.1))
        for b in written[:10]:
            await sink.write(b)
        await sink.close()  # sink still down: the batches stay on disk

    asyncio.run(first_run())
    assert down.delivered == []
    up = FlakySink()

    async def second_run() -> None:
        sink = SpooledSink(up, spool_settings(tmp_path))
        assert sink.depth == 10
        await sink.write(written[10])
        await sink.close()

    asyncio.run(second_run())
    assert up.delivered == written


def test_close_drains_the_spool_when_the_sink_is_back(tmp_path: Path) -> None:
    written = batches(5)
    inner = FlakySink()

    async def run() -> None:
        settings = spool_settings(
            tmp_path, backoff_initial_s=LONG_S, backoff_max_s=LONG_S, drain_timeout_s=LONG_S
        )
        sink = SpooledSink(inner, settings)
        inner.down = True
        for b in written:
            await sink.write(b)
        inner.down = False
        # A close that waited out the replayer's backoff would hang here (the guard is a hang
        # guard far below LONG_S, not a timing check).
        await asyncio.wait_for(sink.close(), seconds(30))

    asyncio.run(run())
    assert inner.delivered == written


def test_full_spool_refuses_loudly_and_keeps_what_it_accepted(tmp_path: Path) -> None:
    written = batches(50)
    inner = FlakySink()
    inner.down = True
    accepted: list[Batch] = []

    async def run() -> None:
        sink = SpooledSink(inner, spool_settings(tmp_path, max_bytes=4096))
        with pytest.raises(SinkError) as err:
            for b in written:
                await sink.write(b)
                accepted.append(b)
        assert err.value.retryable is False
        assert "max_bytes" in str(err.value)
        assert 0 < len(accepted) < len(written)
        assert sink.depth == len(accepted)
        inner.down = False
        await wait_until(lambda: sink.depth == 0, seconds(5))
        await sink.close()

    asyncio.run(run())
    assert inner.delivered == accepted


def test_non_retryable_error_on_write_through_is_raised_not_spooled(tmp_path: Path) -> None:
    inner = FlakySink()
    inner.fatal = True

    async def run() -> None:
        sink = SpooledSink(inner, spool_settings(tmp_path))
        with pytest.raises(SinkError) as err:
            await sink.write(make_batch(1))
        assert err.value.retryable is False
        assert sink.depth == 0
        await sink.close()

    asyncio.run(run())


def test_permanent_failure_during_replay_stops_it_and_surfaces_on_the_next_write(tmp_path: Path) -> None:
    written = batches(4)
    inner = FlakySink()

    async def run() -> None:
        sink = SpooledSink(inner, spool_settings(tmp_path, drain_timeout_s=0.1))
        inner.down = True
        for b in written[:3]:
            await sink.write(b)
        inner.fatal = True
        attempts = inner.attempts
        fatal = {"sink": inner.name, "reason": "fatal"}
        rejected = REGISTRY.get_sample_value("cryptolake_spool_rejected_total", fatal) or 0.0
        await wait_until(lambda: inner.attempts > attempts, seconds(5))  # the replayer hit it
        # ... and gave up on it for good (counted once it recorded the failure).
        await wait_until(
            lambda: (REGISTRY.get_sample_value("cryptolake_spool_rejected_total", fatal) or 0.0) > rejected,
            seconds(5),
        )
        with pytest.raises(SinkError) as err:
            await sink.write(written[3])
        assert err.value.retryable is False
        assert "permanently" in str(err.value)
        assert sink.depth == 3  # nothing dropped
        await sink.close()

    asyncio.run(run())
    assert inner.delivered == []


def test_a_write_slower_than_the_timeout_is_spooled_and_replayed(tmp_path: Path) -> None:
    written = batches(3)
    inner = FlakySink()

    async def run() -> None:
        sink = SpooledSink(inner, spool_settings(tmp_path, write_timeout_s=0.05))
        inner.delay_s = 1.0
        await sink.write(written[0])
        assert sink.depth == 1
        inner.delay_s = 0.0
        for b in written[1:]:
            await sink.write(b)
        await wait_until(lambda: sink.depth == 0, seconds(5))
        await sink.close()

    asyncio.run(run())
    assert inner.delivered == written


def test_disk_queue_cuts_a_torn_tail_record_on_load(tmp_path: Path) -> None:
    q = DiskQueue(tmp_path, max_bytes=1 << 20)
    for i in range(3):
        q.append(f"record-{i}".encode())
    q.close()
    (segment,) = tmp_path.glob("*.seg")
    with open(segment, "ab") as fh:
        fh.write(b"\x00\x00\x00\x10\x12")  # half a header: an append that never returned
    q = DiskQueue(tmp_path, max_bytes=1 << 20)
    got = []
    while (record := q.peek()) is not None:
        got.append(record)
        q.pop()
    assert got == [b"record-0", b"record-1", b"record-2"]
    assert q.set_aside == []  # a torn append is not corruption; its bytes are kept all the same
    assert [p.read_bytes() for p in (tmp_path / CORRUPT_DIRNAME).glob("*.torn")] == [b"\x00\x00\x00\x10\x12"]
    q.append(b"after")
    assert q.peek() == b"after"
    q.close()


def test_disk_queue_rolls_segments_deletes_delivered_ones_and_resumes_at_the_head(tmp_path: Path) -> None:
    q = DiskQueue(tmp_path, max_bytes=1 << 20, segment_bytes=30)
    for i in range(10):
        q.append(f"record-{i:02d}-xxxxxxxxxxxx".encode())  # 30 bytes with header: one per segment
    assert len(list(tmp_path.glob("*.seg"))) == 10
    for _ in range(7):
        q.pop()
    assert len(list(tmp_path.glob("*.seg"))) == 3
    q.close()
    q = DiskQueue(tmp_path, max_bytes=1 << 20, segment_bytes=30)
    assert len(q) == 3
    assert q.peek() == b"record-07-xxxxxxxxxxxx"
    q.close()


def test_disk_queue_moves_a_corrupt_middle_segment_aside_and_resumes_at_the_next(tmp_path: Path) -> None:
    q = DiskQueue(tmp_path, max_bytes=1 << 20, segment_bytes=10)
    q.append(b"first-record")
    q.append(b"second-record")
    q.close()
    first = sorted(tmp_path.glob("*.seg"))[0]
    data = bytearray(first.read_bytes())
    data[-1] ^= 0xFF
    first.write_bytes(bytes(data))
    q = DiskQueue(tmp_path, max_bytes=1 << 20, segment_bytes=10)
    assert q.peek() == b"second-record" and len(q) == 1
    (aside,) = q.set_aside
    assert aside.parent == tmp_path / CORRUPT_DIRNAME and aside.read_bytes() == bytes(data)
    q.close()


def test_disk_queue_keeps_good_records_after_a_bad_one_in_the_last_segment(tmp_path: Path) -> None:
    q = DiskQueue(tmp_path, max_bytes=1 << 20)
    for i in range(3):
        q.append(f"record-{i}".encode())
    q.close()
    (segment,) = tmp_path.glob("*.seg")
    data = bytearray(segment.read_bytes())
    second = 8 + len(b"record-0")
    data[second + 8] ^= 0xFF  # record-1's payload no longer matches its checksum
    segment.write_bytes(bytes(data))
    q = DiskQueue(tmp_path, max_bytes=1 << 20)
    got = []
    while (record := q.peek()) is not None:
        got.append(record)
        q.pop()
    assert got == [b"record-0", b"record-2"]  # record-2 is not cut off with the bad record-1
    (aside,) = q.set_aside
    assert aside.read_bytes() == bytes(data[second : second + 8 + len(b"record-1")])
    q.close()


def test_disk_queue_moves_the_rest_of_the_last_segment_aside_when_a_length_is_damaged(tmp_path: Path) -> None:
    q = DiskQueue(tmp_path, max_bytes=1 << 20)
    for i in range(3):
        q.append(f"record-{i}".encode())
    q.close()
    (segment,) = tmp_path.glob("*.seg")
    data = bytearray(segment.read_bytes())
    second = 8 + len(b"record-0")
    data[second + 3] ^= 0x01  # record-1's length: the next boundary is lost
    segment.write_bytes(bytes(data))
    q = DiskQueue(tmp_path, max_bytes=1 << 20)
    assert q.peek() == b"record-0" and len(q) == 1
    (aside,) = q.set_aside
    assert aside.read_bytes() == bytes(data[second:])  # moved aside, never silently dropped
    q.append(b"after")
    q.pop()
    assert q.peek() == b"after"
    q.close()


def _sample(name: str, sink: str) -> float:
    return REGISTRY.get_sample_value(name, {"sink": sink}) or 0.0


def _garble_second_record(folder: Path) -> bytes:
    """Flip a byte in the payload of the second record of the spool's only segment."""
    (segment,) = folder.glob("*.seg")
    data = bytearray(segment.read_bytes())
    (length,) = struct.unpack_from(">I", data, 0)
    second = 8 + length
    (second_length,) = struct.unpack_from(">I", data, second)
    data[second + 8 + 5] ^= 0xFF
    segment.write_bytes(bytes(data))
    return bytes(data[second : second + 8 + second_length])


@pytest.mark.parametrize("damage", ["bad checksum", "not a batch", "truncated batch"])
def test_replay_moves_a_corrupt_record_aside_counts_it_and_delivers_the_rest(
    tmp_path: Path, damage: str
) -> None:
    """A record that goes bad on disk while spooled, or that holds bytes which do not decode as a
    batch, used to kill the replayer silently and leave the spool growing until it was full."""
    name = f"corrupt-{damage.replace(' ', '-')}"
    written = batches(4)
    inner = FlakySink(name)
    folder = tmp_path / "spool" / name
    garbage = b"\x00\xffnot json\n" if damage == "not a batch" else encode_batch(written[1])[:-20]
    if damage != "bad checksum":
        q = DiskQueue(folder, max_bytes=1 << 20, fsync=False)
        q.append(encode_batch(written[0]))
        q.append(garbage)  # a valid checksum over bytes that are not a whole batch
        for b in written[1:]:
            q.append(encode_batch(b))
        q.close()
    before = _sample("cryptolake_spool_corrupt_total", name)
    after = make_batch(batch_id="after", seq=100)

    async def run() -> bytes:
        sink = SpooledSink(inner, spool_settings(tmp_path))
        if damage == "bad checksum":
            inner.down = True
            for b in written:
                await sink.write(b)
            expected = _garble_second_record(folder)  # goes bad while the sink is down
            inner.down = False
        else:
            expected = struct.pack(">II", len(garbage), zlib.crc32(garbage)) + garbage
        await sink.write(after)  # spooled behind the backlog; starts the replayer
        await wait_until(lambda: sink.depth == 0, seconds(5))
        await sink.close()
        return expected

    expected_aside = asyncio.run(run())
    delivered = [written[0], *written[2:]] if damage == "bad checksum" else written
    assert inner.delivered == [*delivered, after]
    (aside,) = (folder / CORRUPT_DIRNAME).iterdir()
    assert aside.read_bytes() == expected_aside
    assert _sample("cryptolake_spool_corrupt_total", name) == before + 1
    assert not list(folder.glob("*.seg"))
