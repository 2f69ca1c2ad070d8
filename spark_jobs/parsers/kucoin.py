"""KuCoin spot payloads -> trades, tickers, L1 quotes and markets (pure transforms).

What the connector (:mod:`extractors.exchanges.kucoin`) lands, by channel:

* ``trades``: ``/market/match:<syms>`` frames ``{"type":"message","topic":..,"data":{..}}`` and
  REST ``/api/v1/market/histories`` envelopes ``{"code":"200000","data":[..]}`` (the symbol in
  the request's query string);
* ``ticker``: ``/market/ticker:all`` (the symbol is the frame's ``subject``);
* ``l1``: ``/spotMarket/level1:<sym>`` (the symbol is the topic's);
* ``markets``: REST ``/api/v2/symbols`` (``data[]``).

Trade ids: ``sequence``, the id present in both the ws match and REST ``histories`` rows (the ws
``tradeId`` equals it in current feeds; it is the fallback when ``sequence`` is absent). ``side``
is the taker's. Tickers carry the best bid/ask and sizes, so each is also an L1 quote.
"""

from __future__ import annotations

from pyspark.sql import DataFrame
from pyspark.sql import functions as F
from pyspark.sql.types import ArrayType, BooleanType, LongType, StringType

from lake.tables import PRICE
from spark_jobs.columns import recv_ts, to_decimal, ts_from_ms, ts_from_ns
from spark_jobs.parsers.common import (
    l1_checks,
    struct,
    symbol_from_context,
    ticker_checks,
    trade_checks,
    unexpected,
)

#: /market/match data and REST /api/v1/market/histories rows (3.3, 3.5).
TRADE_SCHEMA = struct("symbol", "sequence", "tradeId", "side", "price", "size", "time", "type")
#: /market/ticker data (3.3).
TICKER_SCHEMA = struct(
    "sequence", "price", "size", "bestBid", "bestBidSize", "bestAsk", "bestAskSize", "time"
)
#: /spotMarket/level1 data: ``[price, size]`` pairs.
L1_SCHEMA = struct(
    "asks", "bids", "timestamp", types={"asks": ArrayType(StringType()), "bids": ArrayType(StringType())}
)
#: REST /api/v2/symbols rows.
MARKET_SCHEMA = struct(
    "symbol", "baseCurrency", "quoteCurrency", "enableTrading", types={"enableTrading": BooleanType()}
)


def trades(items: DataFrame) -> DataFrame:
    """``{"symbol":"BTC-USDT","sequence":"12840019911847401","tradeId":"12840019911847401",
    "side":"sell","price":"94209.9","size":"0.0021","type":"match","time":"1767225600801000000"}``
    (``time`` in ns; REST rows ``{"sequence","price","size","side","time"}``, ``time`` a number)."""
    j = F.from_json("_raw", TRADE_SCHEMA)
    return items.select(
        "exchange",
        symbol_from_context(j["symbol"]).alias("native_symbol"),
        F.coalesce(j["sequence"], j["tradeId"]).alias("trade_id"),
        to_decimal(j["price"]).alias("price"),
        to_decimal(j["size"]).alias("size"),
        F.lower(j["side"]).alias("side"),
        ts_from_ns(j["time"]).alias("event_ts"),
        recv_ts().alias("recv_ts"),
        "source",
        "_raw",
        F.coalesce(j["type"], F.col("_wrap.code")).alias("_event"),
    ).withColumn("_error", trade_checks(unexpected("match", "200000")))


def tickers(items: DataFrame) -> DataFrame:
    """``{"bestAsk":"94210","bestAskSize":"0.51","bestBid":"94209.9","bestBidSize":"1.07",
    "price":"94209.9","size":"0.0131","sequence":"21874411923","time":1767225600789}``: no 24 h
    fields."""
    j = F.from_json("_raw", TICKER_SCHEMA)
    none = F.lit(None).cast(PRICE)
    return items.select(
        "exchange",
        symbol_from_context().alias("native_symbol"),
        to_decimal(j["price"]).alias("last"),
        none.alias("open_24h"),
        none.alias("high_24h"),
        none.alias("low_24h"),
        none.alias("base_volume_24h"),
        none.alias("quote_volume_24h"),
        to_decimal(j["bestBid"]).alias("best_bid"),
        to_decimal(j["bestAsk"]).alias("best_ask"),
        j["sequence"].cast(LongType()).alias("sequence"),
        ts_from_ms(j["time"]).alias("event_ts"),
        recv_ts().alias("recv_ts"),
        "_raw",
    ).withColumn("_error", ticker_checks())


def l1(items: DataFrame) -> DataFrame:
    """``{"asks":["94210","0.51"],"bids":["94209.9","1.07"],"timestamp":1767225600803}`` (ms): no
    sequence."""
    j = F.from_json("_raw", L1_SCHEMA)
    return items.select(
        "exchange",
        symbol_from_context().alias("native_symbol"),
        to_decimal(F.element_at(j["bids"], 1)).alias("bid_price"),
        to_decimal(F.element_at(j["bids"], 2)).alias("bid_size"),
        to_decimal(F.element_at(j["asks"], 1)).alias("ask_price"),
        to_decimal(F.element_at(j["asks"], 2)).alias("ask_size"),
        F.lit(None).cast(LongType()).alias("sequence"),
        ts_from_ms(j["timestamp"]).alias("event_ts"),
        recv_ts().alias("recv_ts"),
        F.col("channel").alias("source_channel"),
        "_raw",
    ).withColumn("_error", l1_checks())


def ticker_l1(items: DataFrame) -> DataFrame:
    """A ticker's ``bestBid``/``bestBidSize``/``bestAsk``/``bestAskSize`` as an L1 quote.

    The event time is the ticker's ``time`` (ms; the exchange documents it as the time of the last
    match) and ``sequence`` the ticker's, as in ``silver.tickers``. Tickers with no best bid or ask
    give no row.
    """
    j = F.from_json("_raw", TICKER_SCHEMA)
    return (
        items.where(j["bestBid"].isNotNull() | j["bestAsk"].isNotNull())
        .select(
            "exchange",
            symbol_from_context().alias("native_symbol"),
            to_decimal(j["bestBid"]).alias("bid_price"),
            to_decimal(j["bestBidSize"]).alias("bid_size"),
            to_decimal(j["bestAsk"]).alias("ask_price"),
            to_decimal(j["bestAskSize"]).alias("ask_size"),
            j["sequence"].cast(LongType()).alias("sequence"),
            ts_from_ms(j["time"]).alias("event_ts"),
            recv_ts().alias("recv_ts"),
            F.col("channel").alias("source_channel"),
            "_raw",
        )
        .withColumn("_error", l1_checks())
    )


def markets(items: DataFrame) -> DataFrame:
    """``{"symbol":"BTC-USDT","baseCurrency":"BTC","quoteCurrency":"USDT","enableTrading":true}``:
    ``status`` is ``trading`` or ``disabled`` from ``enableTrading``."""
    j = F.from_json("_raw", MARKET_SCHEMA)
    return items.select(
        "exchange",
        j["symbol"].alias("native_symbol"),
        j["baseCurrency"].alias("base_asset"),
        j["quoteCurrency"].alias("quote_asset"),
        F.when(j["enableTrading"], F.lit("trading")).otherwise(F.lit("disabled")).alias("status"),
        recv_ts().alias("updated_ts"),
    )
