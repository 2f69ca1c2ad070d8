"""Raw envelopes in the documented payload shapes (exchanges.md), for the Spark tests.

Payload texts are written out as the exchanges send them (numbers as strings where the exchange
sends strings); helpers only wrap them in the envelope and turn them into bronze rows or files.
"""

from __future__ import annotations

import gzip
import json
from datetime import UTC, datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path
from typing import Any

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql.types import DataType, StructField, StructType

from lake.tables import BRONZE_RAW_EVENTS
from spark_jobs.silver_markets import latest_markets

T0_NS = 1767225600_000_000_000  # 2026-01-01T00:00:00Z
MS = 1_000_000
T0_MS = T0_NS // MS
FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"


def frames(exchange: str, name: str) -> list[str]:
    """The documented-shape frames of ``tests/fixtures/<exchange>/<name>.jsonl``, one per line."""
    return (FIXTURES / exchange / f"{name}.jsonl").read_text().splitlines()


def ts(ns: int) -> datetime:
    """A naive UTC datetime as Spark returns timestamps in a UTC session (microsecond precision)."""
    return datetime.fromtimestamp(ns // 1000 / 1_000_000, tz=UTC).replace(tzinfo=None)


_EPOCH = datetime(1970, 1, 1)


def utc_us(us: int) -> datetime:
    """Epoch microseconds as a naive UTC datetime, in integer arithmetic only."""
    return _EPOCH + timedelta(microseconds=us)


def at_ns(ns: int) -> datetime:
    """Epoch nanoseconds as a naive UTC datetime, truncated to the microsecond (integer arithmetic)."""
    return utc_us(ns // 1000)


def schema_of(*fields: tuple[str, DataType]) -> StructType:
    """A schema of nullable fields, for expected rows built inline."""
    return StructType([StructField(name, dtype, True) for name, dtype in fields])


def q(value: Decimal, places: int = 18) -> Decimal:
    return value.quantize(Decimal(1).scaleb(-places), rounding=ROUND_HALF_UP)


def envelope(
    exchange: str,
    channel: str,
    payload: Any,
    *,
    recv_ns: int,
    stream: str = "",
    native_symbol: str | None = None,
    source: str = "ws",
    conn_id: str = "c1",
    conn_seq: int = 0,
) -> dict[str, Any]:
    text = payload if isinstance(payload, str) else json.dumps(payload, separators=(",", ":"))
    return {
        "exchange": exchange,
        "channel": channel,
        "stream": stream,
        "native_symbol": native_symbol,
        "payload": text,
        "recv_ts_ns": recv_ns,
        "conn_id": conn_id,
        "conn_seq": conn_seq,
        "source": source,
        "error": None,
    }


def bronze_df(spark: SparkSession, envelopes: list[dict[str, Any]]) -> DataFrame:
    rows = []
    for i, e in enumerate(envelopes):
        recv = ts(e["recv_ts_ns"])
        rows.append({**e, "recv_date": recv.date(), "kafka_topic": None, "kafka_partition": None,
                     "kafka_offset": None, "source_file": f"f{i}", "ingest_ts": recv})  # fmt: skip
    return spark.createDataFrame(rows, BRONZE_RAW_EVENTS.schema)


def land(root: Path, envelopes: list[dict[str, Any]], *, name: str) -> Path:
    """Write envelopes as one gzip JSON-lines file in the landing layout; returns the file."""
    first = envelopes[0]
    when = ts(first["recv_ts_ns"])
    folder = (
        root / "raw" / f"exchange={first['exchange']}" / f"channel={first['channel']}"
        / f"dt={when:%Y-%m-%d}" / f"hour={when:%H}"
    )  # fmt: skip
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.jsonl.gz"
    tmp = folder / f"_{name}.tmp"
    tmp.write_bytes(gzip.compress("".join(json.dumps(e) + "\n" for e in envelopes).encode()))
    tmp.rename(path)
    return path


# --- discovery snapshots -------------------------------------------------------------------------

BINANCE_EXCHANGE_INFO = {
    "timezone": "UTC",
    "serverTime": 1767225599000,
    "symbols": [
        {"symbol": "BTCUSDT", "status": "TRADING", "baseAsset": "BTC", "quoteAsset": "USDT",
         "isSpotTradingAllowed": True, "filters": []},
        {"symbol": "ETHUSDT", "status": "TRADING", "baseAsset": "ETH", "quoteAsset": "USDT",
         "isSpotTradingAllowed": True},
        {"symbol": "ETHBTC", "status": "TRADING", "baseAsset": "ETH", "quoteAsset": "BTC",
         "isSpotTradingAllowed": True},
        {"symbol": "SOLETH", "status": "BREAK", "baseAsset": "SOL", "quoteAsset": "ETH",
         "isSpotTradingAllowed": True},
        {"symbol": "XBTEUR", "status": "TRADING", "baseAsset": "XBT", "quoteAsset": "EUR",
         "isSpotTradingAllowed": True},
        {"symbol": "BTCUSDTM", "status": "TRADING", "baseAsset": "BTC", "quoteAsset": "USDT",
         "isSpotTradingAllowed": False},
    ],
}  # fmt: skip
KUCOIN_SYMBOLS = {
    "code": "200000",
    "data": [
        {"symbol": "BTC-USDT", "name": "BTC-USDT", "baseCurrency": "BTC", "quoteCurrency": "USDT",
         "market": "USDS", "enableTrading": True},
        {"symbol": "USDT-IRT", "name": "USDT-IRT", "baseCurrency": "USDT", "quoteCurrency": "IRT",
         "enableTrading": True},
    ],
}  # fmt: skip
COINBASE_PRODUCTS = [
    {"id": "BTC-USD", "base_currency": "BTC", "quote_currency": "USD", "status": "online",
     "trading_disabled": False, "display_name": "BTC/USD"},
    {"id": "ETH-USD", "base_currency": "ETH", "quote_currency": "USD", "status": "online",
     "trading_disabled": True},
]  # fmt: skip


def discovery_envelopes(recv_ns: int = T0_NS - 5_000_000_000) -> list[dict[str, Any]]:
    return [
        envelope("binance", "markets", BINANCE_EXCHANGE_INFO, recv_ns=recv_ns, source="rest",
                 stream="/api/v3/exchangeInfo", conn_id="disc-b"),
        envelope("kucoin", "markets", KUCOIN_SYMBOLS, recv_ns=recv_ns, source="rest",
                 stream="/api/v2/symbols", conn_id="disc-k"),
        envelope("coinbase", "markets", COINBASE_PRODUCTS, recv_ns=recv_ns, source="rest",
                 stream="/products", conn_id="disc-c"),
    ]  # fmt: skip


def markets_df(spark: SparkSession) -> DataFrame:
    """``silver.markets`` rows of :func:`discovery_envelopes` (what the jobs' normalization joins)."""
    return latest_markets(bronze_df(spark, discovery_envelopes()))
