"""What every exchange's parser shares: opening a payload, the output columns, the checks.

An exchange module (:mod:`spark_jobs.parsers.binance`, ...) reads the items
:func:`payload_items` gives and returns the normalized columns plus ``_raw`` and ``_error``
(``NULL`` for a good row, else the reason it goes to quarantine); the checks below produce those
reasons, so every exchange rejects a bad row for the same reason.
"""

from __future__ import annotations

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F
from pyspark.sql.types import (
    ArrayType,
    DataType,
    LongType,
    StringType,
    StructField,
    StructType,
    TimestampType,
)

from lake.tables import PRICE
from spark_jobs.columns import first_error, minute_of

#: Trades: one row per trade. ``trade_id`` is a string, identical for the websocket frame and the
#: REST gap-fill row of one trade, so the MERGE on ``(exchange, symbol, trade_id)`` keeps one row.
TRADE_COLUMNS = (
    "exchange", "native_symbol", "trade_id", "price", "size", "side", "event_ts", "recv_ts", "source",
)  # fmt: skip

#: ``sequence`` is the exchange's own ordering of ticker states where it has one (Coinbase and
#: KuCoin ``sequence``; ``NULL`` for Binance): several Coinbase tickers share one ``time`` when a
#: taker order sweeps several levels, and only the sequence tells them apart.
TICKER_COLUMNS = (
    "exchange", "native_symbol", "last", "open_24h", "high_24h", "low_24h", "base_volume_24h",
    "quote_volume_24h", "best_bid", "best_ask", "sequence", "event_ts", "recv_ts",
)  # fmt: skip

#: ``source_channel`` is the bronze channel a quote was read from: ``l1`` (Binance ``@bookTicker``,
#: KuCoin ``/spotMarket/level1``, Coinbase REST ``book?level=1``) or ``ticker`` (a quote derived
#: from a Coinbase or KuCoin ticker's best bid/ask).
L1_COLUMNS = (
    "exchange", "native_symbol", "bid_price", "bid_size", "ask_price", "ask_size", "sequence",
    "event_ts", "recv_ts", "source_channel",
)  # fmt: skip

MARKET_COLUMNS = ("exchange", "native_symbol", "base_asset", "quote_asset", "status", "updated_ts")


def struct(*names: str, types: dict[str, DataType] | None = None) -> StructType:
    """A payload schema: these fields, strings unless ``types`` says otherwise (numbers stay text)."""
    types = types or {}
    return StructType([StructField(n, types.get(n, StringType()), True) for n in names])


#: The outer frame of every payload: only what locates the body and the symbol.
WRAPPER_SCHEMA = struct("stream", "topic", "subject", "type", "code", "data", "ts", "cts", "cs")

_ENVELOPE_COLS = (
    "exchange",
    "channel",
    "stream",
    "native_symbol",
    "recv_ts_ns",
    "source",
    "conn_id",
    "conn_seq",
)


def payload_items(bronze: DataFrame) -> DataFrame:
    """One row per payload item: the envelope columns, ``_wrap`` (the outer frame) and ``_raw``.

    The *body* is the ``data`` member when the payload has one (Binance combined streams
    ``{"stream":..,"data":..}``, KuCoin frames ``{"type":"message","topic":..,"data":..}`` and REST
    envelopes ``{"code":"200000","data":[..]}``), else the payload itself. A body that is a JSON
    array (``!miniTicker@arr``, REST trade pages) gives one item per element, an object one item;
    each item keeps its own text in ``_raw``. An empty array gives no row; a payload that is not
    JSON gives one row with ``_raw`` ``NULL``.
    """
    wrap = F.from_json("payload", WRAPPER_SCHEMA)
    body = F.coalesce(wrap["data"], F.col("payload"))
    items = F.when(
        F.ltrim(body).startswith("["),
        F.coalesce(F.from_json(body, ArrayType(StringType())), F.array(F.lit(None).cast(StringType()))),
    ).otherwise(F.array(body))
    return bronze.select(*_ENVELOPE_COLS, wrap.alias("_wrap"), F.explode(items).alias("_raw"))


def symbol_from_context(*payload_symbols: Column) -> Column:
    """Native symbol: the item's own field, else the envelope's, else the ws topic or REST path."""
    topic = F.col("_wrap.topic")
    topic_symbol = F.when(
        topic.endswith(":all"), F.col("_wrap.subject")
    ).otherwise(F.nullif(F.regexp_extract(topic, r":([^,:]+)$", 1), F.lit("")))  # fmt: skip
    query_symbol = F.nullif(F.regexp_extract(F.col("stream"), r"[?&]symbol=([^&]+)", 1), F.lit(""))
    path_symbol = F.nullif(F.regexp_extract(F.col("stream"), r"/products/([^/?]+)", 1), F.lit(""))
    return F.coalesce(*payload_symbols, F.col("native_symbol"), topic_symbol, query_symbol, path_symbol)


def unexpected(*allowed: str) -> tuple[Column, str]:
    """Check: the item declares a message type (``_event``) that does not belong on the channel."""
    return (F.col("_event").isNotNull() & ~F.col("_event").isin(*allowed), "unexpected_message_type")


def nullsafe(c: Column) -> Column:
    """A condition that is false (not ``NULL``) when its inputs are missing."""
    return F.coalesce(c, F.lit(False))


def _not_json_object() -> Column:
    return F.json_object_keys("_raw").isNull()


#: The checks' reasons that judge a value rather than the frame's shape. The tables' suites make
#: the same judgments (``price_positive``, ``size_positive``, ``bid_at_most_ask``, ...): with
#: validation on, such rows are judged by the suite and quarantined with its expectation names;
#: with ``quality: false`` these checks still keep them out of silver.
VALUE_REASONS = frozenset({"non_positive_price", "non_positive_size", "crossed_book"})


def trade_checks(*extra: tuple[Column, str]) -> Column:
    """``_error`` of a trade row: ``extra`` checks come right after the unparseable-payload one."""
    return first_error(
        (_not_json_object(), "unparseable_payload"),
        *extra,
        (F.col("native_symbol").isNull(), "missing_symbol"),
        (F.col("trade_id").isNull(), "missing_trade_id"),
        (F.col("price").isNull(), "bad_price"),
        (F.col("size").isNull(), "bad_size"),
        (F.col("event_ts").isNull(), "bad_event_ts"),
        (F.col("price") <= 0, "non_positive_price"),
        (F.col("size") <= 0, "non_positive_size"),
    )


def ticker_checks(*extra: tuple[Column, str]) -> Column:
    """``_error`` of a ticker row."""
    return first_error(
        (_not_json_object(), "unparseable_payload"),
        *extra,
        (F.col("native_symbol").isNull(), "missing_symbol"),
        (F.col("event_ts").isNull(), "bad_event_ts"),
        (F.col("last").isNull(), "bad_price"),
        (F.col("last") <= 0, "non_positive_price"),
    )


def l1_checks() -> Column:
    """``_error`` of an L1 quote."""
    return first_error(
        (_not_json_object(), "unparseable_payload"),
        (F.col("native_symbol").isNull(), "missing_symbol"),
        (F.col("event_ts").isNull(), "bad_event_ts"),
        (F.col("bid_price").isNull() & F.col("ask_price").isNull(), "empty_book"),
        (F.col("bid_price") <= 0, "non_positive_price"),
        (F.col("ask_price") <= 0, "non_positive_price"),
        (F.col("bid_price") > F.col("ask_price"), "crossed_book"),
    )


_PRICE_COLS = (
    "price", "size", "last", "open_24h", "high_24h", "low_24h", "base_volume_24h", "quote_volume_24h",
    "best_bid", "best_ask", "bid_price", "bid_size", "ask_price", "ask_size",
)  # fmt: skip


def _null_of(column: str) -> Column:
    if column in _PRICE_COLS:
        return F.lit(None).cast(PRICE)
    if column.endswith("_ts"):
        return F.lit(None).cast(TimestampType())
    if column == "sequence":
        return F.lit(None).cast(LongType())
    return F.lit(None).cast(StringType())


def unsupported(items: DataFrame, columns: tuple[str, ...]) -> DataFrame:
    """Items of an exchange no parser knows: ``columns`` (``NULL`` but the envelope's), ``_raw`` and
    ``_error`` ``unsupported_exchange``."""
    keep = ("exchange", "source", "native_symbol")
    return items.select(
        *[(F.col(c) if c in keep else _null_of(c)).alias(c) for c in columns],
        "_raw",
        F.lit("unsupported_exchange").alias("_error"),
    )


def event_minute(df: DataFrame) -> DataFrame:
    """Add ``_minute``: the event time truncated to the minute (the USDT rate's grain)."""
    return df.withColumn("_minute", minute_of("event_ts"))
