"""Coinbase Exchange payloads -> trades, tickers, L1 quotes and markets (pure transforms).

What the connector (:mod:`extractors.exchanges.coinbase`) lands, by channel:

* ``trades``: ws-feed ``matches`` frames (``type`` ``match``, ``last_match`` first) and REST
  ``/products/{id}/trades`` pages (the product in the request path);
* ``ticker``: ws-feed ``ticker`` frames (the first after subscribing may lack ``time`` and sizes);
* ``l1``: REST ``/products/{id}/book?level=1`` polls of quiet products (Coinbase has no public
  websocket L1: a ticker's best bid/ask is the L1 quote otherwise);
* ``markets``: REST ``/products`` (an array).

Trade ids: ``trade_id``. ``side`` on matches and REST trades is the maker's, so the taker side is
its inverse.
"""

from __future__ import annotations

from pyspark.sql import DataFrame
from pyspark.sql import functions as F
from pyspark.sql.types import ArrayType, BooleanType, LongType, StringType

from lake.tables import PRICE
from spark_jobs.columns import recv_ts, to_decimal, ts_from_iso
from spark_jobs.parsers.common import (
    l1_checks,
    nullsafe,
    struct,
    symbol_from_context,
    ticker_checks,
    trade_checks,
    unexpected,
)

#: ws-feed matches / last_match and REST /products/{id}/trades rows (4A.2, 4A.3).
TRADE_SCHEMA = struct("type", "trade_id", "product_id", "side", "size", "price", "time")
#: ws-feed ticker (4A.2).
TICKER_SCHEMA = struct(
    "type",
    "sequence",
    "product_id",
    "price",
    "open_24h",
    "high_24h",
    "low_24h",
    "volume_24h",
    "best_bid",
    "best_bid_size",
    "best_ask",
    "best_ask_size",
    "time",
)
_LEVELS = ArrayType(ArrayType(StringType()))
#: REST /products/{id}/book?level=1 (rows ``[price, size, num_orders]``).
L1_SCHEMA = struct("bids", "asks", "sequence", "time", types={"bids": _LEVELS, "asks": _LEVELS})
#: REST /products rows.
MARKET_SCHEMA = struct(
    "id",
    "base_currency",
    "quote_currency",
    "status",
    "trading_disabled",
    types={"trading_disabled": BooleanType()},
)


def trades(items: DataFrame) -> DataFrame:
    """``{"type":"match","trade_id":801234567,"maker_order_id":"m","taker_order_id":"t","side":"buy",
    "size":"0.00120000","price":"94210.01","product_id":"BTC-USD","sequence":112233445566,
    "time":"2026-01-01T00:00:00.412345Z"}`` (REST rows: no ``type``, no ``product_id``)."""
    j = F.from_json("_raw", TRADE_SCHEMA)
    maker = F.lower(j["side"])
    return items.select(
        "exchange",
        symbol_from_context(j["product_id"]).alias("native_symbol"),
        j["trade_id"].alias("trade_id"),
        to_decimal(j["price"]).alias("price"),
        to_decimal(j["size"]).alias("size"),
        F.when(maker == "buy", F.lit("sell")).when(maker == "sell", F.lit("buy")).alias("side"),
        ts_from_iso(j["time"]).alias("event_ts"),
        recv_ts().alias("recv_ts"),
        "source",
        "_raw",
        j["type"].alias("_event"),
    ).withColumn("_error", trade_checks(unexpected("match", "last_match")))


def tickers(items: DataFrame) -> DataFrame:
    """``{"type":"ticker","sequence":112233445566,"product_id":"BTC-USD","price":"94210.01",
    "open_24h":"92001.00","volume_24h":"8123.5521","low_24h":"91500.00","high_24h":"94800.00",
    "best_bid":"94210.00","best_bid_size":"0.41","best_ask":"94210.01","best_ask_size":"0.025",
    "time":"2026-01-01T00:00:00.412345Z"}``: no quote volume."""
    j = F.from_json("_raw", TICKER_SCHEMA)
    return items.select(
        "exchange",
        symbol_from_context(j["product_id"]).alias("native_symbol"),
        to_decimal(j["price"]).alias("last"),
        to_decimal(j["open_24h"]).alias("open_24h"),
        to_decimal(j["high_24h"]).alias("high_24h"),
        to_decimal(j["low_24h"]).alias("low_24h"),
        to_decimal(j["volume_24h"]).alias("base_volume_24h"),
        F.lit(None).cast(PRICE).alias("quote_volume_24h"),
        to_decimal(j["best_bid"]).alias("best_bid"),
        to_decimal(j["best_ask"]).alias("best_ask"),
        j["sequence"].cast(LongType()).alias("sequence"),
        # The first ticker after subscribing may lack `time`: the receive time stands in.
        F.coalesce(ts_from_iso(j["time"]), recv_ts()).alias("event_ts"),
        recv_ts().alias("recv_ts"),
        "_raw",
        j["type"].alias("_event"),
    ).withColumn("_error", ticker_checks(unexpected("ticker")))


def l1(items: DataFrame) -> DataFrame:
    """``{"bids":[["94210.00","0.41000000",3]],"asks":[["94210.01","0.025",1]],
    "sequence":112233445601,"time":"2026-01-01T00:00:01.000123Z"}``."""
    j = F.from_json("_raw", L1_SCHEMA)
    bid = F.element_at(j["bids"], 1)
    ask = F.element_at(j["asks"], 1)
    return items.select(
        "exchange",
        symbol_from_context().alias("native_symbol"),
        to_decimal(F.element_at(bid, 1)).alias("bid_price"),
        to_decimal(F.element_at(bid, 2)).alias("bid_size"),
        to_decimal(F.element_at(ask, 1)).alias("ask_price"),
        to_decimal(F.element_at(ask, 2)).alias("ask_size"),
        j["sequence"].cast("long").alias("sequence"),
        F.coalesce(ts_from_iso(j["time"]), recv_ts()).alias("event_ts"),
        recv_ts().alias("recv_ts"),
        F.col("channel").alias("source_channel"),
        "_raw",
    ).withColumn("_error", l1_checks())


def ticker_l1(items: DataFrame) -> DataFrame:
    """A ticker's ``best_bid``/``best_bid_size``/``best_ask``/``best_ask_size`` as an L1 quote.

    Sizes are absent from older feeds (``NULL`` sizes); the sparse first ticker after subscribing
    has no ``time`` (the receive time stands in, as in ``silver.tickers``). Items that are not
    tickers, or have no best bid or ask, give no row.
    """
    j = F.from_json("_raw", TICKER_SCHEMA)
    is_ticker = nullsafe(j["type"] == "ticker")
    return (
        items.where(is_ticker & (j["best_bid"].isNotNull() | j["best_ask"].isNotNull()))
        .select(
            "exchange",
            symbol_from_context(j["product_id"]).alias("native_symbol"),
            to_decimal(j["best_bid"]).alias("bid_price"),
            to_decimal(j["best_bid_size"]).alias("bid_size"),
            to_decimal(j["best_ask"]).alias("ask_price"),
            to_decimal(j["best_ask_size"]).alias("ask_size"),
            j["sequence"].cast(LongType()).alias("sequence"),
            F.coalesce(ts_from_iso(j["time"]), recv_ts()).alias("event_ts"),
            recv_ts().alias("recv_ts"),
            F.col("channel").alias("source_channel"),
            "_raw",
        )
        .withColumn("_error", l1_checks())
    )


def markets(items: DataFrame) -> DataFrame:
    """``[{"id":"BTC-USD","base_currency":"BTC","quote_currency":"USD","status":"online",
    "trading_disabled":false}]``: ``trading_disabled`` makes the status ``disabled``."""
    j = F.from_json("_raw", MARKET_SCHEMA)
    return items.select(
        "exchange",
        j["id"].alias("native_symbol"),
        j["base_currency"].alias("base_asset"),
        j["quote_currency"].alias("quote_asset"),
        F.when(nullsafe(j["trading_disabled"]), F.lit("disabled")).otherwise(j["status"]).alias("status"),
        recv_ts().alias("updated_ts"),
    )
