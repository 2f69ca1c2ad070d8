"""The issue's criterion at the gold transforms: the same quotes through the gold job's
``latest_quotes`` and ``quotes_1s`` (what ``update_l1`` MERGEs into ``gold.l1_latest`` and
``gold.l1_1s``; the MERGE itself is tested in tests/spark/test_gold.py and costs minutes of a cold
session here) and through the live-update stores give the same latest values (``gold.l1_latest``
= Redis hashes = PostgreSQL ``live_tickers``) and the same per-second history (``gold.l1_1s`` =
the Redis range, last quote per second). The quotes are the stores' test sequence (duplicate and
late older quotes included), as silver rows; the stores get them as the feed's states."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import pytest
from pyspark.sql import SparkSession

from lake.serve.settings import StoreSettings
from lake.serve.stores import PostgresStore, RedisStore, StoreWriter, is_quote, last_per_second
from lake.tables import GOLD_L1_1S, SILVER_L1_QUOTES
from spark_jobs import gold
from tests.serve.test_stores import T0, UPDATES, both, feed, order, query

pytestmark = pytest.mark.spark

QUOTES = [s for s in UPDATES if is_quote(s)]


def at(ns: int) -> datetime:
    return datetime.fromtimestamp(ns / 1e9, tz=UTC).replace(tzinfo=None)


def silver_row(s: dict[str, Any]) -> dict[str, Any]:
    """A state as the ``silver.l1_quotes`` row the lake makes of the same frame (no sequence)."""
    return {
        "exchange": s["exchange"],
        "symbol": s["symbol"],
        "base": s["base"],
        "quote": s["quote"],
        "bid_price": Decimal(s["bid"]),
        "bid_size": Decimal(s["bid_size"]),
        "ask_price": Decimal(s["ask"]),
        "ask_size": Decimal(s["ask_size"]),
        "sequence": None,
        "event_ts": at(order(s)[0]),
        "recv_ts": at(s["recv_ts_ns"]),
        "source_channel": s["channel"],
        "usdt_rate": None,
        "mid_usdt": None,
        "spread_bps": None,
        "usdt_method": None,
    }


def test_stores_hold_the_latest_of_gold_l1_latest_and_redis_ranges_equal_gold_l1_1s(
    spark: SparkSession,
    postgres_store_settings: StoreSettings,
    redis_store_settings: StoreSettings,
) -> None:
    silver = spark.createDataFrame([silver_row(s) for s in QUOTES], SILVER_L1_QUOTES.schema)
    stores = both(postgres_store_settings, redis_store_settings)
    redis_store = RedisStore(stores)
    writers = [StoreWriter(PostgresStore(stores)), StoreWriter(redis_store)]
    for writer in writers:
        feed(writer, UPDATES)
    native = {(s["exchange"], s["symbol"]): s["native_symbol"] for s in QUOTES}

    def ms(ts: datetime) -> int:
        return round(ts.replace(tzinfo=UTC).timestamp() * 1000)

    gold_latest = {
        (r.exchange, native[(r.exchange, r.symbol)]): (r.bid_price, r.ask_price, ms(r.event_ts))
        for r in silver.transform(gold.latest_quotes).collect()
    }
    assert len(gold_latest) == 3
    in_redis = {
        key: (Decimal(h["bid"]), Decimal(h["ask"]), int(h["time_ms"]))
        for key in gold_latest
        for h in [redis_store.latest(*key)]
    }
    assert in_redis == gold_latest
    in_postgres = {
        (ex, sym): (bid, ask, round(ts.timestamp() * 1000))
        for ex, sym, _last, _last_ts, bid, ask, ts in query(stores, "live_tickers")
    }
    assert in_postgres == gold_latest

    start, end = T0, T0 + 3000
    l1_1s = silver.transform(gold.quotes_1s).select(*GOLD_L1_1S.columns).collect()
    for exchange, symbol in native:
        gold_1s = [
            (ms(r.event_ts), r.bid_price, r.ask_price)
            for r in sorted(l1_1s, key=lambda r: r.second)
            if (r.exchange, r.symbol) == (exchange, symbol) and start <= ms(r.second) < end
        ]
        ranged = redis_store.quotes(exchange, native[(exchange, symbol)], start_ms=start, end_ms=end)
        per_second = [(q["time_ms"], Decimal(q["bid"]), Decimal(q["ask"])) for q in last_per_second(ranged)]
        assert per_second == gold_1s, (exchange, symbol)
        assert gold_1s
    for writer in writers:
        writer.close()
