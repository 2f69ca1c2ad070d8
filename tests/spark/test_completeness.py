"""Simulator (a fast clock, trades withheld from the stream) -> extractor and its candle pollers ->
landing -> bronze -> ``spark_jobs.completeness``: every row of ``gold.completeness_1m`` equals
what the simulator's ground truth says, computed here in Python decimals. Binance's and
Coinbase's minutes are complete (Binance's withheld trades come back by REST gap fill); KuCoin's
stalled minutes fall short by exactly the trades that never landed (KuCoin's ids cannot reveal
the loss, so nothing refills it).

The job's inputs are written here with delta-rs: the bronze rows of the landed ``klines`` and
``gaps`` envelopes, and ``silver.trades`` from the landed trades (the simulator's values for each
landed id). Running the streaming bronze and silver jobs cost ~150 s on this machine, and
``tests/spark/test_silver_against_truth.py`` already proves silver holds exactly those trades."""

from __future__ import annotations

import asyncio
from collections import defaultdict
from datetime import UTC, datetime
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path

import pytest
from pyspark.sql import SparkSession
from pyspark.sql.types import LongType, StringType, StructField, StructType, TimestampType

from extractors.envelope import Envelope
from extractors.exchanges import connector
from extractors.klines import KlinePoller
from extractors.runner import Extractor
from extractors.settings import load_settings
from extractors.sinks.landing import LandingSettings, LandingSink
from infra.exchange_sim import ExchangeSimulator
from infra.exchange_sim.truth import TruthRecord
from lake.tables import BRONZE_RAW_EVENTS, PRICE, RAW_ENVELOPE_SCHEMA, SILVER_MARKETS, SILVER_TRADES, Lake
from spark_jobs import completeness
from tests.conftest import seconds
from tests.delta_rs import write_rows
from tests.extractors.test_end_to_end import read_landing, rest_trades, wait_for, ws_trades
from tests.spark.test_silver_against_truth import _event_ts

pytestmark = pytest.mark.spark

EXCHANGES = ("binance", "kucoin", "coinbase")
#: Trade times run 20x the wall clock from 280 s in the past: ~4 simulated minutes in 13 s, and
#: every trade stays in the past and within silver's 300 s latency bound while the extractor runs.
SPEED, LAG_S, RUN_S = 20.0, 280.0, 12.0
TEN = Decimal("1e-10")
Key = tuple[str, str, int]  # exchange, native symbol, trade id


async def _extract(landing: Path) -> dict[str, list[TruthRecord]]:
    sim = ExchangeSimulator(EXCHANGES, symbols=2, rate=100, seed=31, clock_speed=SPEED, clock_lag_s=LAG_S)
    async with sim:
        config = {
            "extractors": {
                "exchanges": list(EXCHANGES),
                "channels": ["trades"],
                "klines": False,  # pollers below run on the simulator's clock
                "stale_after_s": seconds(10),
                "batch_max_age_s": 0.2,
                "state_dir": str(landing / "_state"),
                **{
                    ex: {"rest_url": sim.urls[ex].rest, "ws_url": "" if ex == "kucoin" else sim.urls[ex].ws}
                    for ex in EXCHANGES
                },
            }
        }
        settings = load_settings(config, environ={})
        sink = LandingSink(LandingSettings(root=str(landing), fsync=False, roll_seconds=1.0))
        extractor = Extractor(settings, [sink])
        stop, polls_stop = asyncio.Event(), asyncio.Event()
        task = asyncio.create_task(extractor.run(stop))
        await wait_for(lambda: all(ex in extractor.runners for ex in EXCHANGES), seconds(5))
        runners = [extractor.runners[ex] for ex in EXCHANGES]
        for runner in runners:
            await wait_for(lambda runner=runner: len(runner.last_ids) >= 2, seconds(10))  # type: ignore[misc]
        pollers = [
            KlinePoller(
                connector(r.name),
                r.rest,
                markets=lambda r=r: r.markets,  # type: ignore[misc]
                emit=extractor.emit,
                stop=polls_stop,
                delay_s=3.0,
                rest_share=1.0,
                tick_s=0.1,
                clock=sim.now,
            )
            for r in runners
        ]
        poll_tasks = [asyncio.create_task(p.run()) for p in pollers]
        await asyncio.sleep(3.0)
        # Withhold ~2.5 s (50 simulated seconds) of trades from both streams.
        sim.inject("kucoin", "stall", after=0, seconds=2.5)
        sim.inject("binance", "stall", after=0, seconds=2.0)
        await asyncio.sleep(RUN_S - 3.0)
        polls_stop.set()
        await asyncio.gather(*poll_tasks)
        await wait_for(lambda: extractor.idle, seconds(10))
        stop.set()
        await asyncio.wait_for(task, seconds(20))
        await sink.close()
        return {ex: sim.truth.records(ex) for ex in EXCHANGES}


def _write_inputs(
    lake: Lake, envelopes: list[Envelope], truth: dict[str, list[TruthRecord]], landed: set[Key]
) -> None:
    """The job's inputs, written with delta-rs (no Spark jobs): the bronze rows of the landed
    ``klines``/``gaps`` envelopes, ``silver.trades`` (the simulator's values of each landed id)
    and ``silver.markets``."""
    now = datetime.now(UTC)
    bronze = [
        {
            **{k: getattr(e, k) for k in RAW_ENVELOPE_SCHEMA.fieldNames()},
            "recv_date": datetime.fromtimestamp(e.recv_ts_ns / 1e9, UTC).date(),
            "ingest_ts": now,
        }
        for e in envelopes
        if e.channel in ("klines", "gaps")
    ]
    write_rows(lake, BRONZE_RAW_EVENTS, bronze)
    records = [r for ex in EXCHANGES for r in truth[ex] if (ex, r.native_symbol, int(r.trade_id)) in landed]
    trades = [
        {
            "exchange": r.exchange,
            "symbol": r.symbol,
            "native_symbol": r.native_symbol,
            "base": r.base,
            "quote": r.quote,
            "trade_id": r.trade_id,
            "price": Decimal(r.price),
            "size": Decimal(r.size),
            "side": r.side,
            "event_ts": _event_ts(r).replace(tzinfo=UTC),
            "recv_ts": now,
            "source": "ws",
            "trade_date": _event_ts(r).date(),
        }
        for r in records
    ]
    write_rows(lake, SILVER_TRADES, trades)
    markets = {
        (r.exchange, r.native_symbol, r.symbol, r.base, r.quote) for ex in EXCHANGES for r in truth[ex]
    }
    write_rows(lake, SILVER_MARKETS, [(*m, "trading", now) for m in sorted(markets)])


def _minute(ms: int) -> datetime:
    return datetime.fromtimestamp(ms // 60_000 * 60, UTC).replace(tzinfo=None)


def _ratio(ours: Decimal | int, theirs: Decimal | int) -> Decimal:
    return (Decimal(ours) / Decimal(theirs)).quantize(TEN, rounding=ROUND_HALF_UP)


@pytest.mark.timeout(int(seconds(600)))
def test_completeness_is_1_on_clean_minutes_and_the_exact_shortfall_where_trades_were_withheld(
    spark: SparkSession, lake: Lake, tmp_path: Path
) -> None:
    landing = tmp_path / "landing"
    truth = asyncio.run(_extract(landing))
    envelopes = read_landing(landing)
    landed: set[Key] = set()
    for e in envelopes:
        if e.channel == "trades":
            found = ws_trades(e.exchange, e.payload) if e.source == "ws" else rest_trades(e.exchange, e)
            landed |= {(e.exchange, symbol, trade_id) for symbol, trade_id, _, _ in found}
    assert not [e for e in envelopes if e.channel == "gaps"], "no loss the extractor knows of"

    # The truth per minute: every trade the exchange made, and those that landed.
    made: dict[tuple[str, str, datetime], list[TruthRecord]] = defaultdict(list)
    for ex in EXCHANGES:
        for r in truth[ex]:
            made[(ex, r.native_symbol, _minute(r.ts_ms))].append(r)

    # The candles the pollers landed equal the truth (the simulator's endpoints and our parsers).
    fetched: dict[tuple[str, str, datetime], datetime] = {}
    for e in (e for e in envelopes if e.channel == "klines"):
        assert e.native_symbol is not None
        for candle in connector(e.exchange).parse_klines(e.payload):
            key = (e.exchange, e.native_symbol, _minute(candle.start_ms))
            trades = made[key]
            assert Decimal(candle.volume) == sum(Decimal(r.size) for r in trades), key
            assert candle.trade_count == (len(trades) if e.exchange == "binance" else None)
            fetched[key] = max(fetched.get(key, datetime.min), datetime.fromtimestamp(e.recv_ts_ns / 1e9))
    assert {ex for ex, _, _ in fetched} == set(EXCHANGES)

    expected = set()
    for (ex, native, minute), _ in fetched.items():
        trades = made[(ex, native, minute)]
        ours = [r for r in trades if (ex, native, int(r.trade_id)) in landed]
        volume, theirs = (
            sum((Decimal(r.size) for r in ours), Decimal(0)),
            sum(Decimal(r.size) for r in trades),
        )
        count_ratio = _ratio(len(ours), len(trades)) if ex == "binance" else None
        exchange_count = len(trades) if ex == "binance" else None
        row = (ex, trades[0].symbol, native, minute, len(ours), volume, exchange_count, theirs)
        expected.add((*row, count_ratio, _ratio(volume, theirs), False))

    _write_inputs(lake, envelopes, truth, landed)
    completeness.run(spark, lake=lake)
    columns = [
        *("exchange", "symbol", "native_symbol", "minute", "trade_count", "volume"),
        *("exchange_trade_count", "exchange_volume", "count_ratio", "volume_ratio", "in_gap"),
    ]
    table = spark.read.format("delta").load(lake.path("gold.completeness_1m"))
    first = table.collect()
    got = {tuple(r[c] for c in columns) for r in first}
    assert got == expected

    one = Decimal(1)
    for ex in EXCHANGES:
        clean = [row for row in got if row[0] == ex and row[9] == one]
        assert len(clean) >= 2, (ex, sorted(got))
    assert all(row[8] == one for row in got if row[0] == "binance" and row[9] == one)
    short = [row for row in got if row[0] == "kucoin" and row[9] < one and row[4] > 0]
    assert short, "the stall left KuCoin minutes short"

    # Idempotent: a second run rewrites nothing (updated_ts would move).
    completeness.run(spark, lake=lake)
    again = spark.read.format("delta").load(lake.path("gold.completeness_1m")).collect()
    assert sorted(map(tuple, again)) == sorted(map(tuple, first))


def test_a_minute_overlapping_a_recorded_gap_is_flagged(spark: SparkSession) -> None:
    """The gap window runs from the event time of ``after_id`` to that of ``before_id``."""
    bronze = spark.createDataFrame(
        [
            ("gaps", "binance", "BTCUSDT", '{"native_symbol":"BTCUSDT","after_id":10,"before_id":20}', 0),
            ("klines", "binance", "BTCUSDT", "[]", 0),
        ],
        "channel string, exchange string, native_symbol string, payload string, recv_ts_ns long",
    )
    trades = spark.createDataFrame(
        [
            ("binance", "BTCUSDT", "10", datetime(2026, 1, 1, 0, 1, 50)),
            ("binance", "BTCUSDT", "20", datetime(2026, 1, 1, 0, 3, 0)),
        ],
        StructType(
            [
                StructField("exchange", StringType()),
                StructField("native_symbol", StringType()),
                StructField("trade_id", StringType()),
                StructField("event_ts", TimestampType()),
            ]
        ),
    )
    minutes = [datetime(2026, 1, 1, 0, m) for m in range(6)]
    candles = spark.createDataFrame(
        [("binance", "BTCUSDT", m, Decimal(1), 1, m) for m in minutes],
        StructType(
            [
                StructField("exchange", StringType()),
                StructField("native_symbol", StringType()),
                StructField("minute", TimestampType()),
                StructField("exchange_volume", PRICE),
                StructField("exchange_trade_count", LongType()),
                StructField("kline_recv_ts", TimestampType()),
            ]
        ),
    )
    markets = spark.createDataFrame(
        [("binance", "BTCUSDT", "BTC-USDT")], "exchange string, native_symbol string, symbol string"
    )
    ours = spark.createDataFrame(
        [("binance", "BTC-USDT", minutes[1], 1, Decimal(1))],
        StructType(
            [
                StructField("exchange", StringType()),
                StructField("symbol", StringType()),
                StructField("minute", TimestampType()),
                StructField("trade_count", LongType()),
                StructField("volume", PRICE),
            ]
        ),
    )
    windows = completeness.gap_windows(bronze, trades)
    rows = completeness.completeness_1m(candles, markets, ours, windows, now=datetime(2026, 1, 2))
    got = sorted((r.minute, r.in_gap, r.trade_count, r.count_ratio) for r in rows.collect())
    zero, one = Decimal("0E-10"), Decimal("1.0000000000")
    assert got == [
        (minutes[0], False, 0, zero),
        (minutes[1], True, 1, one),  # the gap starts at 00:01:50
        (minutes[2], True, 0, zero),
        (minutes[3], True, 0, zero),  # and ends at 00:03:00
        (minutes[4], False, 0, zero),
        (minutes[5], False, 0, zero),
    ]
