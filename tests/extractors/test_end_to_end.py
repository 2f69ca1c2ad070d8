"""The extractor against the local exchange simulator with faults on, landing into real files.

For each exchange: run the extractor with the landing sink on a temp folder, inject disconnects,
a stall, duplicates, malformed frames and REST 429s, let it settle, stop it (graceful flush), read
every landed file back and compare the trades in them (WS frames and REST gap-fill pages, parsed
here independently of the extractor's code) with the simulator's ground truth: per market, every
trade between the first and the last one landed is there with its exact price and size, except
exactly the trades inside the gaps the extractor recorded as unrecoverable.
"""

from __future__ import annotations

import asyncio
import gzip
import json
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from extractors.envelope import Batch, Envelope
from extractors.runner import Extractor
from extractors.settings import load_settings
from extractors.sinks.base import Sink
from extractors.sinks.landing import LandingSettings, LandingSink
from infra.exchange_sim import ExchangeSimulator
from tests.conftest import seconds

Trade = tuple[str, int, str, str]  # native symbol, ordering id, price, size


def read_landing(root: Path) -> list[Envelope]:
    envelopes: list[Envelope] = []
    for path in sorted((root / "raw").rglob("*.jsonl.gz")):
        for line in gzip.decompress(path.read_bytes()).decode().splitlines():
            envelopes.append(Envelope.from_json(line))
    return envelopes


def ws_trades(exchange: str, payload: str) -> list[Trade]:
    doc = json.loads(payload)
    if exchange == "binance":
        d = doc["data"]
        return [(d["s"], int(d["t"]), d["p"], d["q"])]
    if exchange == "kucoin":
        d = doc["data"]
        return [(d["symbol"], int(d["sequence"]), d["price"], d["size"])]
    return [(doc["product_id"], int(doc["trade_id"]), doc["price"], doc["size"])]


def rest_trades(exchange: str, envelope: Envelope) -> list[Trade]:
    doc: Any = json.loads(envelope.payload)
    symbol = envelope.native_symbol
    assert symbol is not None
    if exchange == "binance":
        return [(symbol, int(r["id"]), r["price"], r["qty"]) for r in doc]
    if exchange == "kucoin":
        return [(symbol, int(r["sequence"]), r["price"], r["size"]) for r in doc["data"]]
    return [(symbol, int(r["trade_id"]), r["price"], r["size"]) for r in doc]


def truth_trades(sim: ExchangeSimulator, exchange: str) -> set[Trade]:
    return {(r.native_symbol, int(r.trade_id), r.price, r.size) for r in sim.truth.records(exchange)}


async def wait_for(predicate: Callable[[], bool], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached in time"
        await asyncio.sleep(0.05)


async def run_extractor(
    sim: ExchangeSimulator,
    exchanges: tuple[str, ...],
    root: Path,
    faults: Callable[[ExchangeSimulator, Extractor], Awaitable[None]],
    *,
    wrap_sink: Callable[[Sink], Sink] = lambda sink: sink,
    **extra: Any,
) -> Extractor:
    """Extract ``exchanges`` from ``sim`` into a landing folder while ``faults`` run; stop cleanly."""
    config: dict[str, Any] = {
        "extractors": {
            **extra,
            "exchanges": list(exchanges),
            "stale_after_s": seconds(1.5),
            "backoff_initial_s": 0.05,
            "backoff_max_s": 0.5,
            "batch_max_age_s": 0.2,
            "shutdown_timeout_s": seconds(5),
            "l1_poll_interval_s": 1.0,
            "state_dir": str(root / "_state"),
            **{
                exchange: {
                    "rest_url": sim.urls[exchange].rest,
                    "ws_url": "" if exchange == "kucoin" else sim.urls[exchange].ws,
                    "markets_per_connection": 3,
                }
                for exchange in exchanges
            },
        }
    }
    settings = load_settings(config, environ={})
    sink = wrap_sink(LandingSink(LandingSettings(root=str(root), fsync=False, roll_seconds=1.0)))
    extractor = Extractor(settings, [sink])
    stop = asyncio.Event()
    task = asyncio.create_task(extractor.run(stop))
    await wait_for(lambda: all(exchange in extractor.runners for exchange in exchanges), seconds(5))
    for exchange in exchanges:
        runner = extractor.runners[exchange]
        await wait_for(lambda runner=runner: len(runner.last_ids) >= 3, seconds(10))  # type: ignore[misc]
    await faults(sim, extractor)
    for exchange in exchanges:
        sim.clear_faults(exchange)
    await asyncio.sleep(seconds(1.5))
    await wait_for(lambda: extractor.idle, seconds(20))
    await asyncio.sleep(seconds(0.5))
    stop.set()
    await asyncio.wait_for(task, seconds(10))
    await sink.close()
    return extractor


async def extract_with_faults(
    exchange: str,
    root: Path,
    faults: Callable[[ExchangeSimulator, Extractor], Awaitable[None]],
    *,
    symbols: int = 6,
    rate: int = 60,
    **extra: Any,
) -> tuple[list[Envelope], set[Trade], Extractor]:
    async with ExchangeSimulator(exchanges=(exchange,), symbols=symbols, rate=rate, seed=11) as sim:
        extractor = await run_extractor(sim, (exchange,), root, faults, **extra)
        truth = truth_trades(sim, exchange)
    return read_landing(root), truth, extractor


async def standard_faults(sim: ExchangeSimulator, exchange: str) -> None:
    sim.inject(exchange, "close_after", frames=15)
    await asyncio.sleep(seconds(1.5))
    sim.inject(exchange, "stall", after=5)
    await asyncio.sleep(seconds(3))
    sim.inject(exchange, "duplicate", count=5)
    sim.inject(exchange, "malformed", count=2)
    sim.inject(exchange, "malformed", count=1, replace=True)
    await asyncio.sleep(seconds(1.5))
    sim.inject(exchange, "rest_error", status=429, count=2, retry_after=1)
    sim.inject(exchange, "close_after", frames=10, abrupt=True)
    await asyncio.sleep(seconds(3))


def check_against_truth(exchange: str, envelopes: list[Envelope], truth: set[Trade]) -> dict[str, int]:
    landed: set[Trade] = set()
    gaps: list[tuple[str, int, float]] = []
    seqs: dict[str, list[int]] = {}
    for e in envelopes:
        assert e.exchange == exchange
        assert e.recv_ts_ns > 1_600_000_000 * 10**9
        if e.channel == "trades":
            landed.update(ws_trades(exchange, e.payload) if e.source == "ws" else rest_trades(exchange, e))
        elif e.channel == "gaps":
            g = json.loads(e.payload)
            gaps.append((g["native_symbol"], g["after_id"], g["before_id"] or float("inf")))
        elif e.channel == "deadletter":
            assert e.error
        if e.source == "ws":
            seqs.setdefault(e.conn_id, []).append(e.conn_seq)
    # Per connection, frame counters are unique and increasing within each landed channel order.
    for conn_id, numbers in seqs.items():
        assert len(numbers) == len(set(numbers)), conn_id
    assert landed, "no trades landed"
    # Everything landed is a real trade with its exact price and size.
    assert landed <= truth, sorted(landed - truth)[:5]
    by_symbol: dict[str, list[int]] = {}
    for symbol, trade_id, _, _ in landed:
        by_symbol.setdefault(symbol, []).append(trade_id)
    window = {s: (min(ids), max(ids)) for s, ids in by_symbol.items()}

    def in_gap(t: Trade) -> bool:
        return any(s == t[0] and lo < t[1] < hi for s, lo, hi in gaps)

    expected = {t for t in truth if t[0] in window and window[t[0]][0] <= t[1] <= window[t[0]][1]}
    lost = {t for t in expected if in_gap(t)}
    missing = expected - lost - landed
    assert not missing, f"{len(missing)} trades neither landed nor in a recorded gap: {sorted(missing)[:5]}"
    assert not (landed & lost), "a trade inside a recorded gap was landed: the gap record is wrong"
    # Every market that traded is covered.
    assert {t[0] for t in truth} == set(window)
    return {"landed": len(landed), "lost": len(lost), "gaps": len(gaps)}


@pytest.mark.parametrize("exchange", ["binance", "kucoin", "coinbase"])
def test_every_trade_lands_despite_disconnects_stalls_duplicates_malformed_frames_and_429s(
    exchange: str, tmp_path: Path
) -> None:
    async def faults(sim: ExchangeSimulator, extractor: Extractor) -> None:
        await standard_faults(sim, exchange)

    envelopes, truth, extractor = asyncio.run(extract_with_faults(exchange, tmp_path, faults))
    figures = check_against_truth(exchange, envelopes, truth)
    channels = {e.channel for e in envelopes}
    assert {"markets", "trades", "l1", "ticker", "deadletter"} <= channels
    assert any(e.channel == "trades" and e.source == "rest" for e in envelopes), "no gap fill landed"
    m = extractor.metrics
    assert m.value("cryptolake_extractor_reconnects_total", exchange=exchange, reason="stale") >= 1
    assert m.value("cryptolake_extractor_rest_throttled_total", exchange=exchange) >= 1
    assert m.value("cryptolake_extractor_deadletters_total", exchange=exchange, reason="invalid_json") >= 2
    assert m.value("cryptolake_extractor_duplicate_trades_total", exchange=exchange) >= 1
    assert figures["landed"] > 50


def test_kucoin_trades_older_than_the_last_100_become_exact_recorded_gaps(tmp_path: Path) -> None:
    async def faults(sim: ExchangeSimulator, extractor: Extractor) -> None:
        # ~100 trades/s per market; a stall detected after 1.5 s misses more than histories keeps.
        sim.inject("kucoin", "stall", after=0)
        await asyncio.sleep(seconds(3))

    envelopes, truth, extractor = asyncio.run(
        extract_with_faults("kucoin", tmp_path, faults, symbols=3, rate=300)
    )
    figures = check_against_truth("kucoin", envelopes, truth)
    assert figures["gaps"] >= 1 and figures["lost"] > 0
    assert extractor.metrics.value("cryptolake_extractor_gaps_unrecoverable_total", exchange="kucoin") >= 1


@pytest.mark.parametrize("exchange", ["binance", "coinbase"])
def test_new_listings_are_picked_up_and_delisted_markets_dropped(exchange: str, tmp_path: Path) -> None:
    state: dict[str, str] = {}

    async def faults(sim: ExchangeSimulator, extractor: Extractor) -> None:
        runner = extractor.runners[exchange]
        gone = runner.markets[0]
        sim.delist(exchange, gone)
        new = sim.list_market(exchange, "NEWC", "USDT", usd_price=2.5)
        state.update(gone=gone, new=new)
        await wait_for(lambda: new in runner.markets and gone not in runner.markets, seconds(10))
        await wait_for(lambda: new in runner.last_ids, seconds(10))
        await asyncio.sleep(seconds(1))

    envelopes, truth, extractor = asyncio.run(
        extract_with_faults(exchange, tmp_path, faults, symbols=4, rediscover_interval_s=0.5)
    )
    check_against_truth(exchange, envelopes, truth)
    new_trades = [e for e in envelopes if e.channel == "trades" and e.native_symbol == state["new"]]
    assert any(e.source == "ws" for e in new_trades)
    m = extractor.metrics
    assert m.value("cryptolake_extractor_markets_added_total", exchange=exchange) == 1
    assert m.value("cryptolake_extractor_markets_dropped_total", exchange=exchange) == 1
    assert len([e for e in envelopes if e.channel == "markets"]) >= 2


class SlowSink:
    """A sink that takes ``delay_s`` per batch before delegating: slower than the feed."""

    def __init__(self, inner: Sink, delay_s: float) -> None:
        self.name = inner.name
        self._inner = inner
        self._delay_s = delay_s

    async def write(self, batch: Batch) -> None:
        await asyncio.sleep(self._delay_s)
        await self._inner.write(batch)

    async def close(self) -> None:
        await self._inner.close()


def test_a_sink_slower_than_the_feed_pauses_reading_instead_of_queueing_without_bound(
    tmp_path: Path,
) -> None:
    max_pending = 4
    depths: list[int] = []

    async def watch_the_queue(sim: ExchangeSimulator, extractor: Extractor) -> None:
        sim.inject("binance", "close_after", frames=40)  # a reconnect under pressure gap-fills too
        deadline = time.monotonic() + seconds(4)
        while time.monotonic() < deadline:
            depths.append(extractor.writer.queue.qsize())
            await asyncio.sleep(0.01)

    async def scenario() -> set[Trade]:
        async with ExchangeSimulator(exchanges=("binance",), symbols=6, rate=200, seed=11) as sim:
            await run_extractor(
                sim,
                ("binance",),
                tmp_path,
                watch_the_queue,
                wrap_sink=lambda sink: SlowSink(sink, delay_s=0.05),
                batch_max_envelopes=5,
                max_pending_batches=max_pending,
            )
            return truth_trades(sim, "binance")

    truth = asyncio.run(scenario())
    # The feed outran the sink (the queue reached the bound) and the readers held it there: a
    # batcher flush can add one batch per (channel, symbol) bucket past the bound, no more.
    assert max(depths) >= max_pending
    assert max(depths) <= max_pending + 12, max(depths)
    # Pausing lost nothing.
    figures = check_against_truth("binance", read_landing(tmp_path), truth)
    assert figures["landed"] > 200
