"""The live pipeline: a processing-time trigger on a fresh lake, fed by the simulator while it runs.

No ``lake init``: the pipeline creates its tables before the query starts (concurrent first
commits used to fail with ``DELTA_PROTOCOL_CHANGED``). Rows must reach ``silver.trades`` in several
commits *while* the extractor is running, and at the end the table must equal the simulator's
ground truth for every landed trade, exactly, USDT columns recomputed in Python decimals.

The simulator also sends bad data while the pipeline runs (truncated frames, negative-price,
zero-size and future-timestamp trades, crossed book tops): each bad row must be found in
``silver.quarantine`` with the names of the expectations it failed (dead letters with the
extractor's reason), none of them in silver, ``gold.dq_results`` counting the same failures, and
the stream still running.
"""

from __future__ import annotations

import asyncio
import json
from datetime import datetime
from decimal import Decimal as D
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


#: The suite's expectations each bad trade must fail (a REST copy is not judged on latency).
EXPECTED_FAILURES = {
    "negative_price": {"price_positive"},
    "zero_size": {"size_positive"},
    "future_ts": {"event_ts_not_future", "latency_within_bounds"},
}


async def _extract_while_live(
    landing: Path, lake: Lake, commits_seen: list[int], crossed: dict[str, list[tuple[str, str, str]]]
) -> dict[str, list[TruthRecord]]:
    async with ExchangeSimulator(exchanges=EXCHANGES, symbols=4, rate=30, seed=31) as sim:

        async def faults(sim: ExchangeSimulator, extractor: Extractor) -> None:
            for exchange in EXCHANGES:
                sim.inject(exchange, "duplicate", count=5)
                sim.inject(exchange, "close_after", frames=40)
            await asyncio.sleep(seconds(3))  # connected again: the bad data goes out on the websocket
            for exchange in EXCHANGES:
                sim.inject(exchange, "malformed", count=2)
                for kind in EXPECTED_FAILURES:
                    sim.inject(exchange, "bad_trade", kind=kind)
                sim.inject(exchange, "crossed_book", count=2)
            # Stream until silver has committed trades three times while the extractor runs.
            deadline = asyncio.get_running_loop().time() + seconds(240)
            while len(trade_commits(lake)) < 3:
                assert asyncio.get_running_loop().time() < deadline, "silver.trades did not grow while live"
                await asyncio.sleep(0.5)
            commits_seen.extend(trade_commits(lake))

        await run_extractor(sim, EXCHANGES, landing, faults)
        crossed.update({exchange: list(sim.server(exchange).crossed_quotes) for exchange in EXCHANGES})
        return {exchange: sim.truth.records(exchange) for exchange in EXCHANGES}


def expectation_names(reason: str) -> set[str]:
    assert reason.startswith("expectation:"), reason
    return set(reason.removeprefix("expectation:").split(","))


def test_the_live_pipeline_starts_on_a_fresh_lake_and_keeps_silver_equal_to_the_truth(
    spark: SparkSession, lake: Lake, tmp_path: Path
) -> None:
    landing = tmp_path / "landing"
    landing.mkdir()
    bronze = BronzeSettings(source="landing", landing_root=str(landing))
    silver = SilverSettings(trigger="processingTime=1 second", rate_carry_minutes=CARRY_MINUTES)
    live = pipeline.start_live(spark, lake=lake, bronze=bronze, silver=silver)
    commits_while_running: list[int] = []
    crossed: dict[str, list[tuple[str, str, str]]] = {}
    try:
        truth = asyncio.run(_extract_while_live(landing, lake, commits_while_running, crossed))
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

    # After the clean stop every minute is priced with its final rates; the bad trades are not in.
    clean = {exchange: [r for r in records if r.fault is None] for exchange, records in truth.items()}
    assert_silver_trades_equal_the_truth(spark, lake, clean, landed, at_least=100)
    envelopes = read_landing(landing)
    bronze_rows = spark.read.format("delta").load(lake.path("bronze.raw_events")).count()
    assert bronze_rows == len(envelopes)

    # Each bad row is in quarantine, with the names of the expectations it failed, and nothing else.
    quarantine = [
        (r.source_table, json.loads(r.row_json, parse_float=D), r.reason)
        for r in spark.read.format("delta").load(lake.path("silver.quarantine")).collect()
    ]
    bad_trades = {
        (exchange, r.symbol, int(r.trade_id)): r.fault
        for exchange, records in truth.items()
        for r in records
        if r.fault is not None and (exchange, r.native_symbol, int(r.trade_id)) in landed
    }
    assert sorted(bad_trades.values()) == sorted(list(EXPECTED_FAILURES) * len(EXCHANGES))
    quarantined_trades: dict[tuple[str, str, int], list[tuple[str, set[str]]]] = {}
    for table, row, reason in quarantine:
        if table == "silver.trades" and reason.startswith("expectation:"):
            key = (row["exchange"], row["symbol"], int(row["trade_id"]))
            quarantined_trades.setdefault(key, []).append((row["source"], expectation_names(reason)))
    assert set(quarantined_trades) == set(bad_trades)
    for key, copies in quarantined_trades.items():
        for source, failed in copies:
            expected = EXPECTED_FAILURES[bad_trades[key]]
            assert failed == (expected - {"latency_within_bounds"} if source == "rest" else expected), key

    symbols = {
        (m.exchange, m.native_symbol): m.symbol
        for m in spark.read.format("delta").load(lake.path("silver.markets")).collect()
    }
    sent_crossed = {(ex, symbols[ex, n], D(b), D(a)) for ex, quotes in crossed.items() for n, b, a in quotes}
    # A ticker sent with the future trade carries its time (Coinbase and KuCoin tickers do).
    future_trades = {
        (exchange, r.symbol, r.ts_ms)
        for exchange, records in truth.items()
        for r in records
        if r.fault == "future_ts"
    }
    quarantined_quotes = set()
    for table, row, reason in quarantine:
        if table in ("silver.l1_quotes", "silver.tickers") and reason.startswith("expectation:"):
            if "bid_at_most_ask" not in expectation_names(reason):
                assert expectation_names(reason) == {"event_ts_not_future"}, (table, row, reason)
                event = datetime.fromisoformat(row["event_ts"].replace("Z", "+00:00"))
                assert (row["exchange"], row["symbol"], int(event.timestamp() * 1000)) in future_trades, row
                continue
            bid, ask = (
                (row["bid_price"], row["ask_price"])
                if "bid_price" in row
                else (row["best_bid"], row["best_ask"])
            )
            quote = (row["exchange"], row["symbol"], D(bid), D(ask))
            assert quote in sent_crossed, quote
            quarantined_quotes.add((table, *quote))
    assert {q[1] for q in quarantined_quotes if q[0] == "silver.l1_quotes"} == set(EXCHANGES)
    l1 = spark.read.format("delta").load(lake.path("silver.l1_quotes")).collect()
    assert l1 and not [
        q for q in l1 if q.bid_price is not None and q.ask_price is not None and q.bid_price > q.ask_price
    ]

    dead_letters = sorted(
        (e.exchange, e.conn_id, e.conn_seq, e.error) for e in envelopes if e.channel == "deadletter"
    )
    assert {d[0] for d in dead_letters} == set(EXCHANGES)
    quarantined_letters = []
    for table, row, reason in quarantine:
        if table == "bronze.raw_events":
            line = json.loads(row["line"])
            assert reason == f"deadletter: {line['error']}"
            quarantined_letters.append((line["exchange"], line["conn_id"], line["conn_seq"], line["error"]))
    assert sorted(quarantined_letters) == dead_letters

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
    # The batches that held bad rows failed their suite; the counts per expectation are the quarantine's.
    assert {r.table for r in results if not r.success} >= {"silver.trades", "silver.l1_quotes"}
    for name in ("price_positive", "size_positive", "event_ts_not_future"):
        failed = sum(e.failed for r in by_table["silver.trades"] for e in r.expectations if e.name == name)
        assert failed == sum(
            name in names for copies in quarantined_trades.values() for _, names in copies
        ), name
