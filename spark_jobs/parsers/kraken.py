"""Kraken spot payloads -> trades, tickers, L1 quotes and markets (pure transforms).

What the connector (:mod:`extractors.exchanges.kraken`) lands, by channel:

* ``trades``: websocket v2 ``trade`` frames ``{"channel":"trade","type":..,"data":[..]}`` (one item
  per trade, prices and quantities JSON numbers) and REST ``/0/public/Trades`` pages
  ``{"error":[],"result":{"<PAIR>":[[price, volume, time, side, type, misc, trade_id]],"last":..}}``
  (strings for price and volume, ``b``/``s`` sides, time in seconds; the v2 symbol is the
  envelope's ``native_symbol``);
* ``ticker``: websocket v2 ``ticker`` frames (one item; best bid/ask and sizes, so each ticker is
  also an L1 quote; ``timestamp`` may be absent: the receive time stands in);
* ``markets``: REST ``/0/public/AssetPairs`` (``result`` keyed by pair; the v2 symbol is the
  ``wsname`` with ``XBT``/``XDG`` renamed, e.g. ``XBT/USD`` -> ``BTC/USD``; dark pools without a
  ``wsname`` are left out).

Trade ids: ``trade_id`` (the same integer on the socket and in REST rows). ``side`` is the taker's.
The ticker's 24 h open is ``last - change`` (Kraken sends the change, not the open); it gives no
quote volume and no sequence.
"""

from __future__ import annotations

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F
from pyspark.sql.types import ArrayType, DecimalType, LongType, MapType, StringType

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
from spark_jobs.symbols import canonical_asset

_ROWS = MapType(StringType(), StringType())
#: A websocket ``trade`` item, or a REST ``Trades`` page (``result``: pair -> rows, and ``last``).
TRADE_SCHEMA = struct(
    "symbol", "side", "price", "qty", "ord_type", "trade_id", "timestamp", "result", "error",
    types={"result": _ROWS, "error": ArrayType(StringType())},
)  # fmt: skip
_REST_ROWS = ArrayType(ArrayType(StringType()))
#: A websocket ``ticker`` item.
TICKER_SCHEMA = struct(
    "symbol", "bid", "bid_qty", "ask", "ask_qty", "last", "volume", "vwap", "low", "high", "change",
    "change_pct", "timestamp",
)  # fmt: skip
#: REST ``AssetPairs``: ``result`` keyed by pair name.
MARKET_SCHEMA = struct(
    "result",
    types={"result": MapType(StringType(), struct("altname", "wsname", "base", "quote", "status"))},
)


def _ts_from_seconds(col: Column) -> Column:
    """Seconds with a fraction (``1767225600.455123``) as a UTC timestamp, rounded to the µs: the
    JSON number reaches Spark through a double (``1.767225600455123E9``), a few ulps off."""
    micros = F.round(col.cast(StringType()).cast(DecimalType(38, 9)) * 1_000_000).cast(LongType())
    return F.timestamp_micros(micros)


def _ws_trades(items: DataFrame) -> DataFrame:
    j = F.from_json("_raw", TRADE_SCHEMA)
    return items.where(j["result"].isNull() & j["error"].isNull()).select(
        "exchange",
        symbol_from_context(j["symbol"]).alias("native_symbol"),
        j["trade_id"].alias("trade_id"),
        to_decimal(j["price"]).alias("price"),
        to_decimal(j["qty"]).alias("size"),
        F.lower(j["side"]).alias("side"),
        ts_from_iso(j["timestamp"]).alias("event_ts"),
        recv_ts().alias("recv_ts"),
        "source",
        "_raw",
        F.lit(None).cast(StringType()).alias("_event"),
    )


def _rest_trades(items: DataFrame) -> DataFrame:
    """One row per REST row, each keeping the page as ``_raw``; an error page (``error`` not empty)
    gives one row to quarantine."""
    j = F.from_json("_raw", TRADE_SCHEMA)
    pages = F.map_values(F.map_filter(j["result"], lambda k, _v: k != "last"))
    rows = F.flatten(F.transform(pages, lambda page: F.from_json(page, _REST_ROWS)))
    failed = F.size(F.coalesce(j["error"], F.array())) > 0
    one_empty = F.array(F.lit(None).cast(ArrayType(StringType())))
    exploded = items.where(j["result"].isNotNull() | failed).select(
        "*",
        F.when(failed, F.lit("error")).alias("_event"),
        F.explode(F.when(failed, one_empty).otherwise(rows)).alias("_r"),
    )
    r = F.col("_r")
    side = F.element_at(r, 4)
    return exploded.select(
        "exchange",
        symbol_from_context().alias("native_symbol"),
        F.element_at(r, 7).alias("trade_id"),
        to_decimal(F.element_at(r, 1)).alias("price"),
        to_decimal(F.element_at(r, 2)).alias("size"),
        F.when(side == "b", F.lit("buy")).when(side == "s", F.lit("sell")).alias("side"),
        _ts_from_seconds(F.element_at(r, 3)).alias("event_ts"),
        recv_ts().alias("recv_ts"),
        "source",
        "_raw",  # the page as received
        "_event",
    )


def trades(items: DataFrame) -> DataFrame:
    """``{"symbol":"BTC/USD","side":"buy","price":94210.1,"qty":0.0015,"ord_type":"market",
    "trade_id":81234567,"timestamp":"2026-01-01T00:00:00.455123Z"}`` and REST rows
    ``["94210.10000","0.00150000",1767225600.455123,"b","m","",81234567]``."""
    return (
        _ws_trades(items)
        .unionByName(_rest_trades(items))
        .withColumn("_error", trade_checks(unexpected("trade")))
    )


def tickers(items: DataFrame) -> DataFrame:
    """``{"symbol":"BTC/USD","bid":94210.0,"bid_qty":0.5,"ask":94210.1,"ask_qty":1.25,"last":94210.1,
    "volume":1834.2,"vwap":93555.4,"low":91500.0,"high":94800.0,"change":2210.1,"change_pct":2.4,
    "timestamp":"2026-01-01T00:00:00.123456Z"}``."""
    j = F.from_json("_raw", TICKER_SCHEMA)
    last = to_decimal(j["last"])
    return items.select(
        "exchange",
        symbol_from_context(j["symbol"]).alias("native_symbol"),
        last.alias("last"),
        (last - to_decimal(j["change"])).cast(PRICE).alias("open_24h"),
        to_decimal(j["high"]).alias("high_24h"),
        to_decimal(j["low"]).alias("low_24h"),
        to_decimal(j["volume"]).alias("base_volume_24h"),
        F.lit(None).cast(PRICE).alias("quote_volume_24h"),
        to_decimal(j["bid"]).alias("best_bid"),
        to_decimal(j["ask"]).alias("best_ask"),
        F.lit(None).cast(LongType()).alias("sequence"),
        F.coalesce(ts_from_iso(j["timestamp"]), recv_ts()).alias("event_ts"),
        recv_ts().alias("recv_ts"),
        "_raw",
        F.lit(None).cast(StringType()).alias("_event"),
    ).withColumn("_error", ticker_checks())


def _quotes(items: DataFrame) -> DataFrame:
    j = F.from_json("_raw", TICKER_SCHEMA)
    return items.select(
        "exchange",
        symbol_from_context(j["symbol"]).alias("native_symbol"),
        to_decimal(j["bid"]).alias("bid_price"),
        to_decimal(j["bid_qty"]).alias("bid_size"),
        to_decimal(j["ask"]).alias("ask_price"),
        to_decimal(j["ask_qty"]).alias("ask_size"),
        F.lit(None).cast(LongType()).alias("sequence"),
        F.coalesce(ts_from_iso(j["timestamp"]), recv_ts()).alias("event_ts"),
        recv_ts().alias("recv_ts"),
        F.col("channel").alias("source_channel"),
        "_raw",
    ).withColumn("_error", l1_checks())


def l1(items: DataFrame) -> DataFrame:
    """Kraken lands no ``l1`` channel (the ticker is its L1); a ticker-shaped item here is read as one."""
    return _quotes(items)


def ticker_l1(items: DataFrame) -> DataFrame:
    """A ticker's ``bid``/``bid_qty``/``ask``/``ask_qty`` as an L1 quote (none without either side)."""
    j = F.from_json("_raw", TICKER_SCHEMA)
    return _quotes(items.where(nullsafe(j["bid"].isNotNull() | j["ask"].isNotNull())))


def markets(items: DataFrame) -> DataFrame:
    """``{"error":[],"result":{"XXBTZUSD":{"altname":"XBTUSD","wsname":"XBT/USD","base":"XXBT",
    "quote":"ZUSD","status":"online"}}}`` -> native ``BTC/USD``, assets ``XBT``/``USD`` (the symbol
    join renames them); ``status`` as sent (``online``, ``cancel_only``, ...; absent: ``online``)."""
    j = F.from_json("_raw", MARKET_SCHEMA)
    pairs = items.select("exchange", "recv_ts_ns", F.explode(F.map_values(j["result"])).alias("p"))
    parts = F.split(F.col("p.wsname"), "/")
    base, quote = F.element_at(parts, 1), F.element_at(parts, 2)
    return pairs.where(F.col("p.wsname").contains("/")).select(
        "exchange",
        F.concat(canonical_asset(base), F.lit("/"), canonical_asset(quote)).alias("native_symbol"),
        base.alias("base_asset"),
        quote.alias("quote_asset"),
        F.coalesce(F.col("p.status"), F.lit("online")).alias("status"),
        recv_ts().alias("updated_ts"),
    )
