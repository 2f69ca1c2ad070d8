"""Landing sink on a local folder: exact key layout, byte-identical content, rolling, atomicity."""

from __future__ import annotations

import asyncio
import gzip
import re
import time
from pathlib import Path

import pytest

from extractors.sinks.base import SinkError
from extractors.sinks.landing import LandingSettings, LandingSink, complete_gzip_prefix, split_s3_root
from tests.conftest import seconds
from tests.sinks.helpers import T0_NS, batches, landed_files, make_batch, read_landed

UUID = r"[0-9a-f]{32}"


def settings(root: Path, **kw: object) -> LandingSettings:
    return LandingSettings(root=str(root), **kw)  # type: ignore[arg-type]


def final_files(root: Path) -> list[Path]:
    return sorted((root / "raw").rglob("*.jsonl.gz")) if (root / "raw").exists() else []


def test_batches_read_back_byte_identical_from_one_file_with_the_exact_key(tmp_path: Path) -> None:
    written = batches(4)

    async def run() -> None:
        sink = LandingSink(settings(tmp_path))
        for b in written:
            await sink.write(b)
        await sink.close()

    asyncio.run(run())
    files = landed_files(tmp_path)
    assert len(files) == 1
    rel = files[0].relative_to(tmp_path).as_posix()
    assert re.fullmatch(rf"raw/exchange=binance/channel=trades/dt=2024-03-09/hour=23/{UUID}\.jsonl\.gz", rel)
    assert read_landed(files[0]) == b"".join(b.to_jsonl() for b in written)


def test_partition_comes_from_the_first_recv_ts_in_utc(tmp_path: Path) -> None:
    # Starts 1 ms before midnight UTC and runs past it: the whole batch goes to hour 23 of the 9th.
    straddling = make_batch(5, ts_ns=T0_NS + 1_999_000_000)
    next_day = make_batch(1, ts_ns=T0_NS + 2_000_000_000, batch_id="b-next")

    async def run() -> None:
        sink = LandingSink(settings(tmp_path))
        await sink.write(straddling)
        await sink.write(next_day)
        await sink.close()

    asyncio.run(run())
    by_dir = {f.parent.relative_to(tmp_path).as_posix(): read_landed(f) for f in landed_files(tmp_path)}
    assert by_dir == {
        "raw/exchange=binance/channel=trades/dt=2024-03-09/hour=23": straddling.to_jsonl(),
        "raw/exchange=binance/channel=trades/dt=2024-03-10/hour=00": next_day.to_jsonl(),
    }


def test_each_exchange_and_channel_gets_its_own_file(tmp_path: Path) -> None:
    trades = make_batch(2, batch_id="t")
    ticker = make_batch(2, channel="ticker", key="ticker", batch_id="k")
    kucoin = make_batch(2, exchange="kucoin", key="BTC-USDT", batch_id="ku")

    async def run() -> None:
        sink = LandingSink(settings(tmp_path))
        for b in (trades, ticker, kucoin, trades):
            await sink.write(b)
        await sink.close()

    asyncio.run(run())
    by_dir = {f.parent.relative_to(tmp_path).as_posix(): read_landed(f) for f in landed_files(tmp_path)}
    assert by_dir == {
        "raw/exchange=binance/channel=trades/dt=2024-03-09/hour=23": trades.to_jsonl() * 2,
        "raw/exchange=binance/channel=ticker/dt=2024-03-09/hour=23": ticker.to_jsonl(),
        "raw/exchange=kucoin/channel=trades/dt=2024-03-09/hour=23": kucoin.to_jsonl(),
    }


def test_path_unsafe_exchange_name_is_sanitized_and_stays_under_the_root(tmp_path: Path) -> None:
    root = tmp_path / "landing"
    evil = make_batch(1, exchange="../../etc/x y")

    async def run() -> None:
        sink = LandingSink(settings(root))
        await sink.write(evil)
        await sink.close()

    asyncio.run(run())
    files = landed_files(tmp_path)
    assert len(files) == 1
    rel = files[0].relative_to(root).as_posix()
    expected = rf"raw/exchange=\.\._\.\._etc_x_y/channel=trades/dt=2024-03-09/hour=23/{UUID}\.jsonl\.gz"
    assert re.fullmatch(expected, rel)
    assert read_landed(files[0]) == evil.to_jsonl()


def test_nothing_is_visible_before_roll_and_no_temp_file_remains_after_close(tmp_path: Path) -> None:
    written = batches(3)

    async def run() -> None:
        sink = LandingSink(settings(tmp_path))
        for b in written:
            await sink.write(b)
        # Durable but staged: only in the hidden _staging folder, which Spark/Hadoop ignore.
        assert final_files(tmp_path) == []
        staged = landed_files(tmp_path)
        assert len(staged) == 1 and staged[0].parent.name == "_staging"
        assert gzip.decompress(staged[0].read_bytes()) == b"".join(b.to_jsonl() for b in written)
        await sink.close()

    asyncio.run(run())
    files = landed_files(tmp_path)
    assert files == final_files(tmp_path) and len(files) == 1
    assert list((tmp_path / "_staging").iterdir()) == []


def test_rolls_by_size_into_files_of_whole_batches(tmp_path: Path) -> None:
    written = batches(40, n=5)
    one_member = len(gzip.compress(written[0].to_jsonl(), mtime=0))

    async def run() -> None:
        sink = LandingSink(settings(tmp_path, roll_bytes=one_member * 4, roll_seconds=3600))
        for b in written[:20]:
            await sink.write(b)
        await sink.maintain()  # finishes the parts that reached roll_bytes
        assert len(final_files(tmp_path)) >= 4
        for b in written[20:]:
            await sink.write(b)
        await sink.close()

    asyncio.run(run())
    files = final_files(tmp_path)
    assert 8 <= len(files) <= 12
    contents = [read_landed(f) for f in files]
    # Each file holds whole batches, within the size bound; together every batch exactly once.
    assert all(f.stat().st_size <= one_member * 5 for f in files)
    jsonl = {b.to_jsonl() for b in written}
    seen: list[bytes] = []
    for data in contents:
        lines = data.splitlines(keepends=True)
        assert len(lines) % 5 == 0
        chunk = [b"".join(lines[i : i + 5]) for i in range(0, len(lines), 5)]
        assert set(chunk) <= jsonl
        seen.extend(chunk)
    assert sorted(seen) == sorted(b.to_jsonl() for b in written)


def test_rolls_by_time_and_starts_a_new_file(tmp_path: Path) -> None:
    now = [1000.0]
    first, second = batches(2)

    async def run() -> None:
        sink = LandingSink(settings(tmp_path, roll_seconds=60), clock=lambda: now[0])
        await sink.write(first)
        now[0] += 59
        await sink.maintain()
        assert final_files(tmp_path) == []
        now[0] += 1
        await sink.maintain()
        files = final_files(tmp_path)
        assert [read_landed(f) for f in files] == [first.to_jsonl()]
        await sink.write(second)
        await sink.close()
        later = [f for f in final_files(tmp_path) if f not in files]
        assert [read_landed(f) for f in later] == [second.to_jsonl()]

    asyncio.run(run())


def test_background_roller_lands_an_idle_part_without_close(tmp_path: Path) -> None:
    batch = make_batch(2)

    async def run() -> None:
        sink = LandingSink(settings(tmp_path, roll_seconds=0.2))
        await sink.write(batch)
        deadline = time.monotonic() + seconds(5)
        while not final_files(tmp_path) and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        assert [read_landed(f) for f in final_files(tmp_path)] == [batch.to_jsonl()]
        await sink.close()

    asyncio.run(run())


def test_crash_leftover_part_is_cut_to_whole_batches_and_landed_at_next_start(tmp_path: Path) -> None:
    written = batches(2)

    async def crash() -> None:
        sink = LandingSink(settings(tmp_path))
        for b in written:
            await sink.write(b)
        # no close(): the process dies here

    asyncio.run(crash())
    (staged,) = landed_files(tmp_path)
    torn = gzip.compress(make_batch(3, batch_id="torn").to_jsonl(), mtime=0)[:-7]
    with open(staged, "ab") as fh:  # a write that never returned
        fh.write(torn)

    async def restart() -> None:
        sink = LandingSink(settings(tmp_path))
        await sink.close()

    asyncio.run(restart())
    files = landed_files(tmp_path)
    assert len(files) == 1 and files == final_files(tmp_path)
    assert files[0].name == staged.name.split("~")[-1]
    assert read_landed(files[0]) == b"".join(b.to_jsonl() for b in written)


def test_complete_gzip_prefix_stops_at_a_torn_member() -> None:
    a, b = gzip.compress(b"a\n"), gzip.compress(b"bb\n")
    assert complete_gzip_prefix(a + b) == len(a + b)
    assert complete_gzip_prefix(a + b[:-1]) == len(a)
    assert complete_gzip_prefix(a + b"\x1f") == len(a)
    assert complete_gzip_prefix(b"") == 0


def test_write_after_close_is_refused_for_good(tmp_path: Path) -> None:
    async def run() -> None:
        sink = LandingSink(settings(tmp_path))
        await sink.close()
        with pytest.raises(SinkError) as err:
            await sink.write(make_batch(1))
        assert err.value.retryable is False

    asyncio.run(run())


def test_s3_roots_accept_s3_and_s3a_and_local_paths_are_local() -> None:
    assert split_s3_root("s3://bucket/a/b/") == ("bucket", "a/b")
    assert split_s3_root("s3a://bucket") == ("bucket", "")
    assert split_s3_root("landing") is None
    with pytest.raises(ValueError):
        split_s3_root("s3:///nobucket")
