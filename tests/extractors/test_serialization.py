"""Landed bytes do not change with the fast path: orjson in ``classify`` and for the envelope lines.

A recorded feed (``data/recorded_feed.jsonl.gz``: 2,100 raw websocket frames of the simulator's
Binance, KuCoin and Coinbase, trades, tickers, L1, acks, malformed and duplicated frames) is
replayed through the runner's frame handling twice: the old way (stdlib ``json.loads`` in
``classify``, each envelope serialized with ``json.dumps(dataclasses.asdict(e), ...)``, the code
this replaced, kept here as the reference) and the new way (orjson in ``classify``, the
batcher's lines landed by the real landing sink). The decoded lines of the landing files must
equal the old lines byte for byte.
"""

from __future__ import annotations

import asyncio
import dataclasses
import gzip
import itertools
import json
from pathlib import Path
from typing import Any

import pytest

import extractors.connection as connection_module
from extractors.batcher import Batcher
from extractors.connection import Connection
from extractors.envelope import Batch, Envelope
from extractors.exchanges import connector as get_connector
from extractors.metrics import Metrics
from extractors.runner import ExchangeRunner
from extractors.settings import load_settings
from extractors.sinks.landing import LandingSettings, LandingSink

FEED = Path(__file__).with_name("data") / "recorded_feed.jsonl.gz"
EXCHANGES = ("binance", "kucoin", "coinbase")


def old_line(envelope: Envelope) -> bytes:
    """How an envelope was serialized before orjson (extractors/envelope.py until 2026-12-01)."""
    return (
        json.dumps(dataclasses.asdict(envelope), separators=(",", ":"), ensure_ascii=False) + "\n"
    ).encode()


def recorded(exchange: str) -> list[str]:
    with gzip.open(FEED, "rt", encoding="utf-8") as fh:
        rows = [json.loads(line) for line in fh]
    return [r["frame"] for r in rows if r["exchange"] == exchange]


def replay(exchange: str, frames: list[str], monkeypatch: pytest.MonkeyPatch, *, old: bool) -> list[Envelope]:
    """Every envelope the runner emits for ``frames`` on one connection (receive times counted)."""
    module = get_connector(exchange)
    with monkeypatch.context() as patch:
        clock = itertools.count(1_767_225_600_000_000_000, 1_000_003)
        patch.setattr(connection_module.time, "time_ns", lambda: next(clock))
        if old:
            patch.setattr(module, "loads", json.loads)
        emitted: list[Envelope] = []
        settings = load_settings({"extractors": {"exchanges": [exchange]}}, environ={})
        runner = ExchangeRunner(
            module,
            settings,
            emit=emitted.append,
            metrics=Metrics(),
            http=None,  # type: ignore[arg-type]  # no REST in this replay
            stop=asyncio.Event(),
        )
        conn = Connection(index=0, markets=[], firehose=True, conn_id=f"{exchange}-0-replay")
        for frame in frames:
            runner.connections.on_message(conn, frame)
    return emitted


def landed_lines(root: Path) -> list[bytes]:
    lines: list[bytes] = []
    for path in sorted((root / "raw").rglob("*.jsonl.gz")):
        lines += gzip.decompress(path.read_bytes()).splitlines(keepends=True)
    return lines


@pytest.mark.parametrize("exchange", EXCHANGES)
def test_a_recorded_feed_lands_byte_identical_lines_through_the_old_and_the_new_path(
    exchange: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    frames = recorded(exchange)
    assert len(frames) >= 500
    before = replay(exchange, frames, monkeypatch, old=True)
    after = replay(exchange, frames, monkeypatch, old=False)
    assert after == before  # the same envelopes: classify decides the same with orjson
    websocket_l1 = {"l1"} if exchange != "coinbase" else set()  # Coinbase tickers carry its L1
    assert {e.channel for e in after} >= {"trades", "ticker", "deadletter"} | websocket_l1

    batches: list[Batch] = []
    batcher = Batcher(max_envelopes=37, max_age_s=1.0, on_batch=batches.append, max_bytes=64 * 1024)
    for envelope in after:
        batcher.add(envelope)
    batcher.flush_all()

    async def land() -> None:
        sink = LandingSink(LandingSettings(root=str(tmp_path), fsync=False))
        for batch in batches:
            await sink.write(batch)
        await sink.close()

    asyncio.run(land())
    expected = [old_line(e) for e in before]
    for batch in batches:  # each batch's bytes, in order
        assert batch.to_jsonl() == b"".join(old_line(e) for e in batch.envelopes)
    assert sorted(landed_lines(tmp_path)) == sorted(expected)


ODD_TEXT = [
    "plain",
    'quotes " and \\ backslashes / slash',
    "non-ASCII é € 😀 and U+2028 \u2028 U+2029 \u2029 and NEL \x85",
    "control \x00 \x01 \x1f \x7f \t \n \r \b \f",
    "",
]


@pytest.mark.parametrize("text", ODD_TEXT)
def test_odd_strings_serialize_exactly_as_the_stdlib_did_and_read_back(text: str) -> None:
    fields: dict[str, Any] = dict(
        exchange="binance",
        channel="deadletter",
        stream=text,
        payload=text + '{"a":1}',
        recv_ts_ns=2**63 - 1,
        conn_id=text,
        conn_seq=0,
        source="ws",
    )
    for extra in ({}, {"native_symbol": text, "error": text}, {"native_symbol": None, "error": "x"}):
        envelope = Envelope(**fields, **extra)
        assert envelope.to_json_bytes() + b"\n" == old_line(envelope)
        assert envelope.to_json() == old_line(envelope).decode()[:-1]
        assert Envelope.from_json(envelope.to_json()) == envelope
        batch = Batch("binance", "deadletter", "deadletter", "b-1", (envelope, envelope))
        assert Batch.envelopes_from_jsonl(batch.to_jsonl()) == [envelope, envelope]


def test_a_lone_surrogate_fails_as_it_did_not_silently() -> None:
    envelope = Envelope(
        exchange="binance",
        channel="deadletter",
        stream="",
        payload="bad \ud800",
        recv_ts_ns=1,
        conn_id="c",
        conn_seq=1,
    )
    with pytest.raises(UnicodeEncodeError):
        old_line(envelope)
    with pytest.raises(UnicodeEncodeError):
        envelope.to_json_bytes()
