"""Trades of a newly listed market quarantined as ``unknown_market`` are replayed once it is listed.

The same envelopes go to two lakes: one where the market is listed after its first trades arrived
(quarantined, then replayed), one where it was listed from the start (written the normal way).
The replayed rows must equal the normally written ones in every column, down to the microsecond
of the receive time (which ``row_json`` does not keep) and the carried rate.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import pytest
from chispa import assert_df_equality
from pyspark.sql import DataFrame, SparkSession

from lake.delta_io import append
from lake.tables import (
    BRONZE_RAW_EVENTS,
    SILVER_MARKETS,
    SILVER_QUARANTINE,
    SILVER_TRADES,
    Lake,
    LakeSettings,
)
from spark_jobs import silver_markets, silver_trades
from spark_jobs.market_replay import replay_unknown_markets
from spark_jobs.runtime import SilverSettings, read_table
from spark_jobs.silver import KeyIndex
from tests.spark.envelopes import BINANCE_EXCHANGE_INFO, T0_NS, bronze_df, discovery_envelopes, envelope

pytestmark = pytest.mark.spark

logger = logging.getLogger(__name__)

MS = 1_000_000
T0_MS = T0_NS // MS
SOLBTC = {"symbol": "SOLBTC", "status": "TRADING", "baseAsset": "SOL", "quoteAsset": "BTC",
          "isSpotTradingAllowed": True}  # fmt: skip


def _listing(recv_ns: int) -> dict[str, Any]:
    """A Binance discovery snapshot that lists SOLBTC."""
    info = {**BINANCE_EXCHANGE_INFO, "symbols": [*BINANCE_EXCHANGE_INFO["symbols"], SOLBTC]}  # type: ignore[list-item]
    return envelope("binance", "markets", info, recv_ns=recv_ns, source="rest",
                    stream="/api/v3/exchangeInfo", conn_id="disc-b2")  # fmt: skip


def _trade(
    symbol: str, trade_id: int, price: str, qty: str, *, at_ms: int, recv_ns: int, seq: int
) -> dict[str, Any]:
    stream = f"{symbol.lower()}@trade"
    data = {"e": "trade", "E": at_ms, "s": symbol, "t": trade_id, "p": price, "q": qty, "T": at_ms,
            "m": False, "M": True}  # fmt: skip
    return envelope("binance", "trades", {"stream": stream, "data": data}, recv_ns=recv_ns, stream=stream,
                    native_symbol=symbol, conn_seq=seq)  # fmt: skip


# Receive times with microsecond digits (the quarantine JSON keeps milliseconds only).
TRADES = [
    _trade("BTCUSDT", 5400012345, "94210.02", "0.0015", at_ms=T0_MS + 1_000, recv_ns=T0_NS + 1_000_123_789,
           seq=1),
    # SOLBTC in the next minute: no BTC rate of its own, the previous minute's is carried.
    _trade("SOLBTC", 7001, "0.00150123", "2.5", at_ms=T0_MS + 61_000, recv_ns=T0_NS + 61_234_567_891, seq=2),
    # The same frame re-delivered (a reconnect overlap): quarantined twice, one row in silver.
    _trade("SOLBTC", 7001, "0.00150123", "2.5", at_ms=T0_MS + 61_000, recv_ns=T0_NS + 61_900_000_001, seq=3),
]  # fmt: skip


def _read(spark: SparkSession, lake: Lake, name: str) -> DataFrame:
    return read_table(spark, lake, name)


def _ingest(spark: SparkSession, lake: Lake, *, listed_from_start: bool) -> None:
    """Markets, then one batch of trades through the standalone job's writer (bronze appended too)."""
    markets = discovery_envelopes() + ([_listing(T0_NS - 4_000_000_000)] if listed_from_start else [])
    silver_markets.make_batch_writer(lake=lake)(bronze_df(spark, markets), 0)
    bronze = bronze_df(spark, TRADES)
    append(bronze, lake=lake, name=BRONZE_RAW_EVENTS.name, app_id="test-bronze", version=0)
    silver_trades.JOB.batch_writer(lake=lake, settings=SilverSettings())(bronze, 0)


def test_unknown_market_rows_are_inserted_once_listed_as_a_normal_write_gives_them(
    spark: SparkSession, lake: Lake, tmp_path: Path
) -> None:
    settings = SilverSettings()
    _ingest(spark, lake, listed_from_start=False)
    quarantined = _read(spark, lake, SILVER_QUARANTINE.name)
    assert sorted((r["source_table"], r["reason"]) for r in quarantined.collect()) == [
        (SILVER_TRADES.name, "unknown_market"),
        (SILVER_TRADES.name, "unknown_market"),
    ]
    assert [r["symbol"] for r in _read(spark, lake, SILVER_TRADES.name).collect()] == ["BTC-USDT"]

    # Not listed yet: nothing to replay (one small query).
    started = time.perf_counter()
    markets = _read(spark, lake, SILVER_MARKETS.name)
    assert (
        replay_unknown_markets(
            spark, lake=lake, target=SILVER_TRADES.name, markets=markets, settings=settings
        )
        == 0
    )
    logger.warning("replay with nothing to replay: %.2f s", time.perf_counter() - started)

    # The listing arrives; the quarantined rows are replayed, one per key.
    silver_markets.make_batch_writer(lake=lake)(bronze_df(spark, [_listing(T0_NS + 90_000_000_000)]), 1)
    markets = _read(spark, lake, SILVER_MARKETS.name)
    index = KeyIndex()  # the trades writer's, which must learn the replayed key
    index.load(_read(spark, lake, SILVER_TRADES.name), spec=SILVER_TRADES, minutes=[T0_NS // 10**9])
    sol_key = (T0_NS // 10**9 + 60, "binance\u0001SOL-BTC\u00017001")
    assert index.stored([sol_key]) == []
    assert replay_unknown_markets(spark, lake=lake, target=silver_trades.JOB.target, markets=markets,
                                  settings=settings, index=index) == 1  # fmt: skip
    assert index.stored([sol_key]) == [sol_key[1]]

    # The same envelopes written the normal way into a lake that knew the market from the start.
    normal = Lake(LakeSettings(root=str(tmp_path / "normal")))
    _ingest(spark, normal, listed_from_start=True)
    assert _read(spark, normal, SILVER_QUARANTINE.name).count() == 0
    replayed = _read(spark, lake, SILVER_TRADES.name).orderBy("trade_id")
    assert_df_equality(
        replayed, _read(spark, normal, SILVER_TRADES.name).orderBy("trade_id"), ignore_nullable=True
    )
    sol = _read(spark, lake, SILVER_TRADES.name).where("symbol = 'SOL-BTC'").first()
    assert sol is not None
    assert sol["usdt_method"] == "direct:carried"
    assert sol["recv_ts"].microsecond == 234_567

    # A second replay inserts nothing and changes nothing; quarantine keeps its log.
    before = replayed.collect()
    started = time.perf_counter()
    assert (
        replay_unknown_markets(
            spark, lake=lake, target=SILVER_TRADES.name, markets=markets, settings=settings
        )
        == 0
    )
    logger.warning("second replay: %.2f s", time.perf_counter() - started)
    assert _read(spark, lake, SILVER_TRADES.name).orderBy("trade_id").collect() == before
    assert _read(spark, lake, SILVER_QUARANTINE.name).count() == 2
