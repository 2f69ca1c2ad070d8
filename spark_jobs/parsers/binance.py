"""Binance spot payloads -> trades, tickers, L1 quotes and markets (pure transforms).

What the connector (:mod:`extractors.exchanges.binance`) lands, by channel:

* ``trades``: combined-stream ``<sym>@trade`` events ``{"stream":..,"data":{"e":"trade",..}}``
  and REST ``historicalTrades`` / ``trades`` pages (arrays of ``{"id","price","qty","time",
  "isBuyerMaker"}``, the symbol in the request's query string);
* ``ticker``: ``!miniTicker@arr`` (an array of ``24hrMiniTicker`` events);
* ``l1``: ``<sym>@bookTicker`` (no event time);
* ``markets``: ``exchangeInfo``.

Trade ids: ``t`` (ws) = ``id`` (REST), one id space. Aggregate trades (``@aggTrade``, REST
``aggTrades``) live in their own id space as ``agg-<a>``: subscribe to one of the two streams per
market, or volume counts twice. Sides are the taker's: ``m``/``isBuyerMaker`` true means the taker
sold.
"""

from __future__ import annotations

from pyspark.sql import DataFrame
from pyspark.sql import functions as F
from pyspark.sql.types import ArrayType, BooleanType, LongType, StructField, StructType

from lake.tables import PRICE
from spark_jobs.columns import recv_ts, to_decimal, ts_from_ms
from spark_jobs.parsers.common import (
    l1_checks,
    struct,
    symbol_from_context,
    ticker_checks,
    trade_checks,
    unexpected,
)

#: Items are read as ``map<string,string>``: Binance's one-letter keys differ only by case
#: (``e``/``E``, ``t``/``T``, ``b``/``B``, ``a``/``A``) and Spark resolves struct fields without case.
#: The keys used: @trade / @aggTrade events and REST historicalTrades / trades rows (2.4, 2.5):
#: e E s t a p q T m, id price qty time isBuyerMaker; 24hrMiniTicker: e E s c o h l v q;
#: @bookTicker: u s b B a A.
ITEM_SCHEMA = "map<string,string>"

#: Discovery snapshot ``exchangeInfo`` (channel ``markets``).
MARKETS_SCHEMA = StructType(
    [
        StructField(
            "symbols",
            ArrayType(
                struct("symbol", "status", "baseAsset", "quoteAsset", "isSpotTradingAllowed", types={
                    "isSpotTradingAllowed": BooleanType()
                })
            ),
        )
    ]
)  # fmt: skip


def trades(items: DataFrame) -> DataFrame:
    """``{"e":"trade","E":1767225600456,"s":"BTCUSDT","t":5400012345,"p":"94210.02","q":"0.00150",
    "T":1767225600455,"m":false,"M":true}``; REST rows ``{"id":5400012347,"price":"94210.00",
    "qty":"0.25","time":1767225600900,"isBuyerMaker":true}``; ``{"e":"aggTrade","a":777,..}``."""
    j = F.from_json("_raw", ITEM_SCHEMA)
    is_agg = (j["e"] == "aggTrade") | (j["t"].isNull() & j["id"].isNull() & j["a"].isNotNull())
    maker_buy = F.lower(F.coalesce(j["m"], j["isBuyerMaker"])) == "true"
    return items.select(
        "exchange",
        symbol_from_context(j["s"]).alias("native_symbol"),
        F.when(is_agg, F.concat(F.lit("agg-"), j["a"]))
        .otherwise(F.coalesce(j["t"], j["id"]))
        .alias("trade_id"),
        to_decimal(F.coalesce(j["p"], j["price"])).alias("price"),
        to_decimal(F.coalesce(j["q"], j["qty"])).alias("size"),
        F.when(maker_buy, F.lit("sell")).when(~maker_buy, F.lit("buy")).alias("side"),
        ts_from_ms(F.coalesce(j["T"], j["time"])).alias("event_ts"),
        recv_ts().alias("recv_ts"),
        "source",
        "_raw",
        j["e"].alias("_event"),
    ).withColumn("_error", trade_checks(unexpected("trade", "aggTrade")))


def tickers(items: DataFrame) -> DataFrame:
    """``{"e":"24hrMiniTicker","E":1767225600123,"s":"ETHUSDT","c":"3120.55","o":"3050.00",
    "h":"3140.10","l":"3021.00","v":"184203.118","q":"572331882.44"}``: no book, no sequence."""
    j = F.from_json("_raw", ITEM_SCHEMA)
    none = F.lit(None).cast(PRICE)
    return items.select(
        "exchange",
        symbol_from_context(j["s"]).alias("native_symbol"),
        to_decimal(j["c"]).alias("last"),
        to_decimal(j["o"]).alias("open_24h"),
        to_decimal(j["h"]).alias("high_24h"),
        to_decimal(j["l"]).alias("low_24h"),
        to_decimal(j["v"]).alias("base_volume_24h"),
        to_decimal(j["q"]).alias("quote_volume_24h"),
        none.alias("best_bid"),
        none.alias("best_ask"),
        F.lit(None).cast(LongType()).alias("sequence"),
        ts_from_ms(j["E"]).alias("event_ts"),
        recv_ts().alias("recv_ts"),
        "_raw",
        j["e"].alias("_event"),
    ).withColumn("_error", ticker_checks(unexpected("24hrMiniTicker")))


def l1(items: DataFrame) -> DataFrame:
    """``{"u":5120938471,"s":"BTCUSDT","b":"94210.01","B":"1.20400","a":"94210.02","A":"0.03110"}``.

    bookTicker carries no event time: the receive time is the event time (exchanges.md 2.4).
    """
    j = F.from_json("_raw", ITEM_SCHEMA)
    return items.select(
        "exchange",
        symbol_from_context(j["s"]).alias("native_symbol"),
        to_decimal(j["b"]).alias("bid_price"),
        to_decimal(j["B"]).alias("bid_size"),
        to_decimal(j["a"]).alias("ask_price"),
        to_decimal(j["A"]).alias("ask_size"),
        j["u"].cast("long").alias("sequence"),
        recv_ts().alias("event_ts"),
        recv_ts().alias("recv_ts"),
        F.col("channel").alias("source_channel"),
        "_raw",
    ).withColumn("_error", l1_checks())


#: Binance tickers carry no book: no ticker gives an L1 quote.
ticker_l1 = None


def markets(items: DataFrame) -> DataFrame:
    """``{"symbols":[{"symbol":"BTCUSDT","status":"TRADING","baseAsset":"BTC","quoteAsset":"USDT",
    "isSpotTradingAllowed":true}]}``: spot markets only; ``status`` as Binance words it."""
    return (
        items.select(
            "exchange",
            "recv_ts_ns",
            F.explode(F.from_json("_raw", MARKETS_SCHEMA)["symbols"]).alias("m"),
        )
        .where(F.coalesce(F.col("m.isSpotTradingAllowed"), F.lit(True)))
        .select(
            "exchange",
            F.col("m.symbol").alias("native_symbol"),
            F.col("m.baseAsset").alias("base_asset"),
            F.col("m.quoteAsset").alias("quote_asset"),
            F.col("m.status").alias("status"),
            recv_ts().alias("updated_ts"),
        )
    )
