"""The one registry of lake tables: name, location under the lake root, schema, partitions, key.

Jobs never spell a table path or a column list themselves; they ask this module. A table's
location is ``<lake root>/<layer>/<entity>`` where the root is a local folder by default or an
``s3a://bucket/prefix`` URI by configuration (see :class:`LakeSettings`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from pyspark.sql.types import (
    ArrayType,
    BooleanType,
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

#: Prices and sizes: exact decimals wide enough for 1e-18 satoshi-like steps and 1e20 notionals.
PRICE = DecimalType(38, 18)


def _schema(*columns: tuple[str, DataType, bool]) -> StructType:
    return StructType([StructField(name, dtype, nullable) for name, dtype, nullable in columns])


@dataclass(frozen=True)
class TableSpec:
    """A Delta table of the lake."""

    name: str
    schema: StructType
    key: tuple[str, ...]
    partition_by: tuple[str, ...] = ()
    description: str = ""

    @property
    def layer(self) -> str:
        return self.name.split(".", 1)[0]

    @property
    def entity(self) -> str:
        return self.name.split(".", 1)[1]

    @property
    def relative_path(self) -> str:
        return f"{self.layer}/{self.entity}"

    @property
    def columns(self) -> list[str]:
        return [f.name for f in self.schema.fields]


# --- the raw envelope (landing files and Kafka records carry it as JSON) -----------------------

#: One JSON object per websocket frame or REST page, as written by the extractors.
#: ``source`` is ``ws`` or ``rest``; ``error`` is set only on dead-letter envelopes
#: (channel ``deadletter``): why the frame could not be classified.
RAW_ENVELOPE_SCHEMA = _schema(
    ("exchange", StringType(), False),
    ("channel", StringType(), False),
    ("stream", StringType(), True),
    ("native_symbol", StringType(), True),
    ("payload", StringType(), False),
    ("recv_ts_ns", LongType(), False),
    ("conn_id", StringType(), True),
    ("conn_seq", LongType(), True),
    ("source", StringType(), False),
    ("error", StringType(), True),
)

BRONZE_RAW_EVENTS = TableSpec(
    name="bronze.raw_events",
    schema=StructType(
        [
            *RAW_ENVELOPE_SCHEMA.fields,
            StructField("recv_date", DateType(), False),
            StructField("kafka_topic", StringType(), True),
            StructField("kafka_partition", IntegerType(), True),
            StructField("kafka_offset", LongType(), True),
            StructField("source_file", StringType(), True),
            StructField("ingest_ts", TimestampType(), False),
        ]
    ),
    key=("exchange", "conn_id", "conn_seq", "source"),
    partition_by=("exchange", "recv_date"),
    description="Every raw envelope as landed, append-only; payload kept verbatim for reprocessing.",
)

SILVER_MARKETS = TableSpec(
    name="silver.markets",
    schema=_schema(
        ("exchange", StringType(), False),
        ("native_symbol", StringType(), False),
        ("symbol", StringType(), False),
        ("base", StringType(), False),
        ("quote", StringType(), False),
        ("status", StringType(), True),
        ("updated_ts", TimestampType(), True),
    ),
    key=("exchange", "native_symbol"),
    description="Exchange markets from discovery snapshots, with the canonical BASE-QUOTE symbol.",
)

_PRICED = (
    ("usdt_rate", PRICE, True),
    ("price_usdt", PRICE, True),
    ("notional_usdt", PRICE, True),
    ("usdt_method", StringType(), True),
)

SILVER_TRADES = TableSpec(
    name="silver.trades",
    schema=_schema(
        ("exchange", StringType(), False),
        ("symbol", StringType(), False),
        ("native_symbol", StringType(), True),
        ("base", StringType(), False),
        ("quote", StringType(), False),
        ("trade_id", StringType(), False),
        ("price", PRICE, False),
        ("size", PRICE, False),
        ("side", StringType(), True),
        ("event_ts", TimestampType(), False),
        ("recv_ts", TimestampType(), False),
        ("source", StringType(), False),
        *_PRICED,
        ("trade_date", DateType(), False),
    ),
    key=("exchange", "symbol", "trade_id"),
    partition_by=("exchange", "trade_date"),
)

SILVER_TICKERS = TableSpec(
    name="silver.tickers",
    schema=_schema(
        ("exchange", StringType(), False),
        ("symbol", StringType(), False),
        ("base", StringType(), False),
        ("quote", StringType(), False),
        ("last", PRICE, True),
        ("open_24h", PRICE, True),
        ("high_24h", PRICE, True),
        ("low_24h", PRICE, True),
        ("base_volume_24h", PRICE, True),
        ("quote_volume_24h", PRICE, True),
        ("best_bid", PRICE, True),
        ("best_ask", PRICE, True),
        ("sequence", LongType(), True),
        ("event_ts", TimestampType(), False),
        ("recv_ts", TimestampType(), False),
        *_PRICED[:3],
        ("usdt_method", StringType(), True),
    ),
    # The exchange's own ticker sequence tells apart tickers that share a time (one Coinbase taker
    # order sweeping several levels); NULL for venues without one (Binance), compared NULL-safely.
    key=("exchange", "symbol", "event_ts", "sequence"),
    partition_by=("exchange",),
    description="Ticker states: one row per (exchange, symbol, event time, exchange sequence).",
)

SILVER_L1_QUOTES = TableSpec(
    name="silver.l1_quotes",
    schema=_schema(
        ("exchange", StringType(), False),
        ("symbol", StringType(), False),
        ("base", StringType(), False),
        ("quote", StringType(), False),
        ("bid_price", PRICE, True),
        ("bid_size", PRICE, True),
        ("ask_price", PRICE, True),
        ("ask_size", PRICE, True),
        ("sequence", LongType(), True),
        ("event_ts", TimestampType(), False),
        ("recv_ts", TimestampType(), False),
        ("source_channel", StringType(), True),
        ("usdt_rate", PRICE, True),
        ("mid_usdt", PRICE, True),
        ("spread_bps", PRICE, True),
        ("usdt_method", StringType(), True),
    ),
    key=("exchange", "symbol", "event_ts", "sequence"),
    partition_by=("exchange",),
    description="Best bid/ask quotes; source_channel says whether a quote came from an L1 stream or"
    " poll (l1) or from a Coinbase/KuCoin ticker's best bid/ask (ticker).",
)

SILVER_USDT_RATES = TableSpec(
    name="silver.usdt_rates",
    schema=_schema(
        ("asset", StringType(), False),
        ("minute", TimestampType(), False),
        ("rate_to_usdt", PRICE, False),
        ("method", StringType(), False),
    ),
    key=("asset", "minute"),
)

SILVER_QUARANTINE = TableSpec(
    name="silver.quarantine",
    schema=_schema(
        ("source_table", StringType(), False),
        ("exchange", StringType(), True),
        ("row_json", StringType(), False),
        ("reason", StringType(), False),
        ("batch_id", LongType(), True),
        ("quarantined_ts", TimestampType(), False),
    ),
    key=("source_table", "row_json", "reason"),
)

#: The USDT columns of a bar: ``NULL`` unless every trade of the bar has a USDT price.
_BAR_USDT = (
    ("open_usdt", PRICE, True),
    ("high_usdt", PRICE, True),
    ("low_usdt", PRICE, True),
    ("close_usdt", PRICE, True),
    ("vwap_usdt", PRICE, True),
    ("volume_usdt", PRICE, True),
)

GOLD_OHLCV_1M = TableSpec(
    name="gold.ohlcv_1m",
    schema=_schema(
        ("exchange", StringType(), False),
        ("symbol", StringType(), False),
        ("base", StringType(), False),
        ("quote", StringType(), False),
        ("minute", TimestampType(), False),
        ("open", PRICE, False),
        ("high", PRICE, False),
        ("low", PRICE, False),
        ("close", PRICE, False),
        ("volume", PRICE, False),
        ("quote_volume", PRICE, False),
        ("vwap", PRICE, True),
        ("trade_count", LongType(), False),
        ("first_trade_ts", TimestampType(), False),
        ("last_trade_ts", TimestampType(), False),
        *_BAR_USDT,
        ("bar_date", DateType(), False),
        ("updated_ts", TimestampType(), False),
    ),
    key=("exchange", "symbol", "minute"),
    partition_by=("exchange", "bar_date"),
    description="One-minute bars per exchange and symbol from silver.trades: OHLC by (event time,"
    " trade id), volumes in base, quote and USDT, VWAP; recomputed for every minute a batch touches.",
)

GOLD_OHLCV_1M_COMPOSITE = TableSpec(
    name="gold.ohlcv_1m_composite",
    schema=_schema(
        ("base", StringType(), False),
        ("minute", TimestampType(), False),
        ("open_usdt", PRICE, False),
        ("high_usdt", PRICE, False),
        ("low_usdt", PRICE, False),
        ("close_usdt", PRICE, False),
        ("vwap_usdt", PRICE, True),
        ("volume", PRICE, False),
        ("volume_usdt", PRICE, False),
        ("trade_count", LongType(), False),
        ("first_trade_ts", TimestampType(), False),
        ("last_trade_ts", TimestampType(), False),
        ("exchanges", StringType(), False),
        ("symbols", StringType(), False),
        ("bar_date", DateType(), False),
        ("updated_ts", TimestampType(), False),
    ),
    key=("base", "minute"),
    partition_by=("bar_date",),
    description="One-minute bars per base asset across every exchange and quote, in USDT (from the"
    " priced bars of gold.ohlcv_1m); exchanges and symbols are sorted comma-separated lists.",
)

GOLD_L1_LATEST = TableSpec(
    name="gold.l1_latest",
    schema=SILVER_L1_QUOTES.schema,
    key=("exchange", "symbol"),
    description="The newest quote per exchange and symbol (by event time, then exchange sequence).",
)

GOLD_L1_1S = TableSpec(
    name="gold.l1_1s",
    schema=StructType(
        [
            StructField("second", TimestampType(), False),
            *SILVER_L1_QUOTES.schema.fields,
            StructField("quote_date", DateType(), False),
        ]
    ),
    key=("exchange", "symbol", "second"),
    partition_by=("exchange", "quote_date"),
    description="The last quote of each second per exchange and symbol: L1 history and spreads.",
)

GOLD_EXCHANGE_VOLUME_DAILY = TableSpec(
    name="gold.exchange_volume_daily",
    schema=_schema(
        ("exchange", StringType(), False),
        ("trade_date", DateType(), False),
        ("symbol", StringType(), False),
        ("base", StringType(), False),
        ("quote", StringType(), False),
        ("volume", PRICE, False),
        ("volume_quote", PRICE, False),
        ("volume_usdt", PRICE, True),
        ("trade_count", LongType(), False),
        ("unpriced_trade_count", LongType(), False),
        ("venue_share", PRICE, True),
        ("updated_ts", TimestampType(), False),
    ),
    key=("exchange", "trade_date", "symbol"),
    description="Daily volume per exchange and symbol (base, quote asset, USDT over the priced bars)"
    " and venue_share: the exchange's part of the symbol's USDT volume over all venues that day.",
)

#: A completeness ratio: ours / the exchange's, rounded half up to 10 decimals (1 = complete).
RATIO = DecimalType(38, 10)

GOLD_COMPLETENESS_1M = TableSpec(
    name="gold.completeness_1m",
    schema=_schema(
        ("exchange", StringType(), False),
        ("symbol", StringType(), False),
        ("native_symbol", StringType(), False),
        ("minute", TimestampType(), False),
        ("trade_count", LongType(), False),
        ("volume", PRICE, False),
        ("exchange_trade_count", LongType(), True),
        ("exchange_volume", PRICE, False),
        ("count_ratio", RATIO, True),
        ("volume_ratio", RATIO, True),
        ("in_gap", BooleanType(), False),
        ("kline_recv_ts", TimestampType(), False),
        ("updated_ts", TimestampType(), False),
    ),
    key=("exchange", "symbol", "minute"),
    description="Per exchange, symbol and minute with an exchange 1-minute candle (channel klines):"
    " our trade count and base volume in silver.trades next to the exchange's (its trade count only"
    " where the venue publishes one: Binance), their ratios (NULL when the exchange's is 0), and"
    " in_gap: the minute overlaps a recorded gaps window (trades the extractor knows it lost).",
)

#: Per expectation of a batch: its stable name (``meta["name"]`` in the suite), GX type, severity,
#: rows judged and rows unexpected, and whether it passed. (Nullable: Delta refuses NOT NULL
#: constraints inside arrays.)
DQ_EXPECTATION = StructType(
    [
        StructField("name", StringType(), True),
        StructField("type", StringType(), True),
        StructField("severity", StringType(), True),
        StructField("evaluated", LongType(), True),
        StructField("failed", LongType(), True),
        StructField("success", BooleanType(), True),
    ]
)

GOLD_DQ_RESULTS = TableSpec(
    name="gold.dq_results",
    schema=_schema(
        ("suite", StringType(), False),
        ("table", StringType(), False),
        ("batch_id", LongType(), False),
        ("success", BooleanType(), False),
        ("evaluated", LongType(), False),
        ("failed", LongType(), False),
        ("quarantined", LongType(), False),
        ("expectations", ArrayType(DQ_EXPECTATION, containsNull=False), False),
        ("engine", StringType(), False),
        ("error", StringType(), True),
        ("details_json", StringType(), True),
        ("validation_ms", LongType(), True),
        ("checked_ts", TimestampType(), False),
        ("checked_date", DateType(), False),
    ),
    key=("suite", "table", "batch_id"),
    description="One row per validated batch and table: evaluated = rows validated, failed = rows"
    " failing a critical expectation, quarantined = failed + rows the parser rejected; per-expectation"
    " counts in expectations; engine spark (suite compiled to Spark predicates) or gx (a full GX run,"
    " its result JSON in details_json) or error (validation itself failed, the batch passed through).",
)

TABLES: dict[str, TableSpec] = {
    spec.name: spec
    for spec in (
        BRONZE_RAW_EVENTS,
        SILVER_MARKETS,
        SILVER_TRADES,
        SILVER_TICKERS,
        SILVER_L1_QUOTES,
        SILVER_USDT_RATES,
        SILVER_QUARANTINE,
        GOLD_OHLCV_1M,
        GOLD_OHLCV_1M_COMPOSITE,
        GOLD_L1_LATEST,
        GOLD_L1_1S,
        GOLD_EXCHANGE_VOLUME_DAILY,
        GOLD_DQ_RESULTS,
        GOLD_COMPLETENESS_1M,
    )
}


def table(name: str) -> TableSpec:
    """Look a table up by its ``layer.entity`` name; the error lists the known ones."""
    try:
        return TABLES[name]
    except KeyError:
        raise KeyError(f"unknown table {name!r}; known tables: {', '.join(sorted(TABLES))}") from None


@dataclass(frozen=True, kw_only=True)
class LakeSettings:
    """Where the lake lives.

    ``root`` is a local folder (default ``./lake-data``) or ``s3a://bucket/prefix``; checkpoints live
    under ``<root>/_checkpoints/<query name>`` unless ``checkpoint_root`` says otherwise.
    """

    root: str = "lake-data"
    checkpoint_root: str | None = None


def _is_uri(path: str) -> bool:
    return "://" in path


def _join(root: str, *parts: str) -> str:
    base = root if _is_uri(root) else str(Path(root).resolve())
    return "/".join([base.rstrip("/"), *parts])


@dataclass(frozen=True)
class Lake:
    """Resolves table and checkpoint locations under one lake root."""

    settings: LakeSettings = LakeSettings()

    @property
    def root(self) -> str:
        return _join(self.settings.root)

    def path(self, name: str) -> str:
        return _join(self.settings.root, table(name).relative_path)

    def checkpoint(self, query_name: str) -> str:
        root = self.settings.checkpoint_root
        return _join(root, query_name) if root else _join(self.settings.root, "_checkpoints", query_name)
