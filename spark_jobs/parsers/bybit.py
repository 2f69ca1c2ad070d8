"""Bybit spot (v5) payloads -> trades, tickers, L1 quotes and markets (pure transforms).

What the connector (:mod:`extractors.exchanges.bybit`) lands, by channel:

* ``trades``: ``publicTrade.<symbol>`` frames ``{"topic":..,"type":"snapshot","ts":..,"data":[..]}``
  (one item per trade) and REST ``/v5/market/recent-trade`` pages
  ``{"retCode":0,"result":{"category":"spot","list":[..]}}`` (one row per ``list`` element; a page
  with ``retCode`` other than 0 gives one row to quarantine);
* ``ticker``: ``tickers.<symbol>`` frames (``data`` one object; no best bid/ask on spot, and the
  frame's ``ts`` is the event time, its ``cs`` the sequence);
* ``l1``: ``orderbook.1.<symbol>`` frames (``data`` ``{s, b:[[price, size]], a:[[price, size]], u,
  seq}``; the event time is the frame's ``cts``, the matching engine's, else its ``ts``);
* ``markets``: REST ``/v5/market/instruments-info?category=spot`` (``result.list``: ``symbol``,
  ``baseCoin``, ``quoteCoin``, ``status``).

Trade ids: ``i`` on the socket and ``execId`` in REST rows (the same string for one trade). ``S`` /
``side`` (``Buy``/``Sell``) is the taker's. The ticker's 24 h open is ``prevPrice24h``, its base and
quote volumes ``volume24h`` and ``turnover24h``.
"""

from __future__ import annotations

from pyspark.sql import DataFrame
from pyspark.sql import functions as F
from pyspark.sql.types import ArrayType, LongType, StringType

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

#: A REST ``recent-trade`` row.
REST_TRADE_SCHEMA = struct("execId", "symbol", "price", "size", "side", "time")
#: A ``publicTrade`` item, or a REST ``recent-trade`` page (``retCode``, ``result.list``). The
#: item's ``s`` (symbol) is left out: Spark resolves fields case-insensitively, so ``s`` and ``S``
#: would clash; the envelope's native symbol (the topic's) is the same.
TRADE_SCHEMA = struct(
    "T", "S", "v", "p", "i", "retCode", "result",
    types={"result": struct("list", types={"list": ArrayType(REST_TRADE_SCHEMA)})},
)  # fmt: skip
#: A ``tickers`` data object.
TICKER_SCHEMA = struct(
    "symbol", "lastPrice", "highPrice24h", "lowPrice24h", "prevPrice24h", "volume24h", "turnover24h"
)
_LEVELS = ArrayType(ArrayType(StringType()))
#: An ``orderbook.1`` data object.
L1_SCHEMA = struct("s", "b", "a", "u", "seq", types={"b": _LEVELS, "a": _LEVELS})
#: REST ``instruments-info``: ``result.list``.
MARKET_SCHEMA = struct(
    "retCode",
    "result",
    types={
        "result": struct(
            "list", types={"list": ArrayType(struct("symbol", "baseCoin", "quoteCoin", "status"))}
        )
    },
)


def _ws_trades(items: DataFrame) -> DataFrame:
    j = F.from_json("_raw", TRADE_SCHEMA)
    return items.where(j["retCode"].isNull()).select(
        "exchange",
        symbol_from_context().alias("native_symbol"),
        j["i"].alias("trade_id"),
        to_decimal(j["p"]).alias("price"),
        to_decimal(j["v"]).alias("size"),
        F.lower(j["S"]).alias("side"),
        ts_from_ms(j["T"]).alias("event_ts"),
        recv_ts().alias("recv_ts"),
        "source",
        "_raw",
        F.lit(None).cast(StringType()).alias("_event"),
    )


def _rest_trades(items: DataFrame) -> DataFrame:
    """One row per REST row, each keeping the page as ``_raw``; an error page gives one row."""
    j = F.from_json("_raw", TRADE_SCHEMA)
    failed = j["retCode"] != "0"
    one_empty = F.array(F.lit(None).cast(REST_TRADE_SCHEMA))
    exploded = items.where(j["retCode"].isNotNull()).select(
        "*",
        j["retCode"].alias("_event"),
        F.explode(F.when(failed, one_empty).otherwise(F.coalesce(j["result"]["list"], F.array()))).alias(
            "_r"
        ),
    )
    return exploded.select(
        "exchange",
        symbol_from_context(F.col("_r.symbol")).alias("native_symbol"),
        F.col("_r.execId").alias("trade_id"),
        to_decimal(F.col("_r.price")).alias("price"),
        to_decimal(F.col("_r.size")).alias("size"),
        F.lower(F.col("_r.side")).alias("side"),
        ts_from_ms(F.col("_r.time")).alias("event_ts"),
        recv_ts().alias("recv_ts"),
        "source",
        "_raw",  # the page as received
        "_event",
    )


def trades(items: DataFrame) -> DataFrame:
    """``{"T":1767225600455,"s":"BTCUSDT","S":"Buy","v":"0.0015","p":"94210.02",
    "i":"2290000000061666327","BT":false}`` and REST rows ``{"execId":"2290000000061666327",
    "symbol":"BTCUSDT","price":"94210.02","size":"0.0015","side":"Buy","time":"1767225600455"}``."""
    return (
        _ws_trades(items).unionByName(_rest_trades(items)).withColumn("_error", trade_checks(unexpected("0")))
    )


def tickers(items: DataFrame) -> DataFrame:
    """``{"symbol":"BTCUSDT","lastPrice":"94210.02","highPrice24h":"94800","lowPrice24h":"91500",
    "prevPrice24h":"92000","volume24h":"1834.2","turnover24h":"171592311.5"}`` (frame ``ts``, ``cs``)."""
    j = F.from_json("_raw", TICKER_SCHEMA)
    none = F.lit(None).cast(PRICE)
    return items.select(
        "exchange",
        symbol_from_context(j["symbol"]).alias("native_symbol"),
        to_decimal(j["lastPrice"]).alias("last"),
        to_decimal(j["prevPrice24h"]).alias("open_24h"),
        to_decimal(j["highPrice24h"]).alias("high_24h"),
        to_decimal(j["lowPrice24h"]).alias("low_24h"),
        to_decimal(j["volume24h"]).alias("base_volume_24h"),
        to_decimal(j["turnover24h"]).alias("quote_volume_24h"),
        none.alias("best_bid"),
        none.alias("best_ask"),
        F.col("_wrap.cs").cast(LongType()).alias("sequence"),
        ts_from_ms(F.col("_wrap.ts")).alias("event_ts"),
        recv_ts().alias("recv_ts"),
        "_raw",
    ).withColumn("_error", ticker_checks())


def l1(items: DataFrame) -> DataFrame:
    """``{"s":"BTCUSDT","b":[["94210.01","0.812"]],"a":[["94210.02","0.044"]],"u":55102931,
    "seq":80811223344}``: the best level of each side (an empty side is ``NULL``)."""
    j = F.from_json("_raw", L1_SCHEMA)
    bid, ask = F.element_at(j["b"], 1), F.element_at(j["a"], 1)
    return items.select(
        "exchange",
        symbol_from_context(j["s"]).alias("native_symbol"),
        to_decimal(F.element_at(bid, 1)).alias("bid_price"),
        to_decimal(F.element_at(bid, 2)).alias("bid_size"),
        to_decimal(F.element_at(ask, 1)).alias("ask_price"),
        to_decimal(F.element_at(ask, 2)).alias("ask_size"),
        j["seq"].cast(LongType()).alias("sequence"),
        ts_from_ms(F.coalesce(F.col("_wrap.cts"), F.col("_wrap.ts"))).alias("event_ts"),
        recv_ts().alias("recv_ts"),
        F.col("channel").alias("source_channel"),
        "_raw",
    ).withColumn("_error", l1_checks())


#: Spot tickers carry no best bid/ask: ``orderbook.1`` is the L1 source.
ticker_l1 = None


def markets(items: DataFrame) -> DataFrame:
    """``{"symbol":"BTCUSDT","baseCoin":"BTC","quoteCoin":"USDT","status":"Trading"}`` rows of
    ``result.list``; ``status`` as sent (``Trading``, ``PreLaunch``, ...)."""
    j = F.from_json("_raw", MARKET_SCHEMA)
    rows = items.select(
        "exchange", "recv_ts_ns", F.explode(F.coalesce(j["result"]["list"], F.array())).alias("m")
    )
    return rows.select(
        "exchange",
        F.col("m.symbol").alias("native_symbol"),
        F.col("m.baseCoin").alias("base_asset"),
        F.col("m.quoteCoin").alias("quote_asset"),
        F.col("m.status").alias("status"),
        recv_ts().alias("updated_ts"),
    )
