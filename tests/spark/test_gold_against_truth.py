"""Simulator -> extractor (duplicates, dropped connections, REST gap fill) -> bronze -> silver ->
``python -m spark_jobs.gold``: the bars, composite bars and daily volumes equal the ones computed
here in Python decimals from the simulator's ground truth (its trades, priced by the documented
USDT rule), and a second run of the job writes nothing."""

from __future__ import annotations

import asyncio
from decimal import Decimal as D
from pathlib import Path
from types import SimpleNamespace

import pytest
from delta.tables import DeltaTable
from pyspark.sql import SparkSession

from lake.tables import GOLD_EXCHANGE_VOLUME_DAILY, GOLD_OHLCV_1M, GOLD_OHLCV_1M_COMPOSITE, Lake
from spark_jobs import gold, pipeline
from spark_jobs.runtime import BronzeSettings, SilverSettings
from tests.conftest import seconds
from tests.extractors.test_end_to_end import read_landing, rest_trades, ws_trades
from tests.spark.test_gold import Trade, assert_gold_equals_reference
from tests.spark.test_silver_against_truth import (
    CARRY_MINUTES,
    EXCHANGES,
    _event_ts,
    _extract,
    assert_silver_trades_equal_the_truth,
    expected_pricing,
    reference_rates,
)

pytestmark = pytest.mark.spark


def _versions(spark: SparkSession, lake: Lake) -> list[int]:
    names = (GOLD_OHLCV_1M.name, GOLD_OHLCV_1M_COMPOSITE.name, GOLD_EXCHANGE_VOLUME_DAILY.name)
    return [DeltaTable.forPath(spark, lake.path(n)).history(1).collect()[0]["version"] for n in names]


@pytest.mark.timeout(int(seconds(2400)))
def test_gold_equals_bars_computed_from_the_simulators_ground_truth(
    spark: SparkSession, lake: Lake, tmp_path: Path
) -> None:
    landing = tmp_path / "landing"
    truth = asyncio.run(_extract(landing))
    landed: set[tuple[str, str, int]] = set()
    envelopes = read_landing(landing)
    for e in envelopes:
        if e.channel == "trades":
            found = ws_trades(e.exchange, e.payload) if e.source == "ws" else rest_trades(e.exchange, e)
            landed |= {(e.exchange, symbol, trade_id) for symbol, trade_id, _, _ in found}
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

    settings = gold.GoldSettings(streams=("bars",), rate_carry_minutes=CARRY_MINUTES)
    gold.run(spark, lake=lake, settings=settings, timeout_s=seconds(900))

    # The reference: the simulator's trades (those that landed), priced by the documented rule.
    rates = reference_rates(silver)
    trades = []
    for exchange in EXCHANGES:
        for r in truth[exchange]:
            if (exchange, r.native_symbol, int(r.trade_id)) not in landed:
                continue
            at = _event_ts(r)
            row = SimpleNamespace(quote=r.quote, event_ts=at, price=D(r.price), size=D(r.size))
            rate = expected_pricing(row, rates)[0]
            trades.append(Trade(exchange, r.symbol, r.trade_id, D(r.price), D(r.size), at, rate))
    assert_gold_equals_reference(spark, lake, trades)

    # A second run (nothing new in silver; the re-pricing commits looked at again): nothing written.
    before = _versions(spark, lake)
    gold.run(spark, lake=lake, settings=settings, timeout_s=seconds(900))
    assert _versions(spark, lake) == before
