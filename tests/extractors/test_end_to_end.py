"""The extractor against the local exchange simulator with faults on, landing into real files.

For each exchange: run the extractor with the landing sink on a temp folder, inject disconnects,
a stall, duplicates, malformed frames and REST 429s (each step waits until the extractor saw it),
let it settle (every market resubscribed, streaming again, no fill pending), stop it (graceful
flush), read every landed file back and compare the trades in them (WS frames and REST gap-fill
pages, parsed here independently of the extractor's code) with the simulator's ground truth over
the extractor's whole lifetime, by time: every trade the simulator made from the extractor's start
to its stop signal is there with its exact price and size, except exactly the trades inside the
gaps the extractor recorded as unrecoverable.
"""

from __future__ import annotations

import asyncio
import gzip
import json
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

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
    if exchange == "kraken":  # prices and sizes are JSON numbers: read as their text
        doc = json.loads(payload, parse_float=str, parse_int=str)
        return [(d["symbol"], int(d["trade_id"]), d["price"], d["qty"]) for d in doc["data"]]
    if exchange == "okx":
        return [(d["instId"], int(d["tradeId"]), d["px"], d["sz"]) for d in doc["data"]]
    if exchange == "bybit":
        return [(d["s"], int(d["i"]), d["p"], d["v"]) for d in doc["data"]]
    return [(doc["product_id"], int(doc["trade_id"]), doc["price"], doc["size"])]


def rest_trades(exchange: str, envelope: Envelope) -> list[Trade]:
    doc: Any = json.loads(envelope.payload)
    symbol = envelope.native_symbol
    assert symbol is not None
    if exchange == "binance":
        return [(symbol, int(r["id"]), r["price"], r["qty"]) for r in doc]
    if exchange == "kucoin":
        return [(symbol, int(r["sequence"]), r["price"], r["size"]) for r in doc["data"]]
    if exchange == "kraken":
        rows = next(v for k, v in doc["result"].items() if k != "last")
        return [(symbol, int(r[6]), r[0], r[1]) for r in rows]
    if exchange == "okx":
        return [(symbol, int(r["tradeId"]), r["px"], r["sz"]) for r in doc["data"]]
    if exchange == "bybit":
        return [(symbol, int(r["execId"]), r["price"], r["size"]) for r in doc["result"]["list"]]
    return [(symbol, int(r["trade_id"]), r["price"], r["size"]) for r in doc]


def truth_trades(
    sim: ExchangeSimulator, exchange: str, *, since_ms: int | None = None, until_ms: int | None = None
) -> set[Trade]:
    """The simulator's trades of ``exchange`` (made between ``since_ms`` and ``until_ms``, wall clock)."""
    return {
        (r.native_symbol, int(r.trade_id), r.price, r.size)
        for r in sim.truth.records(exchange)
        if (since_ms is None or r.ts_ms >= since_ms) and (until_ms is None or r.ts_ms <= until_ms)
    }


class Truth(NamedTuple):
    """What must land (``lifetime``: trades made while the extractor ran) and what may
    (``every``: all the simulator's trades; start-up REST pages reach back before the start)."""

    lifetime: set[Trade]
    every: set[Trade]


def now_ms() -> int:
    return time.time_ns() // 1_000_000


async def wait_for(predicate: Callable[[], bool], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached in time"
        await asyncio.sleep(0.05)


@dataclass(frozen=True)
class Run:
    """One extractor run: the extractor and its lifetime on the wall clock (ms since the epoch)."""

    extractor: Extractor
    started_ms: int
    stopped_ms: int

    def truth(self, sim: ExchangeSimulator, exchange: str) -> Truth:
        """Every trade made from the start to the stop signal, less the unsent tail: trades the
        simulator still held in its send queue when the connection closed (a reader paused by
        back-pressure leaves a backlog there) were never sent to anyone, so this run could not
        know them; the resume state stops below them and the next start fetches them."""
        records = [r for r in sim.truth.records(exchange) if self.started_ms <= r.ts_ms <= self.stopped_ms]
        last_sent: dict[str, int] = {}
        for r in records:
            if r.delivered:
                last_sent[r.native_symbol] = max(last_sent.get(r.native_symbol, 0), int(r.trade_id))
        lifetime = {
            (r.native_symbol, int(r.trade_id), r.price, r.size)
            for r in records
            if r.delivered or int(r.trade_id) < last_sent.get(r.native_symbol, 0)
        }
        return Truth(lifetime, truth_trades(sim, exchange))


async def settle(sim: ExchangeSimulator, extractor: Extractor, exchanges: tuple[str, ...]) -> None:
    """Wait until every market streams on the socket again and no gap fill is pending."""
    for exchange in exchanges:
        runner = extractor.runners[exchange]
        newest: dict[str, int] = {}
        for t in truth_trades(sim, exchange):
            newest[t[0]] = max(newest.get(t[0], 0), t[1])
        await wait_for(
            lambda runner=runner, newest=newest: all(  # type: ignore[misc]
                runner.last_ids.get(s, 0) > newest.get(s, 0) for s in runner.markets
            ),
            seconds(20),
        )
    await wait_for(lambda: extractor.idle, seconds(20))


async def run_extractor_timed(
    sim: ExchangeSimulator,
    exchanges: tuple[str, ...],
    root: Path,
    faults: Callable[[ExchangeSimulator, Extractor], Awaitable[None]],
    *,
    wrap_sink: Callable[[Sink], Sink] = lambda sink: sink,
    **extra: Any,
) -> Run:
    """Extract ``exchanges`` from ``sim`` into a landing folder while ``faults`` run; stop cleanly."""
    config: dict[str, Any] = {
        "extractors": {
            "stale_after_s": seconds(1.5),
            "backoff_initial_s": 0.05,
            "backoff_max_s": 0.5,
            "batch_max_age_s": 0.2,
            "shutdown_timeout_s": seconds(5),
            "l1_poll_interval_s": 1.0,
            **extra,
            "exchanges": list(exchanges),
            "state_dir": str(root / "_state"),
            **{
                exchange: {
                    "rest_url": sim.urls[exchange].rest,
                    "ws_url": "" if exchange == "kucoin" else sim.urls[exchange].ws,
                    "markets_per_connection": 3,
                    # Kraken's documented ~1 call/s would make the REST fills of each fault take
                    # seconds; the simulator allows more, so the test does not wait for them.
                    **({"rest_weight_per_s": 10.0} if exchange == "kraken" else {}),
                }
                for exchange in exchanges
            },
        }
    }
    settings = load_settings(config, environ={})
    sink = wrap_sink(LandingSink(LandingSettings(root=str(root), fsync=False, roll_seconds=1.0)))
    extractor = Extractor(settings, [sink])
    stop = asyncio.Event()
    started_ms = now_ms()
    task = asyncio.create_task(extractor.run(stop))
    await wait_for(lambda: all(exchange in extractor.runners for exchange in exchanges), seconds(5))
    for exchange in exchanges:
        runner = extractor.runners[exchange]
        await wait_for(lambda runner=runner: len(runner.last_ids) >= 3, seconds(10))  # type: ignore[misc]
    await faults(sim, extractor)
    for exchange in exchanges:
        sim.clear_faults(exchange)
    await settle(sim, extractor, exchanges)
    stopped_ms = now_ms()
    stop.set()
    await asyncio.wait_for(task, settings.extractors.shutdown_timeout_s + seconds(10))  # a hang guard
    await sink.close()
    return Run(extractor, started_ms, stopped_ms)


async def run_extractor(
    sim: ExchangeSimulator,
    exchanges: tuple[str, ...],
    root: Path,
    faults: Callable[[ExchangeSimulator, Extractor], Awaitable[None]],
    *,
    wrap_sink: Callable[[Sink], Sink] = lambda sink: sink,
    **extra: Any,
) -> Extractor:
    """:func:`run_extractor_timed` without the lifetime."""
    run = await run_extractor_timed(sim, exchanges, root, faults, wrap_sink=wrap_sink, **extra)
    return run.extractor


async def extract_with_faults(
    exchange: str,
    root: Path,
    faults: Callable[[ExchangeSimulator, Extractor], Awaitable[None]],
    *,
    symbols: int = 6,
    rate: int = 60,
    **extra: Any,
) -> tuple[list[Envelope], Truth, Extractor]:
    async with ExchangeSimulator(exchanges=(exchange,), symbols=symbols, rate=rate, seed=11) as sim:
        run = await run_extractor_timed(sim, (exchange,), root, faults, **extra)
        truth = run.truth(sim, exchange)
    return read_landing(root), truth, run.extractor


def metric(extractor: Extractor, name: str, **labels: str) -> float:
    return extractor.metrics.value(f"cryptolake_extractor_{name}", **labels)


async def standard_faults(sim: ExchangeSimulator, extractor: Extractor, exchange: str) -> None:
    """Each fault, then a wait until the extractor saw it (not a sleep)."""

    def reconnects() -> float:
        return sum(
            sample.value
            for family in extractor.metrics.registry.collect()
            for sample in family.samples
            if sample.name == "cryptolake_extractor_reconnects_total"
            and sample.labels.get("exchange") == exchange
        )

    def seen(predicate: Callable[[], bool]) -> Awaitable[None]:
        return wait_for(predicate, seconds(20))

    before = reconnects()
    sim.inject(exchange, "close_after", frames=15)
    await seen(lambda: reconnects() > before)
    await settle(sim, extractor, (exchange,))
    sim.inject(exchange, "stall", after=5)
    await seen(lambda: metric(extractor, "reconnects_total", exchange=exchange, reason="stale") >= 1)
    await settle(sim, extractor, (exchange,))
    sim.inject(exchange, "duplicate", count=5)
    sim.inject(exchange, "malformed", count=2)
    sim.inject(exchange, "malformed", count=1, replace=True)
    await seen(
        lambda: (
            metric(extractor, "duplicate_trades_total", exchange=exchange) >= 1
            and metric(extractor, "deadletters_total", exchange=exchange, reason="invalid_json") >= 2
        )
    )
    sim.inject(exchange, "rest_error", status=429, count=2, retry_after=1)
    before = reconnects()
    sim.inject(exchange, "close_after", frames=10, abrupt=True)
    await seen(lambda: reconnects() > before)
    await seen(lambda: metric(extractor, "rest_throttled_total", exchange=exchange) >= 1)


def check_against_truth(
    exchange: str, envelopes: list[Envelope], truth: Truth | set[Trade]
) -> dict[str, int]:
    """Every trade of ``truth.lifetime`` landed or lies inside a recorded gap, and nothing else
    is missing or wrong; returns the counts.

    Given a bare set (every trade the simulator made, also after the extractor stopped), only
    the trades between each market's first and last landed id are expected: that blind to loss
    at the head and the tail of a run, so pass a :class:`Truth` (:meth:`Run.truth`) instead.
    """
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
    every = truth.every if isinstance(truth, Truth) else truth
    # Everything landed is a real trade with its exact price and size.
    assert landed <= every, sorted(landed - every)[:5]

    def in_gap(t: Trade) -> bool:
        return any(s == t[0] and lo < t[1] < hi for s, lo, hi in gaps)

    if isinstance(truth, Truth):
        expected = truth.lifetime
        assert expected, "the simulator made no trade while the extractor ran"
    else:
        by_symbol: dict[str, list[int]] = {}
        for symbol, trade_id, _, _ in landed:
            by_symbol.setdefault(symbol, []).append(trade_id)
        window = {s: (min(ids), max(ids)) for s, ids in by_symbol.items()}
        expected = {t for t in every if t[0] in window and window[t[0]][0] <= t[1] <= window[t[0]][1]}
    lost = {t for t in expected if in_gap(t)}
    missing = expected - lost - landed
    assert not missing, (
        f"{len(missing)} of {len(expected)} trades neither landed nor in a gap: {sorted(missing)[:5]}"
    )
    assert not (landed & lost), "a trade inside a recorded gap was landed: the gap record is wrong"
    # Every market that traded is covered.
    assert {t[0] for t in expected} <= {t[0] for t in landed}
    return {"landed": len(landed), "lost": len(lost), "gaps": len(gaps)}


@pytest.mark.parametrize("exchange", ["binance", "kucoin", "coinbase", "kraken", "okx", "bybit"])
def test_every_trade_lands_despite_disconnects_stalls_duplicates_malformed_frames_and_429s(
    exchange: str, tmp_path: Path
) -> None:
    async def faults(sim: ExchangeSimulator, extractor: Extractor) -> None:
        await standard_faults(sim, extractor, exchange)

    envelopes, truth, extractor = asyncio.run(extract_with_faults(exchange, tmp_path, faults))
    figures = check_against_truth(exchange, envelopes, truth)
    channels = {e.channel for e in envelopes}
    # Kraken lands no `l1` channel: its ticker (sent on every best bid/offer change) is the L1.
    l1 = set() if exchange == "kraken" else {"l1"}
    assert {"markets", "trades", "ticker", "deadletter"} | l1 <= channels
    assert any(e.channel == "trades" and e.source == "rest" for e in envelopes), "no gap fill landed"
    m = extractor.metrics
    assert m.value("cryptolake_extractor_reconnects_total", exchange=exchange, reason="stale") >= 1
    assert m.value("cryptolake_extractor_rest_throttled_total", exchange=exchange) >= 1
    assert m.value("cryptolake_extractor_deadletters_total", exchange=exchange, reason="invalid_json") >= 2
    assert m.value("cryptolake_extractor_duplicate_trades_total", exchange=exchange) >= 1
    assert figures["landed"] > 50


@pytest.mark.parametrize("exchange", ["kucoin", "bybit"])
def test_trades_older_than_the_rest_history_become_exact_recorded_gaps(exchange: str, tmp_path: Path) -> None:
    """KuCoin ``histories`` keeps the last 100 trades, Bybit ``recent-trade`` the last 60."""

    async def faults(sim: ExchangeSimulator, extractor: Extractor) -> None:
        # ~100 trades/s per market; a stall detected after 1.5 s misses more than REST keeps.
        sim.inject(exchange, "stall", after=0)
        await wait_for(
            lambda: metric(extractor, "reconnects_total", exchange=exchange, reason="stale") >= 1, seconds(20)
        )

    envelopes, truth, extractor = asyncio.run(
        extract_with_faults(exchange, tmp_path, faults, symbols=3, rate=300)
    )
    figures = check_against_truth(exchange, envelopes, truth)
    assert figures["gaps"] >= 1 and figures["lost"] > 0
    assert extractor.metrics.value("cryptolake_extractor_gaps_unrecoverable_total", exchange=exchange) >= 1


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
        first = runner.last_ids[new]
        await wait_for(lambda: runner.last_ids[new] >= first + 5, seconds(10))  # it streams

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
        reconnected = "cryptolake_extractor_gaps_detected_total"

        def watched() -> bool:
            depths.append(extractor.writer.pending)
            return (
                max(depths) >= max_pending
                and extractor.metrics.value(reconnected, exchange="binance", reason="reconnect") >= 1
                and extractor.idle
            )

        await wait_for(watched, seconds(30))

    async def scenario() -> Truth:
        async with ExchangeSimulator(exchanges=("binance",), symbols=6, rate=200, seed=11) as sim:
            run = await run_extractor_timed(
                sim,
                ("binance",),
                tmp_path,
                watch_the_queue,
                wrap_sink=lambda sink: SlowSink(sink, delay_s=0.05),
                batch_max_envelopes=5,
                max_pending_batches=max_pending,
                # The readers read on to the close handshake at the stop, and this sink writes
                # 100 envelopes/s: the final writes need longer than the default budget.
                shutdown_timeout_s=seconds(60),
            )
            return run.truth(sim, "binance")

    truth = asyncio.run(scenario())
    # The feed outran the sink (the batches not yet durable, queued or being written, reached
    # the bound) and the readers held it there: a batcher flush can add one batch per (channel,
    # symbol) bucket past the bound, no more.
    assert max(depths) >= max_pending
    assert max(depths) <= max_pending + 12, max(depths)
    # Pausing lost nothing.
    figures = check_against_truth("binance", read_landing(tmp_path), truth)
    assert figures["landed"] > 200
