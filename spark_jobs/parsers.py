"""Payload schemas and pure transforms: ``bronze.raw_events`` rows -> normalized trades, tickers, L1.

Every payload is parsed with a declared schema (``from_json``, never inference). Numbers are
declared as strings so prices and sizes keep the exact text the exchange sent (JSON numbers are
read as their text too) and become ``DECIMAL(38,18)`` from that text.

How a payload is opened, whatever the exchange:

* the *body* is the ``data`` member when the payload has one (Binance combined streams
  ``{"stream":..,"data":..}``, KuCoin frames ``{"type":"message","topic":..,"data":..}`` and REST
  envelopes ``{"code":"200000","data":[..]}``), else the payload itself;
* a body that is a JSON array (``!miniTicker@arr``, REST trade pages) gives one *item* per
  element, an object gives one item; each item keeps its own text in ``_raw``.

Each transform returns the normalized columns plus ``_raw`` and ``_error``: ``_error`` is ``NULL``
for a good row, else the reason it goes to quarantine (unparseable item, missing field, a price
that is not a positive decimal, a message type that does not belong on the channel, ...).

Trade ids are strings and identical for the websocket frame and the REST gap-fill row of one
trade, so the MERGE on ``(exchange, symbol, trade_id)`` keeps one row:

* Binance: ``t`` (ws ``@trade``) = ``id`` (REST ``historicalTrades``/``trades``); aggregate trades
  (``@aggTrade``, REST ``aggTrades``) live in their own id space as ``agg-<a>`` - subscribe to one
  of the two streams per market, or volume counts twice.
* KuCoin: ``sequence``, the id present in both the ws match and REST ``histories`` rows (the ws
  ``tradeId`` equals it in current feeds; it is the fallback when ``sequence`` is absent).
* Coinbase: ``trade_id``.

Sides are the taker's: Binance ``m``/``isBuyerMaker`` true means the taker sold; KuCoin ``side``
is the taker side; Coinbase ``matches`` and REST trades carry the maker side, which is inverted.
"""

from __future__ import annotations

from collections.abc import Callable

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F
from pyspark.sql.types import (
    ArrayType,
    BooleanType,
    DataType,
    LongType,
    StringType,
    StructField,
    StructType,
    TimestampType,
)

from lake.tables import PRICE
from spark_jobs.columns import (
    first_error,
    minute_of,
    recv_ts,
    to_decimal,
    ts_from_iso,
    ts_from_ms,
    ts_from_ns,
)

SUPPORTED_EXCHANGES = ("binance", "kucoin", "coinbase")


def _struct(*names: str, types: dict[str, DataType] | None = None) -> StructType:
    types = types or {}
    return StructType([StructField(n, types.get(n, StringType()), True) for n in names])


_S = StringType()
_PAIR = ArrayType(StringType())
_LEVELS = ArrayType(ArrayType(StringType()))

#: The outer frame of every payload: only what locates the body and the symbol.
WRAPPER_SCHEMA = _struct("stream", "topic", "subject", "type", "code", "data")

#: Binance items are read as ``map<string,string>``: its one-letter keys differ only by case
#: (``e``/``E``, ``t``/``T``, ``b``/``B``, ``a``/``A``) and Spark resolves struct fields without case.
#: The keys used: @trade / @aggTrade events and REST historicalTrades / trades / aggTrades rows
#: (2.4, 2.5): e E s t a p q T m, id price qty time isBuyerMaker; 24hrMiniTicker: e E s c o h l v q
#: (b a on full tickers); @bookTicker u s b B a A and REST bookTicker symbol bidPrice bidQty
#: askPrice askQty.
BINANCE_ITEM_SCHEMA = "map<string,string>"
#: KuCoin /market/match data and REST /api/v1/market/histories rows (3.3, 3.5).
KUCOIN_TRADE_SCHEMA = _struct("symbol", "sequence", "tradeId", "side", "price", "size", "time", "type")
#: Coinbase Exchange matches / last_match and REST /products/{id}/trades rows (4A.2, 4A.3).
COINBASE_TRADE_SCHEMA = _struct("type", "trade_id", "product_id", "side", "size", "price", "time")

#: KuCoin /market/ticker data (3.3).
KUCOIN_TICKER_SCHEMA = _struct(
    "sequence", "price", "size", "bestBid", "bestBidSize", "bestAsk", "bestAskSize", "time"
)
#: Coinbase Exchange ticker / ticker_batch (4A.2).
COINBASE_TICKER_SCHEMA = _struct(
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

#: KuCoin /spotMarket/level1 data and REST /api/v1/market/orderbook/level1.
KUCOIN_L1_SCHEMA = _struct(
    "asks", "bids", "timestamp", "time", "sequence", "bestBid", "bestBidSize", "bestAsk", "bestAskSize",
    types={"asks": _PAIR, "bids": _PAIR},
)  # fmt: skip
#: Coinbase REST /products/{id}/book?level=1 (rows [price, size, num_orders]).
COINBASE_L1_SCHEMA = _struct("bids", "asks", "sequence", "time", types={"bids": _LEVELS, "asks": _LEVELS})

#: Discovery snapshots (channel ``markets``).
BINANCE_MARKETS_SCHEMA = StructType(
    [
        StructField(
            "symbols",
            ArrayType(
                _struct("symbol", "status", "baseAsset", "quoteAsset", "isSpotTradingAllowed", types={
                    "isSpotTradingAllowed": BooleanType()
                })
            ),
        )
    ]
)  # fmt: skip
_BOOL = BooleanType()
KUCOIN_MARKET_SCHEMA = _struct(
    "symbol", "baseCurrency", "quoteCurrency", "enableTrading", types={"enableTrading": _BOOL}
)
COINBASE_MARKET_SCHEMA = _struct(
    "id", "base_currency", "quote_currency", "status", "trading_disabled", types={"trading_disabled": _BOOL}
)

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

    An empty array gives no row; a payload that is not JSON gives one row with ``_raw`` ``NULL``.
    """
    wrap = F.from_json("payload", WRAPPER_SCHEMA)
    body = F.coalesce(wrap["data"], F.col("payload"))
    items = F.when(
        F.ltrim(body).startswith("["),
        F.coalesce(F.from_json(body, ArrayType(StringType())), F.array(F.lit(None).cast(_S))),
    ).otherwise(F.array(body))
    return bronze.select(*_ENVELOPE_COLS, wrap.alias("_wrap"), F.explode(items).alias("_raw"))


def _symbol_from_context(*payload_symbols: Column) -> Column:
    """Native symbol: the item's own field, else the envelope's, else the ws topic or REST path."""
    topic = F.col("_wrap.topic")
    topic_symbol = F.when(
        topic.endswith(":all"), F.col("_wrap.subject")
    ).otherwise(F.nullif(F.regexp_extract(topic, r":([^,:]+)$", 1), F.lit("")))  # fmt: skip
    query_symbol = F.nullif(F.regexp_extract(F.col("stream"), r"[?&]symbol=([^&]+)", 1), F.lit(""))
    path_symbol = F.nullif(F.regexp_extract(F.col("stream"), r"/products/([^/?]+)", 1), F.lit(""))
    return F.coalesce(*payload_symbols, F.col("native_symbol"), topic_symbol, query_symbol, path_symbol)


def _unexpected(*allowed: str) -> tuple[Column, str]:
    """Check: the item declares a message type (``_event``) that does not belong on the channel."""
    return (F.col("_event").isNotNull() & ~F.col("_event").isin(*allowed), "unexpected_message_type")


def _not_json_object() -> Column:
    return F.json_object_keys("_raw").isNull()


# --- trades ------------------------------------------------------------------------------------

TRADE_COLUMNS = (
    "exchange", "native_symbol", "trade_id", "price", "size", "side", "event_ts", "recv_ts", "source",
)  # fmt: skip


def _trade_checks(*extra: tuple[Column, str]) -> Column:
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


def _binance_trades(items: DataFrame) -> DataFrame:
    j = F.from_json("_raw", BINANCE_ITEM_SCHEMA)
    is_agg = (j["e"] == "aggTrade") | (j["t"].isNull() & j["id"].isNull() & j["a"].isNotNull())
    maker_buy = F.lower(F.coalesce(j["m"], j["isBuyerMaker"])) == "true"
    return items.select(
        "exchange",
        _symbol_from_context(j["s"]).alias("native_symbol"),
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
    ).withColumn("_error", _trade_checks(_unexpected("trade", "aggTrade")))


def _kucoin_trades(items: DataFrame) -> DataFrame:
    j = F.from_json("_raw", KUCOIN_TRADE_SCHEMA)
    return items.select(
        "exchange",
        _symbol_from_context(j["symbol"]).alias("native_symbol"),
        F.coalesce(j["sequence"], j["tradeId"]).alias("trade_id"),
        to_decimal(j["price"]).alias("price"),
        to_decimal(j["size"]).alias("size"),
        F.lower(j["side"]).alias("side"),
        ts_from_ns(j["time"]).alias("event_ts"),
        recv_ts().alias("recv_ts"),
        "source",
        "_raw",
        F.coalesce(j["type"], F.col("_wrap.code")).alias("_event"),
    ).withColumn("_error", _trade_checks(_unexpected("match", "200000")))


def _coinbase_trades(items: DataFrame) -> DataFrame:
    j = F.from_json("_raw", COINBASE_TRADE_SCHEMA)
    maker = F.lower(j["side"])
    return items.select(
        "exchange",
        _symbol_from_context(j["product_id"]).alias("native_symbol"),
        j["trade_id"].alias("trade_id"),
        to_decimal(j["price"]).alias("price"),
        to_decimal(j["size"]).alias("size"),
        F.when(maker == "buy", F.lit("sell")).when(maker == "sell", F.lit("buy")).alias("side"),
        ts_from_iso(j["time"]).alias("event_ts"),
        recv_ts().alias("recv_ts"),
        "source",
        "_raw",
        j["type"].alias("_event"),
    ).withColumn("_error", _trade_checks(_unexpected("match", "last_match")))


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


def _unsupported(items: DataFrame, columns: tuple[str, ...]) -> DataFrame:
    keep = ("exchange", "source", "native_symbol")
    return items.select(
        *[(F.col(c) if c in keep else _null_of(c)).alias(c) for c in columns],
        "_raw",
        F.lit("unsupported_exchange").alias("_error"),
    )


def _by_exchange(
    parsers: dict[str, Callable[[DataFrame], DataFrame]], columns: tuple[str, ...]
) -> Callable[[DataFrame], DataFrame]:
    def transform(bronze: DataFrame) -> DataFrame:
        items = payload_items(bronze)
        parts = [
            fn(items.where(F.col("exchange") == ex)).select(*columns, "_raw", "_error")
            for ex, fn in parsers.items()
        ]
        parts.append(_unsupported(items.where(~F.col("exchange").isin(*parsers)), columns))
        out = parts[0]
        for part in parts[1:]:
            out = out.unionByName(part)
        return out

    return transform


def parse_trades(bronze: DataFrame) -> DataFrame:
    """Bronze rows of channel ``trades`` -> one row per trade.

    Columns: :data:`TRADE_COLUMNS`, ``trade_date``, ``_raw`` and ``_error``.
    """
    return _by_exchange(
        {"binance": _binance_trades, "kucoin": _kucoin_trades, "coinbase": _coinbase_trades},
        TRADE_COLUMNS,
    )(bronze).withColumn("trade_date", F.to_date("event_ts"))


# --- tickers -----------------------------------------------------------------------------------

#: ``sequence`` is the exchange's own ordering of ticker states where it has one (Coinbase and
#: KuCoin ``sequence``; ``NULL`` for Binance): several Coinbase tickers share one ``time`` when a
#: taker order sweeps several levels, and only the sequence tells them apart.
TICKER_COLUMNS = (
    "exchange", "native_symbol", "last", "open_24h", "high_24h", "low_24h", "base_volume_24h",
    "quote_volume_24h", "best_bid", "best_ask", "sequence", "event_ts", "recv_ts",
)  # fmt: skip


def _ticker_checks(*extra: tuple[Column, str]) -> Column:
    return first_error(
        (_not_json_object(), "unparseable_payload"),
        *extra,
        (F.col("native_symbol").isNull(), "missing_symbol"),
        (F.col("event_ts").isNull(), "bad_event_ts"),
        (F.col("last").isNull(), "bad_price"),
        (F.col("last") <= 0, "non_positive_price"),
    )


def _binance_tickers(items: DataFrame) -> DataFrame:
    j = F.from_json("_raw", BINANCE_ITEM_SCHEMA)
    return items.select(
        "exchange",
        _symbol_from_context(j["s"]).alias("native_symbol"),
        to_decimal(j["c"]).alias("last"),
        to_decimal(j["o"]).alias("open_24h"),
        to_decimal(j["h"]).alias("high_24h"),
        to_decimal(j["l"]).alias("low_24h"),
        to_decimal(j["v"]).alias("base_volume_24h"),
        to_decimal(j["q"]).alias("quote_volume_24h"),
        to_decimal(j["b"]).alias("best_bid"),
        to_decimal(j["a"]).alias("best_ask"),
        F.lit(None).cast(LongType()).alias("sequence"),
        ts_from_ms(j["E"]).alias("event_ts"),
        recv_ts().alias("recv_ts"),
        "_raw",
        j["e"].alias("_event"),
    ).withColumn("_error", _ticker_checks(_unexpected("24hrMiniTicker", "24hrTicker")))


def _kucoin_tickers(items: DataFrame) -> DataFrame:
    j = F.from_json("_raw", KUCOIN_TICKER_SCHEMA)
    none = F.lit(None).cast(PRICE)
    return items.select(
        "exchange",
        _symbol_from_context().alias("native_symbol"),
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
    ).withColumn("_error", _ticker_checks())


def _coinbase_tickers(items: DataFrame) -> DataFrame:
    j = F.from_json("_raw", COINBASE_TICKER_SCHEMA)
    return items.select(
        "exchange",
        _symbol_from_context(j["product_id"]).alias("native_symbol"),
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
    ).withColumn("_error", _ticker_checks(_unexpected("ticker", "ticker_batch")))


def parse_tickers(bronze: DataFrame) -> DataFrame:
    """Bronze rows of channel ``ticker`` -> one row per ticker (:data:`TICKER_COLUMNS`, ``_raw``, ``_error``).

    KuCoin tickers have no 24 h fields; Coinbase's give no quote volume.
    """
    return _by_exchange(
        {"binance": _binance_tickers, "kucoin": _kucoin_tickers, "coinbase": _coinbase_tickers},
        TICKER_COLUMNS,
    )(bronze)


# --- L1 (best bid / ask) -----------------------------------------------------------------------

#: ``source_channel`` is the bronze channel a quote was read from: ``l1`` (Binance ``@bookTicker``
#: and REST ``bookTicker``, KuCoin ``/spotMarket/level1`` and REST ``level1``, Coinbase REST
#: ``book?level=1``) or ``ticker`` (a quote derived from a Coinbase or KuCoin ticker's best bid/ask).
L1_COLUMNS = (
    "exchange", "native_symbol", "bid_price", "bid_size", "ask_price", "ask_size", "sequence",
    "event_ts", "recv_ts", "source_channel",
)  # fmt: skip

#: Exchanges whose tickers carry the best bid/ask and sizes, so a ticker is also an L1 quote.
#: Coinbase has no public websocket L1 at all; Binance mini tickers carry no book.
TICKER_L1_EXCHANGES = ("coinbase", "kucoin")


def _l1_checks() -> Column:
    return first_error(
        (_not_json_object(), "unparseable_payload"),
        (F.col("native_symbol").isNull(), "missing_symbol"),
        (F.col("event_ts").isNull(), "bad_event_ts"),
        (F.col("bid_price").isNull() & F.col("ask_price").isNull(), "empty_book"),
        (F.col("bid_price") <= 0, "non_positive_price"),
        (F.col("ask_price") <= 0, "non_positive_price"),
        (F.col("bid_price") > F.col("ask_price"), "crossed_book"),
    )


def _nullsafe(c: Column) -> Column:
    """A condition that is false (not ``NULL``) when its inputs are missing."""
    return F.coalesce(c, F.lit(False))


def _binance_l1(items: DataFrame) -> DataFrame:
    j = F.from_json("_raw", BINANCE_ITEM_SCHEMA)
    return items.select(
        "exchange",
        _symbol_from_context(j["s"], j["symbol"]).alias("native_symbol"),
        to_decimal(F.coalesce(j["b"], j["bidPrice"])).alias("bid_price"),
        to_decimal(F.coalesce(j["B"], j["bidQty"])).alias("bid_size"),
        to_decimal(F.coalesce(j["a"], j["askPrice"])).alias("ask_price"),
        to_decimal(F.coalesce(j["A"], j["askQty"])).alias("ask_size"),
        j["u"].cast("long").alias("sequence"),
        # bookTicker carries no event time: the receive time is the event time (exchanges.md 2.4).
        recv_ts().alias("event_ts"),
        recv_ts().alias("recv_ts"),
        F.col("channel").alias("source_channel"),
        "_raw",
    ).withColumn("_error", _l1_checks())


def _kucoin_l1(items: DataFrame) -> DataFrame:
    j = F.from_json("_raw", KUCOIN_L1_SCHEMA)
    return items.select(
        "exchange",
        _symbol_from_context().alias("native_symbol"),
        to_decimal(F.coalesce(F.element_at(j["bids"], 1), j["bestBid"])).alias("bid_price"),
        to_decimal(F.coalesce(F.element_at(j["bids"], 2), j["bestBidSize"])).alias("bid_size"),
        to_decimal(F.coalesce(F.element_at(j["asks"], 1), j["bestAsk"])).alias("ask_price"),
        to_decimal(F.coalesce(F.element_at(j["asks"], 2), j["bestAskSize"])).alias("ask_size"),
        j["sequence"].cast("long").alias("sequence"),
        ts_from_ms(F.coalesce(j["timestamp"], j["time"])).alias("event_ts"),
        recv_ts().alias("recv_ts"),
        F.col("channel").alias("source_channel"),
        "_raw",
    ).withColumn("_error", _l1_checks())


def _coinbase_l1(items: DataFrame) -> DataFrame:
    j = F.from_json("_raw", COINBASE_L1_SCHEMA)
    bid = F.element_at(j["bids"], 1)
    ask = F.element_at(j["asks"], 1)
    return items.select(
        "exchange",
        _symbol_from_context().alias("native_symbol"),
        to_decimal(F.element_at(bid, 1)).alias("bid_price"),
        to_decimal(F.element_at(bid, 2)).alias("bid_size"),
        to_decimal(F.element_at(ask, 1)).alias("ask_price"),
        to_decimal(F.element_at(ask, 2)).alias("ask_size"),
        j["sequence"].cast("long").alias("sequence"),
        F.coalesce(ts_from_iso(j["time"]), recv_ts()).alias("event_ts"),
        recv_ts().alias("recv_ts"),
        F.col("channel").alias("source_channel"),
        "_raw",
    ).withColumn("_error", _l1_checks())


def _kucoin_ticker_l1(items: DataFrame) -> DataFrame:
    """KuCoin ``/market/ticker`` data: ``bestBid``/``bestBidSize``/``bestAsk``/``bestAskSize``.

    The event time is the ticker's ``time`` (ms; the exchange documents it as the time of the last
    match) and ``sequence`` the ticker's, as in ``silver.tickers``.
    """
    j = F.from_json("_raw", KUCOIN_TICKER_SCHEMA)
    return (
        items.where(j["bestBid"].isNotNull() | j["bestAsk"].isNotNull())
        .select(
            "exchange",
            _symbol_from_context().alias("native_symbol"),
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
        .withColumn("_error", _l1_checks())
    )


def _coinbase_ticker_l1(items: DataFrame) -> DataFrame:
    """Coinbase ``ticker``/``ticker_batch``: ``best_bid``/``best_bid_size``/``best_ask``/``best_ask_size``.

    Sizes are absent from older feeds (``NULL`` sizes); the sparse first ticker after subscribing
    has no ``time`` (the receive time stands in, as in ``silver.tickers``).
    """
    j = F.from_json("_raw", COINBASE_TICKER_SCHEMA)
    is_ticker = _nullsafe(j["type"].isin("ticker", "ticker_batch"))
    return (
        items.where(is_ticker & (j["best_bid"].isNotNull() | j["best_ask"].isNotNull()))
        .select(
            "exchange",
            _symbol_from_context(j["product_id"]).alias("native_symbol"),
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
        .withColumn("_error", _l1_checks())
    )


_TICKER_L1_PARSERS: dict[str, Callable[[DataFrame], DataFrame]] = {
    "kucoin": _kucoin_ticker_l1,
    "coinbase": _coinbase_ticker_l1,
}


def parse_l1(bronze: DataFrame) -> DataFrame:
    """Bronze rows of channels ``l1`` and ``ticker`` -> one row per quote.

    Columns: :data:`L1_COLUMNS`, ``_raw`` and ``_error``. Every ``l1`` item gives a row (bad ones
    with an ``_error``). A ``ticker`` item gives a quote only where the exchange's tickers carry
    the book (:data:`TICKER_L1_EXCHANGES`) and the item has a best bid or ask: other tickers are
    none of the L1 table's business (``silver_tickers`` parses and quarantines them), so they are
    skipped here, not quarantined twice. Rows of any other channel are ignored.
    """
    l1 = _by_exchange({"binance": _binance_l1, "kucoin": _kucoin_l1, "coinbase": _coinbase_l1}, L1_COLUMNS)(
        bronze.where(F.col("channel") == "l1")
    )
    tickers = payload_items(
        bronze.where((F.col("channel") == "ticker") & F.col("exchange").isin(*TICKER_L1_EXCHANGES))
    )
    out = l1
    for ex, fn in _TICKER_L1_PARSERS.items():
        out = out.unionByName(
            fn(tickers.where(F.col("exchange") == ex)).select(*L1_COLUMNS, "_raw", "_error")
        )
    return out


# --- markets (discovery snapshots) -------------------------------------------------------------

MARKET_COLUMNS = ("exchange", "native_symbol", "base_asset", "quote_asset", "status", "updated_ts")


def parse_markets(bronze: DataFrame) -> DataFrame:
    """Bronze rows of channel ``markets`` -> one row per listed spot market (native asset codes).

    Binance ``exchangeInfo`` (``symbols[]``, spot only), KuCoin ``symbols`` (``data[]``), Coinbase
    ``products`` (array). ``status`` is the exchange's own word (``TRADING``, ``online``, ...);
    KuCoin's is ``trading`` or ``disabled`` from ``enableTrading``.
    """
    items = payload_items(bronze)
    binance = (
        items.where(F.col("exchange") == "binance")
        .select(
            "exchange",
            "recv_ts_ns",
            F.explode(F.from_json("_raw", BINANCE_MARKETS_SCHEMA)["symbols"]).alias("m"),
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
    kj = F.from_json("_raw", KUCOIN_MARKET_SCHEMA)
    kucoin = items.where(F.col("exchange") == "kucoin").select(
        "exchange",
        kj["symbol"].alias("native_symbol"),
        kj["baseCurrency"].alias("base_asset"),
        kj["quoteCurrency"].alias("quote_asset"),
        F.when(kj["enableTrading"], F.lit("trading")).otherwise(F.lit("disabled")).alias("status"),
        recv_ts().alias("updated_ts"),
    )
    cj = F.from_json("_raw", COINBASE_MARKET_SCHEMA)
    coinbase = items.where(F.col("exchange") == "coinbase").select(
        "exchange",
        cj["id"].alias("native_symbol"),
        cj["base_currency"].alias("base_asset"),
        cj["quote_currency"].alias("quote_asset"),
        F.when(_nullsafe(cj["trading_disabled"]), F.lit("disabled")).otherwise(cj["status"]).alias("status"),
        recv_ts().alias("updated_ts"),
    )
    return (
        binance.unionByName(kucoin)
        .unionByName(coinbase)
        .where(
            F.col("native_symbol").isNotNull()
            & F.col("base_asset").isNotNull()
            & F.col("quote_asset").isNotNull()
        )
    )


def event_minute(df: DataFrame) -> DataFrame:
    """Add ``_minute``: the event time truncated to the minute (the USDT rate's grain)."""
    return df.withColumn("_minute", minute_of("event_ts"))
