"""Exactness of silver rows on recorded-frame shapes (issue 11): receive times to the microsecond,
every same-time ticker state kept with the latest one winning a key. (Parsing tickers into L1
quotes is tested with each exchange, in ``tests/spark/parsers/``.)

Decimals are compared exactly (chispa's whole-DataFrame equality compares ``Decimal`` values, and
the texts are checked where the scale matters); timestamps come from integer arithmetic.
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal as D

import pytest
from chispa import assert_df_equality
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql.types import DateType, LongType, StringType, TimestampType

from lake.delta_io import dedupe_first
from lake.tables import PRICE, SILVER_TICKERS, Lake
from spark_jobs import silver_markets
from spark_jobs.bronze_ingest import envelopes_to_bronze
from spark_jobs.columns import recv_ts, ts_from_ns
from spark_jobs.parsers import parse_l1, parse_trades
from spark_jobs.runtime import SilverSettings
from spark_jobs.silver_tickers import JOB as TICKERS_JOB
from tests.spark.envelopes import (
    MS,
    T0_MS,
    T0_NS,
    at_ns,
    bronze_df,
    discovery_envelopes,
    envelope,
    frames,
    markets_df,
    schema_of,
    utc_us,
)

pytestmark = pytest.mark.spark

#: Nanosecond receive times whose last digits a double cannot carry: ``floor(ns / 1000.0)`` gives
#: the next microsecond for the last three (and the next day for the last one).
ODD_NS = (1700000000123456789, 1700000000123456999, 1767225600000000999, 1767225599999999999)


# --- receive times ----------------------------------------------------------------------------


def test_nanosecond_times_become_the_exact_microsecond_not_a_rounded_double(spark: SparkSession) -> None:
    ns = spark.createDataFrame([(n,) for n in ODD_NS], "recv_ts_ns long")
    got = ns.select(
        "recv_ts_ns",
        recv_ts().alias("recv_ts"),
        ts_from_ns(F.col("recv_ts_ns").cast("string")).alias("from_text"),
        ts_from_ns(F.col("recv_ts_ns")).alias("from_number"),
    )
    schema = schema_of(
        ("recv_ts_ns", LongType()),
        ("recv_ts", TimestampType()),
        ("from_text", TimestampType()),
        ("from_number", TimestampType()),
    )
    expected = spark.createDataFrame([(n, at_ns(n), at_ns(n), at_ns(n)) for n in ODD_NS], schema)
    assert_df_equality(got, expected, ignore_nullable=True)
    assert ns.select(recv_ts().alias("t")).first()["t"] == datetime(2023, 11, 14, 22, 13, 20, 123456)  # type: ignore[index]


def test_receive_time_digits_survive_into_bronze_dates_trades_and_binance_l1_keys(
    spark: SparkSession,
) -> None:
    import json

    midnight = ODD_NS[3]  # 2025-12-31T23:59:59.999999999Z: a double puts it on 2026-01-01
    line = json.dumps(envelope("binance", "trades", {"e": "trade"}, recv_ns=midnight))
    lines = spark.createDataFrame(
        [(line, None, None, None, "f0")],
        "value string, kafka_topic string, kafka_partition int, kafka_offset long, source_file string",
    )
    bronze = envelopes_to_bronze(lines).select("recv_ts_ns", "recv_date")
    expected_bronze = spark.createDataFrame(
        [(midnight, at_ns(midnight).date())], schema_of(("recv_ts_ns", LongType()), ("recv_date", DateType()))
    )
    assert at_ns(midnight).date().isoformat() == "2025-12-31"
    assert_df_equality(bronze, expected_bronze, ignore_nullable=True)

    r = ODD_NS[2]
    trades = bronze_df(spark, [
        envelope("binance", "trades", {"e": "trade", "E": T0_MS, "s": "BTCUSDT", "t": 7, "p": "94210.02",
            "q": "0.0015", "T": T0_MS, "m": False}, recv_ns=r),
        # KuCoin match time is nanoseconds in a string.
        envelope("kucoin", "trades", {"type": "message", "topic": "/market/match:BTC-USDT", "data": {
            "symbol": "BTC-USDT", "sequence": "9", "side": "buy", "price": "94209.9", "size": "0.0021",
            "type": "match", "time": str(ODD_NS[1])}}, recv_ns=ODD_NS[1]),
    ])  # fmt: skip
    got_trades = parse_trades(trades).select("trade_id", "event_ts", "recv_ts").orderBy("trade_id")
    schema = schema_of(
        ("trade_id", StringType()), ("event_ts", TimestampType()), ("recv_ts", TimestampType())
    )
    expected_trades = spark.createDataFrame(
        [("7", at_ns(T0_NS), at_ns(r)), ("9", at_ns(ODD_NS[1]), at_ns(ODD_NS[1]))], schema
    )
    assert_df_equality(got_trades, expected_trades, ignore_nullable=True)

    # bookTicker has no event time: the receive time is its event time, hence part of the L1 key.
    book = bronze_df(spark, [envelope("binance", "l1", {"u": 5120938471, "s": "BTCUSDT", "b": "94210.01",
        "B": "1.204", "a": "94210.02", "A": "0.0311"}, recv_ns=r)])  # fmt: skip
    got_l1 = parse_l1(book).select("sequence", "event_ts", "recv_ts")
    schema = schema_of(("sequence", LongType()), ("event_ts", TimestampType()), ("recv_ts", TimestampType()))
    expected_l1 = spark.createDataFrame([(5120938471, at_ns(r), at_ns(r))], schema)
    assert_df_equality(got_l1, expected_l1, ignore_nullable=True)


# --- tickers: one row per exchange sequence, the latest state wins a key ---------------------


def _ticker_envelopes() -> list[dict]:
    r = T0_NS + 1_300_000_000
    sweep = [
        envelope("coinbase", "ticker", text, recv_ns=r + i, stream="ticker", conn_seq=i)
        for i, text in enumerate(frames("coinbase", "ticker_sweep"))
    ]
    same_time = [
        envelope("kucoin", "ticker", text, recv_ns=r + 10 + i, stream="/market/ticker:BTC-USDT", conn_seq=i)
        for i, text in enumerate(frames("kucoin", "ticker_same_time"))
    ]
    mini = {"e": "24hrMiniTicker", "E": T0_MS + 2000, "s": "BTCUSDT", "o": "93000", "h": "95000",
            "l": "92000", "v": "1000", "q": "94000000"}  # fmt: skip
    # Binance has no ticker sequence: two pushes with one event time share a key; the later received
    # state is kept (the old order kept the first).
    binance = [
        envelope("binance", "ticker", {"stream": "!miniTicker@arr", "data": [{**mini, "c": "94210.02"}]},
                 recv_ns=r + 20_000, stream="!miniTicker@arr"),
        envelope("binance", "ticker", {"stream": "!miniTicker@arr", "data": [{**mini, "c": "94210.03"}]},
                 recv_ns=r + 21_000, stream="!miniTicker@arr", conn_id="c2"),
    ]  # fmt: skip
    return [*sweep, *same_time, *binance]


_TICKER_VIEW = (
    "exchange",
    "symbol",
    "sequence",
    "last",
    "best_bid",
    "best_ask",
    "base_volume_24h",
    "event_ts",
)


def _expected_tickers(spark: SparkSession) -> DataFrame:
    sweep_ts = utc_us(T0_NS // 1000 + 1_250_000)
    schema = schema_of(
        ("exchange", StringType()),
        ("symbol", StringType()),
        ("sequence", LongType()),
        ("last", PRICE),
        ("best_bid", PRICE),
        ("best_ask", PRICE),
        ("base_volume_24h", PRICE),
        ("event_ts", TimestampType()),
    )
    return spark.createDataFrame(
        [
            ("binance", "BTC-USDT", None, D("94210.03"), None, None, D("1000"), at_ns(T0_NS + 2000 * MS)),
            ("coinbase", "BTC-USD", 112233445570, D("94210.01"), D("94210"), D("94210.5"), D("8123.5771"),
             sweep_ts),
            ("coinbase", "BTC-USD", 112233445573, D("94210.5"), D("94210"), D("94211"), D("8123.8771"),
             sweep_ts),
            ("coinbase", "BTC-USD", 112233445576, D("94211"), D("94210"), D("94211"), D("8123.9271"),
             sweep_ts),
            ("kucoin", "BTC-USDT", 21874411930, D("94210"), D("94209.9"), D("94210"), None, sweep_ts),
            ("kucoin", "BTC-USDT", 21874411931, D("94210"), D("94209.8"), D("94210"), None, sweep_ts),
        ],
        schema,
    )  # fmt: skip


def test_same_time_tickers_are_each_a_row_and_a_shared_key_keeps_the_latest_state(
    spark: SparkSession,
) -> None:
    assert SILVER_TICKERS.key == ("exchange", "symbol", "event_ts", "sequence")
    rows = bronze_df(spark, _ticker_envelopes()).transform(TICKERS_JOB.normalize(markets_df(spark)))
    assert rows.where("_error IS NOT NULL").count() == 0
    target = TICKERS_JOB.target
    kept = dedupe_first(rows, target.key, target.order()).select(*_TICKER_VIEW)
    assert_df_equality(kept.orderBy("exchange", "sequence"), _expected_tickers(spark), ignore_nullable=True)


def test_same_time_tickers_all_reach_silver_tickers_and_replays_add_nothing(
    spark: SparkSession, lake: Lake
) -> None:
    silver_markets.make_batch_writer(lake=lake)(bronze_df(spark, discovery_envelopes()), 0)
    write = TICKERS_JOB.batch_writer(lake=lake, settings=SilverSettings())
    envelopes = _ticker_envelopes()
    write(bronze_df(spark, envelopes), 0)
    # A later batch re-delivers everything (the NULL Binance sequence must still match its row).
    write(bronze_df(spark, envelopes), 1)
    stored = spark.read.format("delta").load(lake.path(SILVER_TICKERS.name))
    assert_df_equality(
        stored.select(*_TICKER_VIEW).orderBy("exchange", "sequence"),
        _expected_tickers(spark),
        ignore_nullable=True,
    )
