"""Small DataFrames of one lake table for the suite tests: rows as dicts, the rest defaulted.

A column a row does not name gets a sane value for its table (:data:`DEFAULTS`), else one by type,
so a test spells only what it is about.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql.types import (
    DataType,
    DateType,
    DecimalType,
    IntegerType,
    LongType,
    StringType,
    StructField,
    StructType,
    TimestampType,
)

from lake.tables import table

#: The validation clock of every test.
NOW = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)
EVENT = NOW - timedelta(seconds=2)
RECV = NOW - timedelta(seconds=1)

_COMMON: dict[str, Any] = {
    "exchange": "binance",
    "symbol": "BTC-USDT",
    "native_symbol": "BTCUSDT",
    "base": "BTC",
    "quote": "USDT",
    "event_ts": EVENT,
    "recv_ts": RECV,
    "source": "ws",
}

DEFAULTS: dict[str, dict[str, Any]] = {
    "bronze.raw_events": {
        "exchange": "binance",
        "channel": "trades",
        "payload": '{"e":"trade"}',
        "recv_ts_ns": int(RECV.timestamp()) * 1_000_000_000,
        "source": "ws",
    },
    "silver.trades": {
        **_COMMON,
        "price": Decimal("100.5"),
        "size": Decimal("0.25"),
        "side": "buy",
        "trade_date": EVENT.date(),
    },
    "silver.l1_quotes": {
        **_COMMON,
        "bid_price": Decimal("100"),
        "bid_size": Decimal("1"),
        "ask_price": Decimal("100.1"),
        "ask_size": Decimal("2"),
        "spread_bps": Decimal("9.995"),
        "source_channel": "l1",
    },
    "silver.tickers": {
        **_COMMON,
        "last": Decimal("100"),
        "open_24h": Decimal("95"),
        "high_24h": Decimal("110"),
        "low_24h": Decimal("90"),
        "base_volume_24h": Decimal("1000"),
        "quote_volume_24h": Decimal("100000"),
        "best_bid": Decimal("99.9"),
        "best_ask": Decimal("100.1"),
    },
    "gold.ohlcv_1m": {
        **_COMMON,
        "minute": NOW.replace(minute=0),
        "open": Decimal("100"),
        "high": Decimal("102"),
        "low": Decimal("99"),
        "close": Decimal("101"),
        "volume": Decimal("3"),
        "quote_volume": Decimal("300.5"),
        "vwap": Decimal("100.1"),
        "trade_count": 3,
        "first_trade_ts": NOW.replace(minute=0),
        "last_trade_ts": NOW.replace(minute=0, second=59),
        "bar_date": NOW.date(),
        "updated_ts": NOW,
    },
}


def _by_type(dtype: DataType) -> Any:
    if isinstance(dtype, StringType):
        return "x"
    if isinstance(dtype, DecimalType):
        return Decimal("1")
    if isinstance(dtype, LongType | IntegerType):
        return 1
    if isinstance(dtype, TimestampType):
        return NOW
    if isinstance(dtype, DateType):
        return date(2026, 1, 1)
    return None


def schema_of(name: str, *, internal: bool = False) -> StructType:
    """The table's schema, all columns nullable (bad rows hold NULLs), plus ``_raw``/``_error``."""
    fields = [StructField(f.name, f.dataType, True) for f in table(name).schema.fields]
    if internal:
        fields += [StructField("_raw", StringType(), True), StructField("_error", StringType(), True)]
    return StructType(fields)


def frame(spark: SparkSession, name: str, rows: list[dict[str, Any]], *, internal: bool = False) -> DataFrame:
    """A DataFrame of table ``name`` from ``rows`` (a key set to ``None`` is a NULL)."""
    schema = schema_of(name, internal=internal)
    defaults = DEFAULTS[name]
    data = []
    for row in rows:
        values = []
        for f in schema.fields:
            if f.name in row:
                values.append(row[f.name])
            elif f.name in defaults:
                values.append(defaults[f.name])
            elif f.name.startswith("_"):
                values.append(None)
            else:
                values.append(_by_type(f.dataType))
        data.append(tuple(values))
    return spark.createDataFrame(data, schema)
