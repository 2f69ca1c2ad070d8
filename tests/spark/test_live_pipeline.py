"""The live pipeline: a processing-time trigger on a fresh lake, fed by the simulator while it runs.

No ``lake init``: the pipeline creates its tables before the query starts (concurrent first
commits used to fail with ``DELTA_PROTOCOL_CHANGED``). Rows must reach ``silver.trades`` in several
commits *while* the extractor is running, and at the end the table must equal the simulator's
ground truth for every landed trade, exactly, USDT columns recomputed in Python decimals.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest
from pyspark.sql import SparkSession

from extractors.runner import Extractor
from infra.exchange_sim import ExchangeSimulator
from infra.exchange_sim.truth import TruthRecord
from lake.tables import Lake
from spark_jobs import pipeline
from spark_jobs.runtime import BronzeSettings, SilverSettings
from tests.conftest import seconds
from tests.extractors.test_end_to_end import read_landing, rest_trades, run_extractor, ws_trades
from tests.spark.test_gold import Trade, assert_gold_equals_reference
from tests.spark.test_silver_against_truth import (
    CARRY_MINUTES,
    EXCHANGES,
    assert_silver_trades_equal_the_truth,
)

pytestmark = pytest.mark.spark


def trade_commits(lake: Lake) -> list[int]:
    """Versions of ``silver.trades`` that added rows (read from the Delta log, no Spark)."""
    versions = []
    for entry in sorted((Path(lake.path("silver.trades")) / "_delta_log").glob("*.json")):
        actions = [json.loads(line) for line in entry.read_text().splitlines() if line.strip()]
        if any("add" in a for a in actions):
            versions.append(int(entry.stem))
    return versions


async def _extract_while_live(
    landing: Path, lake: Lake, commits_seen: list[int]
) -> dict[str, list[TruthRecord]]:
    async with ExchangeSimulator(exchanges=EXCHANGES, symbols=4, rate=30, seed=31) as sim:

        async def faults(sim: ExchangeSimulator, extractor: Extractor) -> None:
            for exchange in EXCHANGES:
                sim.inject(exchange, "duplicate", count=5)
                sim.inject(exchange, "close_after", frames=40)
            # Stream until silver has committed trades three times while the extractor runs.
            deadline = asyncio.get_running_loop().time() + seconds(240)
            while len(trade_commits(lake)) < 3:
                assert asyncio.get_running_loop().time() < deadline, "silver.trades did not grow while live"
                await asyncio.sleep(0.5)
            commits_seen.extend(trade_commits(lake))

        await run_extractor(sim, EXCHANGES, landing, faults)
        return {exchange: sim.truth.records(exchange) for exchange in EXCHANGES}


def test_the_live_pipeline_starts_on_a_fresh_lake_and_keeps_silver_equal_to_the_truth(
    spark: SparkSession, lake: Lake, tmp_path: Path
) -> None:
    landing = tmp_path / "landing"
    landing.mkdir()
    bronze = BronzeSettings(source="landing", landing_root=str(landing))
    silver = SilverSettings(trigger="processingTime=1 second", rate_carry_minutes=CARRY_MINUTES)
    live = pipeline.start_live(spark, lake=lake, bronze=bronze, silver=silver)
    commits_while_running: list[int] = []
    try:
        truth = asyncio.run(_extract_while_live(landing, lake, commits_while_running))
        landed: set[tuple[str, str, int]] = set()
        for e in read_landing(landing):
            if e.channel == "trades":
                found = ws_trades(e.exchange, e.payload) if e.source == "ws" else rest_trades(e.exchange, e)
                landed |= {(e.exchange, symbol, trade_id) for symbol, trade_id, _, _ in found}
        # Wait until the query has taken in every landing file (two empty triggers in a row).
        deadline = seconds(120)
        waited = 0.0
        while True:
            assert live.query.exception() is None, live.query.exception()
            recent = [p["numInputRows"] for p in live.query.recentProgress[-2:]]
            if len(recent) == 2 and recent == [0, 0]:
                break
            assert waited < deadline, "the live query did not drain the landing zone"
            live.query.awaitTermination(1)
            waited += 1
    finally:
        live.stop()
    assert live.query.exception() is None
    assert len(commits_while_running) >= 3

    # After the clean stop every minute is priced with its final rates.
    assert_silver_trades_equal_the_truth(spark, lake, truth, landed, at_least=100)
    bronze_rows = spark.read.format("delta").load(lake.path("bronze.raw_events")).count()
    assert bronze_rows == len(read_landing(landing))

    # Gold, updated live and brought up to date at the stop, equals bars recomputed in Python
    # decimals from silver (just shown equal to the truth).
    stored = spark.read.format("delta").load(lake.path("silver.trades")).collect()
    trades = [
        Trade(r.exchange, r.symbol, r.trade_id, r.price, r.size, r.event_ts, r.usdt_rate) for r in stored
    ]
    assert_gold_equals_reference(spark, lake, trades)

    # Every micro-batch that wrote a silver table was validated and recorded, once.
    results = spark.read.format("delta").load(lake.path("gold.dq_results")).collect()
    by_table = {t: [r for r in results if r.table == t] for t in ("silver.trades", "silver.l1_quotes")}
    assert all(by_table.values()), {t: len(rs) for t, rs in by_table.items()}
    assert len({(r.table, r.batch_id) for r in results}) == len(results)
    assert sum(r.evaluated for r in by_table["silver.trades"] if r.evaluated is not None) >= len(stored)
    assert all(r.success for r in results), [r for r in results if not r.success][:3]
