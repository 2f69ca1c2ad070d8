"""Silver benchmark: a fixed landed sample through bronze, ``silver.markets`` and ``silver.trades``.

The sample's content is deterministic given the seed (only the landing file names are random UUIDs,
as in production). The exchange simulator's market universe, shared price walk and trade generator
(:mod:`infra.exchange_sim.markets`) run on a simulated clock; every trade is rendered by the
simulator's own payload builders exactly as the exchange sends it (Binance combined-stream
``@trade``, KuCoin ``/market/match``, Coinbase ``match``; REST discovery and gap-fill pages by the
simulator's own handlers, for the requests the extractor's modules make), classified by the
extractor's exchange module and wrapped in an :class:`~extractors.envelope.Envelope` as the runner
does, batched by the extractor's :class:`~extractors.batcher.Batcher` and written by the real
:class:`~extractors.sinks.landing.LandingSink` (files roll every :data:`ROLL_S` simulated seconds).
Discovery snapshots (channel ``markets``) land first. Each exchange loses its websocket for
``outage_s`` once; after the reconnect every market is gap-filled with the REST page the extractor
asks for, so some trades arrive only by REST and many twice: silver must keep each exactly once.

The pipeline then runs in this process with ``availableNow`` triggers, one query after the other
(bronze from the landing zone, ``silver_markets``, ``silver_trades``), on a temporary lake. A rate is
rows over the seconds of one query, start to stop (start-up, reads, Delta commits). The run fails
when ``silver.trades`` does not hold every distinct generated trade exactly once or anything was
quarantined: a figure measured on a broken pipeline means nothing.

    python -m infra.bench --only silver [--quick]
"""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import random
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from aiohttp import web
from aiohttp.test_utils import make_mocked_request
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql.streaming import StreamingQueryListener
from pyspark.sql.streaming.listener import QueryProgressEvent, QueryStartedEvent, QueryTerminatedEvent

from extractors.batcher import Batcher
from extractors.envelope import Batch, Channel, Envelope
from extractors.exchanges import connector
from extractors.exchanges.base import RestRequest
from extractors.settings import ExtractorSettings
from extractors.sinks.landing import LandingSettings, LandingSink
from infra.exchange_sim import binance as binance_sim
from infra.exchange_sim import coinbase as coinbase_sim
from infra.exchange_sim import kucoin as kucoin_sim
from infra.exchange_sim.markets import Market, PriceOracle, Trade, make_trade, requote
from infra.exchange_sim.server import ExchangeServer, SimConfig
from infra.exchange_sim.truth import GroundTruth
from lake.session import SparkSettings, build_spark
from lake.tables import (
    BRONZE_RAW_EVENTS,
    SILVER_MARKETS,
    SILVER_QUARANTINE,
    SILVER_TRADES,
    Lake,
    LakeSettings,
)
from spark_jobs import bronze_ingest, pipeline
from spark_jobs.runtime import BronzeSettings, SilverSettings, read_table

Figures = dict[str, float | int | str]

T0_US = 1767225600_000_000  # 2026-01-01T00:00:00Z: the first trade's event time is just after it
#: Landing files roll after this many simulated seconds (the production default is 300 s).
ROLL_S = 60.0
#: Share of the trades per exchange; within one, the n-th market gets weight 1/n.
EXCHANGE_SHARE: dict[str, float] = {"binance": 0.45, "kucoin": 0.30, "coinbase": 0.25}
SERVERS: dict[str, type[ExchangeServer]] = {
    "binance": binance_sim.BinanceServer,
    "kucoin": kucoin_sim.KucoinServer,
    "coinbase": coinbase_sim.CoinbaseServer,
}
#: When each exchange's websocket drops, as a fraction of the sample's event-time span.
OUTAGE_AT: dict[str, float] = {"binance": 0.35, "kucoin": 0.55, "coinbase": 0.75}
#: The gap fill runs this long after the reconnect; REST pages of one fill are this far apart.
FILL_DELAY_S = 0.3
FILL_SPACING_S = 0.02


@dataclass(frozen=True, slots=True)
class SampleSpec:
    """``trades`` generated over ``span_s`` seconds of event time on ``markets_per_exchange`` x 3."""

    trades: int
    span_s: float
    markets_per_exchange: int = 10
    seed: int = 7
    outage_s: float = 0.5

    def describe(self) -> str:
        start = datetime.fromtimestamp(T0_US / 1e6, tz=UTC)
        return (
            f"seed {self.seed}; {self.markets_per_exchange * len(SERVERS)} markets "
            f"({self.markets_per_exchange} per exchange: {', '.join(SERVERS)}); {self.trades} trades over "
            f"{self.span_s:.0f} s from {start:%Y-%m-%dT%H:%M:%SZ}; one {self.outage_s:g} s websocket "
            "outage per exchange, gap-filled by REST"
        )


FULL = SampleSpec(trades=200_000, span_s=300.0)
QUICK = SampleSpec(trades=10_000, span_s=120.0)


@dataclass(slots=True)
class SampleStats:
    """What was landed. ``keys`` are the distinct ``(exchange, native symbol, trade id)`` landed."""

    generated: int = 0
    ws_frames: int = 0
    missed_ws: int = 0
    rest_pages: int = 0
    rest_rows: int = 0
    envelopes: int = 0
    files: int = 0
    bytes: int = 0
    keys: set[tuple[str, str, int]] = field(default_factory=set)


class _Clock:
    """Simulated wall time in seconds: the receive time of the newest envelope."""

    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, to: float) -> None:
        self.now = max(self.now, to)


@dataclass(slots=True)
class _Conn:
    index: int = 1
    seq: int = 0
    last_recv_ns: int = 0


def _dumps(obj: Any) -> str:
    return json.dumps(obj, separators=(",", ":"))


# --- rendering: the simulator's payload builders, the extractor's requests -----------------------


def _ws_frame(exchange: str, market: Market, trade: Trade) -> str:
    """The websocket frame of one trade, as the exchange sends it."""
    if exchange == "binance":
        stream = f"{market.native.lower()}@trade"
        return binance_sim.wrap_combined(
            stream, binance_sim.trade_payload(market, trade, trade.ts_us // 1000)
        )
    if exchange == "kucoin":
        topic = f"/market/match:{market.native}"
        return kucoin_sim.message(topic, "trade.l3match", kucoin_sim.match_data(market, trade))
    return _dumps(coinbase_sim.match_payload(market, trade))


#: Where each exchange's REST trade rows keep the trade id, and the rows' wrapper (KuCoin ``data``).
_REST_TRADE_ID = {"binance": "id", "kucoin": "sequence", "coinbase": "trade_id"}


class _Rest:
    """An exchange's REST answers from the simulator's own handlers, in process (no socket)."""

    def __init__(self, server: ExchangeServer) -> None:
        self._app = web.Application()
        server.routes(self._app)

    async def body(self, request: RestRequest) -> str:
        match = await self._app.router.resolve(make_mocked_request(request.method, request.target))
        call = make_mocked_request(request.method, request.target, match_info=dict(match))
        response = await match.handler(call)
        assert isinstance(response, web.Response) and response.text is not None, request.target
        return response.text


def _trade_ids(exchange: str, body: str) -> list[int]:
    doc = json.loads(body)
    rows = doc["data"] if exchange == "kucoin" else doc
    return [int(row[_REST_TRADE_ID[exchange]]) for row in rows]


def _gap_request(exchange: str, native: str, after_id: int | None) -> RestRequest:
    """What the extractor asks after a reconnect: the trades after the last one it saw, or the
    recent trades when it saw none before the outage."""
    c = connector(exchange)
    if after_id is None:
        return c.recent_trades_request(native)
    return c.gap_fill_request(native, after_id=after_id, until_id=None)


# --- the landed sample ---------------------------------------------------------------------------


async def land_sample(root: Path, spec: SampleSpec) -> SampleStats:
    """Generate the sample and land it under ``root`` (``raw/exchange=../channel=../..``)."""
    stats = SampleStats()
    start_s = T0_US / 1e6
    clock = _Clock(start_s - 5.0)
    oracle = PriceOracle(spec.seed, clock=clock)
    config = SimConfig(symbols=spec.markets_per_exchange, seed=spec.seed)
    truth = GroundTruth()
    servers = {name: cls(config, oracle, truth) for name, cls in SERVERS.items()}
    defaults = ExtractorSettings()
    batches: list[Batch] = []
    batcher = Batcher(
        max_envelopes=defaults.batch_max_envelopes,
        max_age_s=defaults.batch_max_age_s,
        on_batch=batches.append,
        per_symbol_channels={name: connector(name).PER_SYMBOL_BATCH_CHANNELS for name in servers},
        clock=clock,
    )
    sink = LandingSink(LandingSettings(root=str(root), roll_seconds=ROLL_S, fsync=False), clock=clock)
    rest_seq = 0

    maintained = int(clock())

    async def emit(envelope: Envelope) -> None:
        nonlocal maintained
        clock.advance(envelope.recv_ts_ns / 1e9)
        if int(clock()) > maintained:  # what the sink's roller does every second: roll due files
            maintained = int(clock())
            await sink.maintain()
        stats.envelopes += 1
        batcher.add(envelope)
        batcher.flush_due()
        for batch in batches:
            await sink.write(batch)
        batches.clear()

    def rest_envelope(
        exchange: str, request: RestRequest, body: str, recv_s: float, symbol: str | None
    ) -> Envelope:
        nonlocal rest_seq
        rest_seq += 1
        channel: Channel = "trades" if symbol else "markets"
        recv_ns = round(recv_s * 1e9)
        return Envelope(
            exchange, channel, request.target, body, recv_ns, f"rest-{exchange}-{rest_seq}", 1, "rest", symbol
        )

    rest = {name: _Rest(server) for name, server in servers.items()}
    for i, name in enumerate(servers):
        request = connector(name).discovery_request()
        body = await rest[name].body(request)
        await emit(rest_envelope(name, request, body, clock() + 0.1 * i, None))

    rng = random.Random(f"silver-bench-{spec.seed}")
    choices: list[tuple[str, Market]] = []
    weights: list[float] = []  # of the choices
    for name, server in servers.items():
        total = sum(1 / n for n in range(1, len(server.trading) + 1))
        for n, market in enumerate(server.trading, start=1):
            choices.append((name, market))
            weights.append(EXCHANGE_SHARE[name] / n / total)
    cum_weights = list(itertools.accumulate(weights))
    outages = {
        name: (start_s + at * spec.span_s, start_s + at * spec.span_s + spec.outage_s)
        for name, at in OUTAGE_AT.items()
    }
    fills = sorted((up + FILL_DELAY_S, name) for name, (_, up) in outages.items())
    conns = {name: _Conn() for name in servers}
    last_before: dict[tuple[str, str], int] = {}  # last trade id seen on the websocket before the outage
    event_us = float(T0_US)
    for _ in range(spec.trades):
        event_us += rng.expovariate(spec.trades / spec.span_s) * 1e6
        ts_us = int(event_us)
        while fills and fills[0][0] * 1e6 <= ts_us:
            fill_s, name = fills.pop(0)
            for j, market in enumerate(servers[name].trading):
                after = last_before.get((name, market.native))
                request = _gap_request(name, market.native, after)
                body = await rest[name].body(request)
                ids = _trade_ids(name, body)
                stats.rest_pages += 1
                stats.rest_rows += len(ids)
                stats.keys.update((name, market.native, trade_id) for trade_id in ids)
                await emit(rest_envelope(name, request, body, fill_s + j * FILL_SPACING_S, market.native))
        name, market = rng.choices(choices, cum_weights=cum_weights)[0]
        server = servers[name]
        latency_ns = int((0.005 + rng.expovariate(1 / 0.02)) * 1e9)
        clock.advance(ts_us / 1e6)
        trade = make_trade(market, oracle, server.rng, ts_us, id_step=server.id_step)
        requote(market, oracle, server.rng, trade.ts_us)
        stats.generated += 1
        down, up = outages[name]
        if down * 1e6 <= ts_us < up * 1e6:
            stats.missed_ws += 1
            continue
        if ts_us < down * 1e6:
            last_before[(name, market.native)] = trade.trade_id
        conn = conns[name]
        if ts_us >= up * 1e6 and conn.index == 1:
            conn = conns[name] = _Conn(index=2)
        text = _ws_frame(name, market, trade)
        frame = connector(name).classify(text)
        if frame.kind != "data" or frame.channel != "trades":
            raise RuntimeError(
                f"{name}: the extractor does not take a generated trade frame as a trade: {text}"
            )
        recv_ns = max(ts_us * 1000 + latency_ns, conn.last_recv_ns + 1000)
        conn.last_recv_ns = recv_ns
        conn.seq += 1
        conn_id = f"{name}-{conn.index}-bench"
        stats.ws_frames += 1
        stats.keys.add((name, market.native, trade.trade_id))
        await emit(
            Envelope(
                name, "trades", frame.stream, text, recv_ns, conn_id, conn.seq, "ws", frame.native_symbol
            )
        )
    batcher.flush_all()
    for batch in batches:
        await sink.write(batch)
    await sink.close()
    files = list((root / "raw").rglob("*.jsonl.gz"))
    stats.files = len(files)
    stats.bytes = sum(f.stat().st_size for f in files)
    if len(stats.keys) != stats.generated:
        raise RuntimeError(
            f"the sample lost {stats.generated - len(stats.keys)} of {stats.generated} trades in its outages "
            "(a REST page did not cover them): shorten outage_s"
        )
    return stats


# --- the pipeline --------------------------------------------------------------------------------


class _Progress(StreamingQueryListener):
    """Prints a line per micro-batch; keeps per query name (input rows, batch seconds, addBatch seconds).

    Events arrive asynchronously (Spark's listener bus): :meth:`wait_terminated` before reading.
    """

    def __init__(self) -> None:
        self.batches: dict[str, list[tuple[int, float, float]]] = {}
        self._terminated: set[str] = set()
        self._changed = threading.Condition()

    def onQueryStarted(self, event: QueryStartedEvent) -> None:
        pass

    def onQueryProgress(self, event: QueryProgressEvent) -> None:
        p = event.progress
        name = p.name or str(p.id)
        rows, seconds, add_s = (
            p.numInputRows or 0,
            p.batchDuration / 1000,
            p.durationMs.get("addBatch", 0) / 1000,
        )
        print(
            f"     {name} batch {p.batchId}: {rows} rows in {seconds:.1f} s (addBatch {add_s:.1f} s)",
            flush=True,
        )
        with self._changed:
            self.batches.setdefault(name, []).append((rows, seconds, add_s))

    def onQueryTerminated(self, event: QueryTerminatedEvent) -> None:
        with self._changed:
            self._terminated.add(str(event.id))
            self._changed.notify_all()

    def wait_terminated(self, count: int, timeout_s: float = 30.0) -> None:
        with self._changed:
            self._changed.wait_for(lambda: len(self._terminated) >= count, timeout_s)


def run_pipeline(spark: SparkSession, *, landing: Path, lake: Lake, stats: SampleStats) -> Figures:
    """Bronze, ``silver_markets`` and ``silver_trades`` on the landed sample; figures and checks."""
    bronze = BronzeSettings(source="landing", landing_root=str(landing))
    silver = SilverSettings()
    timings: dict[str, float] = {}
    progress = _Progress()
    spark.streams.addListener(progress)
    # One pipeline.run per query (the same order and triggers as one run of all three) for progress.
    for label, stage_bronze, jobs in (
        ("bronze_ingest", bronze, ()),
        ("silver_markets", None, ("silver_markets",)),
        ("silver_trades", None, ("silver_trades",)),
    ):
        print(f"   {label} ...", flush=True)
        done = pipeline.run(spark, lake=lake, bronze=stage_bronze, silver=silver, jobs=jobs)
        print(f"   {label} done in {sum(done.values()):.1f} s", flush=True)
        timings |= done
    progress.wait_terminated(len(timings))
    spark.streams.removeListener(progress)

    def table(name: str) -> DataFrame:
        return read_table(spark, lake, name)

    bronze_rows = table(BRONZE_RAW_EVENTS.name).count()
    markets = table(SILVER_MARKETS.name).count()
    trades = table(SILVER_TRADES.name)
    silver_rows = trades.count()
    distinct_keys = trades.select("exchange", "symbol", "trade_id").distinct().count()
    quarantined = table(SILVER_QUARANTINE.name).groupBy("reason").count().collect()
    problems = []
    if bronze_rows != stats.envelopes:
        problems.append(f"bronze.raw_events holds {bronze_rows} rows, {stats.envelopes} envelopes landed")
    if silver_rows != stats.generated or distinct_keys != silver_rows:
        problems.append(
            f"silver.trades holds {silver_rows} rows ({distinct_keys} distinct keys), "
            f"{stats.generated} distinct trades were generated"
        )
    if quarantined:
        problems.append(f"silver.quarantine: {', '.join(f'{r[0]}={r[1]}' for r in quarantined)}")
    if problems:
        raise RuntimeError("the silver pipeline is wrong on the benchmark sample: " + "; ".join(problems))
    bronze_name = bronze_ingest.query_name(bronze)
    bronze_s = timings[bronze_name]
    trades_s = timings["silver_trades"]
    batches: Figures = {}
    for name, label in (
        (bronze_name, "bronze"),
        ("silver_markets", "silver_markets"),
        ("silver_trades", "silver_trades"),
    ):
        seen = progress.batches.get(name, [])
        batches[f"{label}_batches"] = len(seen)
        batches[f"{label}_add_batch_seconds"] = round(sum(add_s for _, _, add_s in seen), 1)
    return {
        "bronze_envelopes": bronze_rows,
        "bronze_seconds": round(bronze_s, 1),
        "bronze_rows_per_s": round(bronze_rows / bronze_s),
        "silver_markets_rows": markets,
        "silver_markets_seconds": round(timings["silver_markets"], 1),
        "silver_trades_rows": silver_rows,
        "silver_trades_seconds": round(trades_s, 1),
        "silver_trades_rows_per_s": round(silver_rows / trades_s),
        "silver_trades_input_items_per_s": round((stats.ws_frames + stats.rest_rows) / trades_s),
    } | batches


def run(*, quick: bool = False, seed: int | None = None) -> Figures:
    """Land the sample, run the pipeline on it, check the result; returns the figures."""
    spec = QUICK if quick else FULL
    if seed is not None:
        spec = replace(spec, seed=seed)
    started = time.perf_counter()
    figures: Figures = {"sample": spec.describe()}
    cores = os.cpu_count() or 2
    with tempfile.TemporaryDirectory(prefix="cryptolake-silver-bench-", ignore_cleanup_errors=True) as tmp:
        landing = Path(tmp) / "landing"
        print(f"   landing the sample: {spec.describe()}", flush=True)
        t0 = time.perf_counter()
        stats = asyncio.run(land_sample(landing, spec))
        figures |= {
            "input_trades": stats.generated,
            "input_trade_items": stats.ws_frames + stats.rest_rows,
            "input_ws_trade_frames": stats.ws_frames,
            "input_rest_pages": stats.rest_pages,
            "input_rest_trade_rows": stats.rest_rows,
            "input_envelopes": stats.envelopes,
            "landing_files": stats.files,
            "landing_mb": round(stats.bytes / 2**20, 1),
            "sample_build_seconds": round(time.perf_counter() - t0, 1),
        }
        print(
            f"   landed {stats.envelopes} envelopes ({stats.generated} trades, {stats.ws_frames} ws frames, "
            f"{stats.rest_pages} REST pages) in {stats.files} files in {figures['sample_build_seconds']} s",
            flush=True,
        )
        print(f"   starting Spark (local[{cores}])", flush=True)
        t0 = time.perf_counter()
        spark = build_spark(
            SparkSettings(
                master=f"local[{cores}]",
                app_name="cryptolake-bench-silver",
                shuffle_partitions=cores,
                driver_memory="3g",
                extra={"spark.sql.warehouse.dir": str(Path(tmp) / "warehouse")},
            )
        )
        figures |= {
            "spark_master": f"local[{cores}]",
            "spark_start_seconds": round(time.perf_counter() - t0, 1),
        }
        try:
            lake = Lake(LakeSettings(root=str(Path(tmp) / "lake")))
            figures |= run_pipeline(spark, landing=landing, lake=lake, stats=stats)
        finally:
            spark.stop()
    figures["total_seconds"] = round(time.perf_counter() - started, 1)
    return figures


if __name__ == "__main__":
    for key, value in run(quick="--quick" in sys.argv).items():
        print(f"{key:32} {value}")
