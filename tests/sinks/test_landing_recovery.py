"""Crash recovery of staged landing parts: exact cut at the last whole member, in linear time."""

from __future__ import annotations

import asyncio
import gzip
import os
import random
import time
import zlib
from pathlib import Path

import pytest

from extractors.sinks import landing
from extractors.sinks.landing import LandingSettings, LandingSink, complete_gzip_prefix

#: A staged part of the size the landing sink rolls at by default (``roll_bytes``).
BIG_PART_BYTES = 64 * 1024 * 1024
STAGED_NAME = "raw~exchange=binance~channel=trades~dt=2024-03-09~hour=23~0123456789abcdef.jsonl.gz"


def members(count: int, *, seed: int, raw_bytes: int = 12_000) -> list[bytes]:
    """``count`` gzip members of JSON lines about as compressible as real envelopes (~2.5x)."""
    rng = random.Random(seed)
    out = []
    for i in range(count):
        lines = []
        size = 0
        while size < raw_bytes:
            line = f'{{"conn_seq":{i}-{size},"payload":"{rng.randbytes(48).hex()}","exchange":"binance"}}\n'
            lines.append(line)
            size += len(line)
        out.append(gzip.compress("".join(lines).encode(), compresslevel=6, mtime=0))
    return out


def staged_part(tmp_path: Path, whole: list[bytes], torn: bytes) -> Path:
    staging = tmp_path / "landing" / "_staging"
    staging.mkdir(parents=True)
    path = staging / STAGED_NAME
    with open(path, "wb") as fh:
        for member in whole:
            fh.write(member)
        fh.write(torn)
    return path


def recover(tmp_path: Path) -> Path:
    """Start a sink on the folder (recovery runs in the constructor) and let close land the part."""
    sink = LandingSink(LandingSettings(root=str(tmp_path / "landing"), fsync=False))
    asyncio.run(sink.close())
    (landed,) = (tmp_path / "landing").glob("raw/exchange=binance/channel=trades/dt=2024-03-09/hour=23/*")
    assert not list((tmp_path / "landing" / "_staging").iterdir())
    return landed


def _cut_points(member: bytes) -> dict[str, int]:
    return {
        "one byte of the header": 1,
        "inside the gzip header": 5,
        "inside the deflate data": len(member) // 2,
        "inside the CRC-32 trailer": len(member) - 6,
        "all but the last ISIZE byte": len(member) - 1,
    }


TORN = list(_cut_points(members(1, seed=9)[0]).items())


@pytest.mark.parametrize(("where", "cut"), TORN, ids=[w for w, _ in TORN])
def test_recovery_cuts_a_part_back_to_its_last_whole_member(tmp_path: Path, where: str, cut: int) -> None:
    whole = members(40, seed=1)
    torn = members(1, seed=9)[0][:cut]
    staged_part(tmp_path, whole, torn)
    landed = recover(tmp_path)
    assert landed.read_bytes() == b"".join(whole)
    assert gzip.decompress(landed.read_bytes()) == b"".join(gzip.decompress(m) for m in whole)


def test_complete_gzip_prefix_finds_every_member_boundary_across_scan_chunks() -> None:
    whole = members(30, seed=2, raw_bytes=40_000)  # members larger than one scan chunk
    data = b"".join(whole)
    ends = [sum(len(m) for m in whole[: i + 1]) for i in range(len(whole))]
    for end in ends:
        assert complete_gzip_prefix(data[:end]) == end
        assert complete_gzip_prefix(data[: end + 3]) == end
        assert complete_gzip_prefix(data[: end - 1]) == (ends[ends.index(end) - 1] if end != ends[0] else 0)
    garbage = data + os.urandom(100)
    assert complete_gzip_prefix(garbage) == len(data)


def test_recovery_of_a_64_mib_part_is_linear_and_exact(tmp_path: Path) -> None:
    """Recovery used to copy the rest of the part once per member (quadratic: minutes at 64 MiB).
    The figure is printed, not asserted (STYLE: timing belongs in measurements)."""
    distinct = members(64, seed=3)  # ~5 KB each, like a 100-envelope batch
    whole = []
    size = 0
    while size < BIG_PART_BYTES:
        member = distinct[len(whole) % len(distinct)]
        whole.append(member)
        size += len(member)
    torn = members(1, seed=4)[0][:-3]
    path = staged_part(tmp_path, whole, torn)
    staged_bytes = path.stat().st_size
    started = time.perf_counter()
    sink = LandingSink(LandingSettings(root=str(tmp_path / "landing"), fsync=False))
    elapsed = time.perf_counter() - started
    asyncio.run(sink.close())
    (landed,) = (tmp_path / "landing").glob("raw/**/*.jsonl.gz")
    assert landed.stat().st_size == size
    with open(landed, "rb") as fh:
        assert fh.read(len(whole[0])) == whole[0]
        fh.seek(size - len(whole[-1]))
        assert fh.read() == whole[-1]
    print(
        f"\nlanding recovery: {staged_bytes / 2**20:.1f} MiB staged part, {len(whole)} members "
        f"+ a torn one, cut and queued in {elapsed:.2f}s ({staged_bytes / 2**20 / elapsed:.0f} MiB/s)"
    )


class _CountingZlib:
    """Stands in for the ``zlib`` module in ``extractors.sinks.landing``: counts input fed."""

    error = zlib.error

    def __init__(self) -> None:
        self.fed = 0

    def decompressobj(self, wbits: int) -> object:
        real = zlib.decompressobj(wbits=wbits)
        outer = self

        class Counting:
            def decompress(self, data: bytes | memoryview) -> bytes:
                outer.fed += len(data)
                return real.decompress(data)

            @property
            def eof(self) -> bool:
                return real.eof

            @property
            def unused_data(self) -> bytes:
                return real.unused_data

        return Counting()


def test_recovery_reads_each_byte_of_a_part_a_bounded_number_of_times(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The linearity check without a clock: the old scan fed the decompressor the whole rest of the
    part for every member (~members/2 times the part); now each byte is fed a few times at most."""
    whole = members(400, seed=5)
    staged_part(tmp_path, whole, members(1, seed=6)[0][:-10])
    counting = _CountingZlib()
    monkeypatch.setattr(landing, "zlib", counting)
    sink = LandingSink(LandingSettings(root=str(tmp_path / "landing"), fsync=False))
    monkeypatch.undo()
    asyncio.run(sink.close())
    staged_bytes = sum(len(m) for m in whole)
    assert counting.fed <= 4 * staged_bytes, (counting.fed, staged_bytes)
