"""Simulator -> extractor (with faults) -> landing zone -> bronze -> silver, checked against ground truth.

The simulator emits trades on Binance, KuCoin and Coinbase while frames are duplicated and
connections drop (so REST gap-fill pages overlap websocket frames). Every trade that landed must be
in ``silver.trades`` exactly once with the simulator's canonical symbol, id, price, size, taker side
and event time; the USDT columns are recomputed here from the documented rule with Python decimals.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from datetime import datetime, timedelta
from decimal import Decimal as D
from pathlib import Path
from typing import Any

import pytest
from pyspark.sql import SparkSession

from extractors.runner import Extractor
from infra.exchange_sim import ExchangeSimulator
from infra.exchange_sim.truth import TruthRecord
from lake.tables import Lake
from spark_jobs import pipeline
from spark_jobs.runtime import BronzeSettings, SilverSettings
from tests.conftest import seconds
from tests.extractors.test_end_to_end import (
    check_against_truth,
    read_landing,
    rest_trades,
    run_extractor,
    ws_trades,
)
from tests.spark.envelopes import q, ts

pytestmark = pytest.mark.spark

EXCHANGES = ("binance", "kucoin", "coinbase")
CARRY_MINUTES = 5
METHOD_RANK = ("identity", "direct", "inverse", "cross_btc", "cross_eth", "cross_usdc")


def _event_ts(record: TruthRecord) -> datetime:
    """The exchange's own event time as Spark returns it: Binance ms, KuCoin ns, Coinbase ISO text."""
    if record.exchange == "coinbase":
        at = datetime.fromisoformat(record.ts_event.replace("Z", "+00:00"))
        return ts((int(at.timestamp()) * 1_000_000 + at.microsecond) * 1000)
    return ts(int(record.ts_event) * (1 if record.exchange == "kucoin" else 1_000_000))


def _minute(t: datetime) -> datetime:
    return t.replace(second=0, microsecond=0)


def reference_rates(trades: Iterable[Any]) -> dict[tuple[str, datetime], tuple[D, str]]:
    """(asset, minute) -> (rate to USDT, method), from the rule in the README/usdt module doc.

    A market's price in a minute is its last trade there (latest event time, then latest receive
    time, then the larger trade id), pooled over exchanges. USDT is 1; ASSET-USDT gives ASSET
    directly; USDT-ASSET gives the inverse; otherwise one hop through BTC, ETH or USDC (whose own
    rate is direct/inverse).
    """
    last: dict[tuple[str, str, datetime], Any] = {}
    for t in trades:
        k = (t.base, t.quote, _minute(t.event_ts))
        # Ties (trades of one REST page share a receive time): the longer, then larger trade id.
        if k not in last or (t.event_ts, t.recv_ts, len(t.trade_id), t.trade_id) > (
            last[k].event_ts,
            last[k].recv_ts,
            len(last[k].trade_id),
            last[k].trade_id,
        ):
            last[k] = t
    minutes = {m for _, _, m in last}
    rates: dict[tuple[str, datetime], tuple[D, str]] = {("USDT", m): (D(1), "identity") for m in minutes}

    def offer(asset: str, minute: datetime, rate: D, method: str) -> None:
        old = rates.get((asset, minute))
        if rate > 0 and (old is None or METHOD_RANK.index(method) < METHOD_RANK.index(old[1])):
            rates[(asset, minute)] = (rate, method)

    for (base, quote, m), t in last.items():
        if quote == "USDT" and base != "USDT":
            offer(base, m, t.price, "direct")
        if base == "USDT" and quote != "USDT":
            offer(quote, m, q(1 / t.price), "inverse")
    first = dict(rates)
    for hop in ("BTC", "ETH", "USDC"):
        for (base, quote, m), t in last.items():
            hop_rate = first.get((hop, m))
            if hop_rate is None or hop_rate[1] not in ("direct", "inverse"):
                continue
            if quote == hop and base not in ("USDT", hop):
                offer(base, m, q(t.price * hop_rate[0]), f"cross_{hop.lower()}")
            if base == hop and quote not in ("USDT", hop):
                offer(quote, m, q(hop_rate[0] * q(1 / t.price)), f"cross_{hop.lower()}")
    return rates


def expected_pricing(row: Any, rates: dict[tuple[str, datetime], tuple[D, str]]) -> tuple:
    minute = _minute(row.event_ts)
    for back in range(CARRY_MINUTES + 1):
        found = rates.get((row.quote, minute - timedelta(minutes=back)))
        if found is not None:
            rate, method = found
            price_usdt = q(row.price * rate)
            return rate, method + (":carried" if back else ""), price_usdt, q(price_usdt * row.size, 15)
    return None, None, None, None


def assert_silver_trades_equal_the_truth(
    spark: SparkSession,
    lake: Lake,
    truth: dict[str, list[TruthRecord]],
    landed: set[tuple[str, str, int]],
    *,
    at_least: int,
) -> list[Any]:
    """``silver.trades`` holds exactly the landed trades of the truth, USDT columns and rates recomputed."""
    silver = spark.read.format("delta").load(lake.path("silver.trades")).collect()
    got = sorted(
        (r.exchange, r.symbol, r.base, r.quote, r.trade_id, r.price, r.size, r.side, r.event_ts)
        for r in silver
    )
    expected = sorted(
        (r.exchange, r.symbol, r.base, r.quote, r.trade_id, D(r.price), D(r.size), r.side, _event_ts(r))
        for exchange in EXCHANGES
        for r in truth[exchange]
        if (exchange, r.native_symbol, int(r.trade_id)) in landed
    )
    assert len(got) == len(expected) > at_least
    assert got == expected
    rates = reference_rates(silver)
    priced = [
        (r.exchange, r.symbol, r.trade_id, r.usdt_rate, r.usdt_method, r.price_usdt, r.notional_usdt)
        for r in silver
    ]
    assert priced == [(r.exchange, r.symbol, r.trade_id, *expected_pricing(r, rates)) for r in silver]
    stored_rates = {
        (r.asset, r.minute): (r.rate_to_usdt, r.method)
        for r in spark.read.format("delta").load(lake.path("silver.usdt_rates")).collect()
    }
    assert stored_rates == rates
    return silver


async def _extract(landing: Path) -> dict[str, list[TruthRecord]]:
    async with ExchangeSimulator(exchanges=EXCHANGES, symbols=6, rate=50, seed=23) as sim:

        async def faults(sim: ExchangeSimulator, extractor: Extractor) -> None:
            for exchange in EXCHANGES:
                sim.inject(exchange, "duplicate", count=5)
                sim.inject(exchange, "close_after", frames=25)
            await asyncio.sleep(seconds(3))

        await run_extractor(sim, EXCHANGES, landing, faults)
        return {exchange: sim.truth.records(exchange) for exchange in EXCHANGES}


def test_silver_trades_equal_the_simulators_ground_truth_with_usdt_recomputed(
    spark: SparkSession, lake: Lake, tmp_path: Path
) -> None:
    landing = tmp_path / "landing"
    truth = asyncio.run(_extract(landing))
    envelopes = read_landing(landing)

    landed: set[tuple[str, str, int]] = set()
    for exchange in EXCHANGES:
        mine = [e for e in envelopes if e.exchange == exchange]
        # The landing zone is complete (all but the recorded gaps), independently of Spark.
        check_against_truth(
            exchange, mine, {(r.native_symbol, int(r.trade_id), r.price, r.size) for r in truth[exchange]}
        )
        for e in mine:
            if e.channel == "trades":
                found = ws_trades(exchange, e.payload) if e.source == "ws" else rest_trades(exchange, e)
                landed |= {(exchange, symbol, trade_id) for symbol, trade_id, _, _ in found}
    assert any(e.source == "rest" and e.channel == "trades" for e in envelopes), "no gap fill to dedupe"

    pipeline.run(
        spark,
        lake=lake,
        bronze=BronzeSettings(source="landing", landing_root=str(landing)),
        silver=SilverSettings(rate_carry_minutes=CARRY_MINUTES),
        timeout_s=seconds(900),
        jobs=("silver_markets", "silver_trades"),
    )

    silver = assert_silver_trades_equal_the_truth(spark, lake, truth, landed, at_least=300)
    assert {r.source for r in silver} == {"ws", "rest"}
    methods = {r.usdt_method for r in silver}
    assert {"identity", "direct", "inverse", "cross_btc"} <= methods, methods
    assert all(r.usdt_rate is not None for r in silver)


def test_reference_event_time_units() -> None:
    """The helper above reads each exchange's documented time unit (guards the test itself)."""
    same: dict[str, Any] = dict(
        native_symbol="X",
        symbol="X-Y",
        base="X",
        quote="Y",
        trade_id="1",
        price="1",
        size="1",
        side="buy",
        ts_ms=1,
    )
    events = {
        "binance": "1767225600123",
        "kucoin": "1767225600123456789",
        "coinbase": "2026-01-01T00:00:00.123456Z",
    }
    got = {ex: _event_ts(TruthRecord(exchange=ex, ts_event=text, **same)) for ex, text in events.items()}
    assert got == {
        "binance": datetime(2026, 1, 1, 0, 0, 0, 123000),
        "kucoin": datetime(2026, 1, 1, 0, 0, 0, 123456),
        "coinbase": datetime(2026, 1, 1, 0, 0, 0, 123456),
    }
