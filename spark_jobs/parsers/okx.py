"""OKX spot (v5) payloads -> trades, tickers, L1 quotes and markets (pure transforms).

What the connector (:mod:`extractors.exchanges.okx`) lands, by channel. Every frame and REST answer
wraps its items in ``data`` (``{"arg":{…},"data":[…]}``, ``{"code":"0","msg":"","data":[…]}``), so
each item is one element of it (:func:`~spark_jobs.parsers.common.payload_items`); numbers are
strings, ``ts`` milliseconds:

* ``trades``: websocket ``trades`` items and REST ``history-trades``/``trades`` rows, one shape
  ``{"instId","tradeId","px","sz","side","ts"}`` (``side`` the taker's);
* ``ticker``: ``tickers`` items (``last``, ``open24h``, ``high24h``, ``low24h``, ``vol24h`` base and
  ``volCcy24h`` quote volume for spot, ``bidPx``/``bidSz``/``askPx``/``askSz``), also L1 quotes;
* ``l1``: ``bbo-tbt`` items ``{"asks":[[px,sz,"0",orders]],"bids":[…],"ts","seqId"}`` (no symbol:
  the envelope's);
* ``markets``: REST ``/api/v5/public/instruments?instType=SPOT`` rows (``instId``, ``baseCcy``,
  ``quoteCcy``, ``state``).

A REST answer whose ``code`` is not ``"0"`` has an empty ``data``: it gives no row.
"""

from __future__ import annotations

from pyspark.sql import DataFrame
from pyspark.sql import functions as F
from pyspark.sql.types import ArrayType, LongType, StringType

from spark_jobs.columns import recv_ts, to_decimal, ts_from_ms
from spark_jobs.parsers.common import (
    l1_checks,
    nullsafe,
    struct,
    symbol_from_context,
    ticker_checks,
    trade_checks,
)

TRADE_SCHEMA = struct("instId", "tradeId", "px", "sz", "side", "ts")
TICKER_SCHEMA = struct(
    "instId", "last", "open24h", "high24h", "low24h", "vol24h", "volCcy24h", "bidPx", "bidSz", "askPx",
    "askSz", "ts",
)  # fmt: skip
_LEVELS = ArrayType(ArrayType(StringType()))
BBO_SCHEMA = struct(
    "asks", "bids", "ts", "seqId", types={"asks": _LEVELS, "bids": _LEVELS, "seqId": LongType()}
)
MARKET_SCHEMA = struct("instId", "baseCcy", "quoteCcy", "state")


def trades(items: DataFrame) -> DataFrame:
    """``{"instId":"BTC-USDT","tradeId":"130639474","px":"42219.9","sz":"0.12060306","side":"buy",
    "ts":"1630048897897","count":"3"}`` (websocket) and the same fields in REST rows."""
    j = F.from_json("_raw", TRADE_SCHEMA)
    return items.select(
        "exchange",
        symbol_from_context(j["instId"]).alias("native_symbol"),
        j["tradeId"].alias("trade_id"),
        to_decimal(j["px"]).alias("price"),
        to_decimal(j["sz"]).alias("size"),
        F.lower(j["side"]).alias("side"),
        ts_from_ms(j["ts"]).alias("event_ts"),
        recv_ts().alias("recv_ts"),
        "source",
        "_raw",
    ).withColumn("_error", trade_checks())


def tickers(items: DataFrame) -> DataFrame:
    """``{"instType":"SPOT","instId":"BTC-USDT","last":"94210.1","lastSz":"0.0015","askPx":"94210.1",
    "askSz":"1.25","bidPx":"94210","bidSz":"0.5","open24h":"92000","high24h":"94800","low24h":"91500",
    "volCcy24h":"172011223.5","vol24h":"1834.2","ts":"1767225600123"}``."""
    j = F.from_json("_raw", TICKER_SCHEMA)
    return items.select(
        "exchange",
        symbol_from_context(j["instId"]).alias("native_symbol"),
        to_decimal(j["last"]).alias("last"),
        to_decimal(j["open24h"]).alias("open_24h"),
        to_decimal(j["high24h"]).alias("high_24h"),
        to_decimal(j["low24h"]).alias("low_24h"),
        to_decimal(j["vol24h"]).alias("base_volume_24h"),
        to_decimal(j["volCcy24h"]).alias("quote_volume_24h"),
        to_decimal(j["bidPx"]).alias("best_bid"),
        to_decimal(j["askPx"]).alias("best_ask"),
        F.lit(None).cast(LongType()).alias("sequence"),
        F.coalesce(ts_from_ms(j["ts"]), recv_ts()).alias("event_ts"),
        recv_ts().alias("recv_ts"),
        "_raw",
    ).withColumn("_error", ticker_checks())


def l1(items: DataFrame) -> DataFrame:
    """``{"asks":[["94210.1","1.25","0","4"]],"bids":[["94210","0.5","0","2"]],"ts":"1767225600124",
    "seqId":3461}``: price, size, (deprecated ``0``), orders of the best level; ``seqId`` orders."""
    j = F.from_json("_raw", BBO_SCHEMA)
    ask, bid = F.element_at(j["asks"], 1), F.element_at(j["bids"], 1)
    return items.select(
        "exchange",
        symbol_from_context().alias("native_symbol"),
        to_decimal(F.element_at(bid, 1)).alias("bid_price"),
        to_decimal(F.element_at(bid, 2)).alias("bid_size"),
        to_decimal(F.element_at(ask, 1)).alias("ask_price"),
        to_decimal(F.element_at(ask, 2)).alias("ask_size"),
        j["seqId"].alias("sequence"),
        F.coalesce(ts_from_ms(j["ts"]), recv_ts()).alias("event_ts"),
        recv_ts().alias("recv_ts"),
        F.col("channel").alias("source_channel"),
        "_raw",
    ).withColumn("_error", l1_checks())


def _ticker_quotes(items: DataFrame) -> DataFrame:
    j = F.from_json("_raw", TICKER_SCHEMA)
    return (
        items.where(nullsafe(j["bidPx"].isNotNull() | j["askPx"].isNotNull()))
        .select(
            "exchange",
            symbol_from_context(j["instId"]).alias("native_symbol"),
            to_decimal(j["bidPx"]).alias("bid_price"),
            to_decimal(j["bidSz"]).alias("bid_size"),
            to_decimal(j["askPx"]).alias("ask_price"),
            to_decimal(j["askSz"]).alias("ask_size"),
            F.lit(None).cast(LongType()).alias("sequence"),
            F.coalesce(ts_from_ms(j["ts"]), recv_ts()).alias("event_ts"),
            recv_ts().alias("recv_ts"),
            F.col("channel").alias("source_channel"),
            "_raw",
        )
        .withColumn("_error", l1_checks())
    )


#: A ticker's ``bidPx``/``bidSz``/``askPx``/``askSz`` as an L1 quote (none without either side).
ticker_l1 = _ticker_quotes


def markets(items: DataFrame) -> DataFrame:
    """``{"instType":"SPOT","instId":"BTC-USDT","baseCcy":"BTC","quoteCcy":"USDT","state":"live",…}``;
    ``state`` as sent (``live``, ``suspend``, ``preopen``, ``test``)."""
    j = F.from_json("_raw", MARKET_SCHEMA)
    return items.select(
        "exchange",
        j["instId"].alias("native_symbol"),
        j["baseCcy"].alias("base_asset"),
        j["quoteCcy"].alias("quote_asset"),
        j["state"].alias("status"),
        recv_ts().alias("updated_ts"),
    )
