"""Batches for the sink tests and a fake of our own Sink interface for the spool's tests."""

from __future__ import annotations

import asyncio
import gzip
from pathlib import Path

from extractors.envelope import Batch, Envelope
from extractors.sinks.base import SinkError

#: 2024-03-09T23:59:58Z in nanoseconds.
T0_NS = 1_710_028_798_000_000_000


def make_batch(
    n: int = 3,
    *,
    exchange: str = "binance",
    channel: str = "trades",
    key: str = "BTCUSDT",
    batch_id: str = "b-0",
    ts_ns: int = T0_NS,
    seq: int = 0,
    payload_pad: str = "",
) -> Batch:
    envelopes = tuple(
        Envelope(
            exchange=exchange,
            channel=channel,  # type: ignore[arg-type]
            stream=f"{key.lower()}@trade",
            payload=f'{{"e":"trade","s":"{key}","t":{seq + i},"p":"0.1","note":"ü{payload_pad}"}}',
            recv_ts_ns=ts_ns + i * 1_000_000,
            conn_id="c-1",
            conn_seq=seq + i,
            native_symbol=key,
        )
        for i in range(n)
    )
    return Batch(exchange=exchange, channel=channel, key=key, batch_id=batch_id, envelopes=envelopes)  # type: ignore[arg-type]


def batches(count: int, *, n: int = 3, **kwargs: object) -> list[Batch]:
    return [make_batch(n, batch_id=f"b-{i}", seq=i * n, **kwargs) for i in range(count)]  # type: ignore[arg-type]


def landed_files(root: Path) -> list[Path]:
    """Every regular file under ``root`` (staging included), sorted by name."""
    return sorted(p for p in root.rglob("*") if p.is_file())


def read_landed(path: Path) -> bytes:
    return gzip.decompress(path.read_bytes())


class FlakySink:
    """Our own Sink interface, with a switchable outage: down -> retryable SinkError."""

    def __init__(self, name: str = "fake") -> None:
        self.name = name
        self.delivered: list[Batch] = []
        self.down = False
        self.fatal = False
        self.delay_s = 0.0
        self.closed = False
        self.attempts = 0

    async def write(self, batch: Batch) -> None:
        self.attempts += 1
        if self.delay_s:
            await asyncio.sleep(self.delay_s)
        if self.fatal:
            raise SinkError("rejected for good", retryable=False)
        if self.down:
            raise SinkError("sink is down", retryable=True)
        self.delivered.append(batch)

    async def close(self) -> None:
        self.closed = True
