"""Each suite against one good and one bad small DataFrame; the Spark predicates agree with GX."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal
from typing import Any

import pytest
from pyspark.sql import functions as F

from expectations import SUITES, DqSettings, Validator
from tests.expectations.frames import EVENT, NOW, frame

pytestmark = pytest.mark.spark

D = Decimal
FUTURE = NOW + timedelta(minutes=5)

#: table -> (the JSON field that identifies a row, good rows, bad-frame rows, {id: reason} of the bad ones)
CASES: dict[str, tuple[str, list[dict[str, Any]], list[dict[str, Any]], dict[str, str]]] = {
    "bronze.raw_events": (
        "conn_seq",
        [{"conn_seq": 1}, {"conn_seq": 2, "channel": "l1", "source": "rest"}],
        [
            {"conn_seq": 1},
            {"conn_seq": 2, "payload": None},
            {"conn_seq": 3, "payload": ""},
            {"conn_seq": 4, "recv_ts_ns": int((NOW + timedelta(hours=1)).timestamp()) * 10**9},
            {"conn_seq": 5, "recv_ts_ns": 0},
            {"conn_seq": 6, "channel": "orders"},
            {"conn_seq": 7, "source": "ftp"},
        ],
        {
            "2": "expectation:payload_present",
            "3": "expectation:payload_not_empty",
            "4": "expectation:recv_ts_sane",
            "5": "expectation:recv_ts_sane",
            "6": "expectation:channel_known",
            "7": "expectation:source_known",
        },
    ),
    "silver.trades": (
        "trade_id",
        [{"trade_id": "1"}, {"trade_id": "2", "side": "sell", "source": "rest", "recv_ts": NOW}],
        [
            {"trade_id": "1"},
            {"trade_id": "2", "price": D("-1")},
            {"trade_id": "3", "size": D("0"), "side": "hold"},
            {"trade_id": "4", "symbol": "btcusdt"},
            {"trade_id": "5", "event_ts": FUTURE, "recv_ts": NOW},
            {"trade_id": "6", "recv_ts": EVENT + timedelta(hours=1)},
            {"trade_id": "7", "recv_ts": EVENT + timedelta(hours=1), "source": "rest"},  # gap fill: late
            {"trade_id": "8", "price": None},
            {"trade_id": "9"},
            {"trade_id": "9"},  # a duplicate is a warning: the writer keeps the first copy
        ],
        {
            "2": "expectation:price_positive",
            "3": "expectation:size_positive,side_buy_or_sell",
            "4": "expectation:symbol_canonical",
            "5": "expectation:event_ts_not_future,latency_within_bounds",
            "6": "expectation:latency_within_bounds",
            "8": "expectation:price_present",
        },
    ),
    "silver.l1_quotes": (
        "sequence",
        [{"sequence": 1}, {"sequence": 2, "bid_price": D("100.1")}, {"sequence": 3, "ask_price": None}],
        [
            {"sequence": 1},
            {"sequence": 2, "bid_price": D("101"), "ask_price": D("100"), "spread_bps": D("-99.5")},
            {"sequence": 3, "bid_size": D("-1")},
            {"sequence": 4, "ask_price": D("160"), "spread_bps": D("4615")},  # within 5000 bps
            {"sequence": 5, "ask_price": D("200"), "spread_bps": D("6667")},
            {"sequence": 6, "ask_price": None, "spread_bps": None},  # one-sided book
            {"sequence": 7, "bid_price": D("0")},
            {"sequence": 8, "event_ts": FUTURE},
        ],
        {
            "2": "expectation:bid_at_most_ask,spread_within_bounds",
            "3": "expectation:bid_size_non_negative",
            "5": "expectation:spread_within_bounds",
            "7": "expectation:bid_price_positive",
            "8": "expectation:event_ts_not_future",
        },
    ),
    "silver.tickers": (
        "sequence",
        [{"sequence": 1}, {"sequence": 2, "best_bid": None, "best_ask": None}],
        [
            {"sequence": 1},
            {"sequence": 2, "last": D("0")},
            {"sequence": 3, "high_24h": D("80")},
            {"sequence": 4, "best_bid": D("101"), "best_ask": D("100")},
            {"sequence": 5, "base_volume_24h": D("-1")},
            {"sequence": 6, "last": None},
            {"sequence": 7, "symbol": "BTC/USDT"},
        ],
        {
            "2": "expectation:last_positive",
            "3": "expectation:low_at_most_high_24h",
            "4": "expectation:bid_at_most_ask",
            "5": "expectation:base_volume_24h_non_negative",
            "6": "expectation:last_present",
            "7": "expectation:symbol_canonical",
        },
    ),
    "gold.ohlcv_1m": (
        "symbol",
        [{"symbol": "A-USDT"}, {"symbol": "B-USDT", "open": D("99"), "close": D("102"), "vwap": D("102")}],
        [
            {"symbol": "A-USDT"},
            {"symbol": "B-USDT", "open": D("98")},
            {"symbol": "C-USDT", "close": D("103")},
            {"symbol": "D-USDT", "volume": D("-1")},
            {"symbol": "E-USDT", "trade_count": 0},
            {"symbol": "F-USDT", "vwap": D("105")},
            {"symbol": "G-USDT", "vwap": D("98")},
        ],
        {
            "B-USDT": "expectation:low_at_most_open",
            "C-USDT": "expectation:close_at_most_high",
            "D-USDT": "expectation:volume_non_negative",
            "E-USDT": "expectation:trade_count_at_least_1",
            "F-USDT": "expectation:vwap_at_most_high",
            "G-USDT": "expectation:vwap_at_least_low",
        },
    ),
}


def test_every_table_with_a_suite_has_a_case() -> None:
    assert set(CASES) == set(SUITES)


@pytest.fixture(scope="module")
def validator() -> Validator:
    # Warnings too, in every batch: the Spark counts of every expectation are compared with GX's.
    return Validator(DqSettings(warnings_every_batch=True))


@pytest.mark.parametrize("name", sorted(CASES))
def test_good_frame_passes_whole(spark, validator: Validator, name: str) -> None:
    _, good, _, _ = CASES[name]
    df = frame(spark, name, good)
    v = validator.validate(df, table=name, batch_id=1, now=NOW, run_gx=False)
    try:
        assert v.error is None
        assert v.success, [r for r in v.results if not r.success]
        assert (v.rows, v.quarantined) == (len(good), 0)
        assert v.bad.count() == 0
        assert sorted(map(str, v.good.collect())) == sorted(map(str, df.collect()))
    finally:
        v.release()


@pytest.mark.parametrize("name", sorted(CASES))
def test_bad_frame_quarantines_each_bad_row_with_its_failed_expectations(
    spark, validator: Validator, name: str
) -> None:
    field, _, bad, expected = CASES[name]
    df = frame(spark, name, bad)
    v = validator.validate(df, table=name, batch_id=7, now=NOW, run_gx=True)
    try:
        assert v.error is None and not v.success
        quarantined = v.bad.select(
            F.get_json_object("row_json", f"$.{field}").alias("id"), "reason", "batch_id"
        )
        assert {(r["id"], r["reason"]) for r in quarantined.collect()} == set(expected.items())
        assert {r["batch_id"] for r in quarantined.collect()} == {7}
        assert v.bad.select("source_table").distinct().collect()[0][0] == name
        kept = {str(r[field]) for r in v.good.collect()}
        assert kept == {str(r[field]) for r in bad} - set(expected)
        assert v.good.columns == df.columns
        assert (v.rows, v.quarantined) == (len(bad), len(expected))
        # The real GX validation of the same suite counts exactly what the Spark predicates counted.
        assert v.engine == "gx"
        gx_counts = {r.name: (r.evaluated, r.failed) for r in v.results}
        assert gx_counts == {r.name: (r.evaluated, r.failed) for r in v.spark_results}
        assert len(gx_counts) == len(v.results) == len(SUITES[name].build(validator.settings).expectations)
    finally:
        v.release()


def test_trades_duplicate_key_is_a_warning_counted_not_quarantined(spark, validator: Validator) -> None:
    df = frame(spark, "silver.trades", [{"trade_id": "1"}, {"trade_id": "1"}, {"trade_id": "2"}])
    v = validator.validate(df, table="silver.trades", batch_id=1, now=NOW, run_gx=False)
    try:
        unique = next(r for r in v.results if r.name == "key_unique_in_batch")
        assert (unique.severity, unique.evaluated, unique.failed, unique.success) == ("warning", 3, 2, False)
        assert v.success and v.quarantined == 0
    finally:
        v.release()
