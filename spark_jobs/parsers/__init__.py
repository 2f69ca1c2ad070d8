"""Payload schemas and pure transforms: ``bronze.raw_events`` rows -> normalized trades, tickers, L1.

One module per exchange (:mod:`~spark_jobs.parsers.binance`, :mod:`~spark_jobs.parsers.kucoin`,
:mod:`~spark_jobs.parsers.coinbase`, :mod:`~spark_jobs.parsers.kraken`) declares its payload
schemas and its ``trades``, ``tickers``, ``l1``, ``ticker_l1`` (``None`` where tickers carry no
book) and ``markets`` transforms; :data:`EXCHANGES` maps each exchange to its module, and the
``parse_*`` functions here run every module on its exchange's rows. Adding an exchange is one
module and one line in :data:`EXCHANGES`. Shared helpers (opening a payload, the checks, the output
columns) are in :mod:`~spark_jobs.parsers.common`.

Every payload is parsed with a declared schema (``from_json``, never inference). Numbers are
declared as strings so prices and sizes keep the exact text the exchange sent (JSON numbers are
read as their text too) and become ``DECIMAL(38,18)`` from that text. A payload is opened the same
way whatever the exchange (:func:`payload_items`): one *item* per element of a JSON-array body,
else one item, each keeping its own text in ``_raw``.

Each transform returns the normalized columns plus ``_raw`` and ``_error``: ``_error`` is ``NULL``
for a good row, else the reason it goes to quarantine (unparseable item, missing field, a price
that is not a positive decimal, a message type that does not belong on the channel, an exchange
with no parser, ...). Trade ids are strings and identical for the websocket frame and the REST
gap-fill row of one trade, so the MERGE on ``(exchange, symbol, trade_id)`` keeps one row. Sides
are the taker's.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from spark_jobs.parsers import binance, bybit, coinbase, kraken, kucoin, okx
from spark_jobs.parsers.common import (
    L1_COLUMNS,
    MARKET_COLUMNS,
    TICKER_COLUMNS,
    TRADE_COLUMNS,
    WRAPPER_SCHEMA,
    event_minute,
    payload_items,
    unsupported,
)

__all__ = [
    "EXCHANGES",
    "L1_COLUMNS",
    "MARKET_COLUMNS",
    "SUPPORTED_EXCHANGES",
    "TICKER_COLUMNS",
    "TICKER_L1_EXCHANGES",
    "TRADE_COLUMNS",
    "WRAPPER_SCHEMA",
    "ExchangeParser",
    "event_minute",
    "parse_l1",
    "parse_markets",
    "parse_tickers",
    "parse_trades",
    "payload_items",
]

Transform = Callable[[DataFrame], DataFrame]


class ExchangeParser(Protocol):
    """What an exchange module defines; each transform takes :func:`payload_items` rows of its
    exchange and channel."""

    def trades(self, items: DataFrame, /) -> DataFrame:
        """Trades: :data:`TRADE_COLUMNS`, ``_raw``, ``_error``."""
        ...

    def tickers(self, items: DataFrame, /) -> DataFrame:
        """Tickers: :data:`TICKER_COLUMNS`, ``_raw``, ``_error``."""
        ...

    def l1(self, items: DataFrame, /) -> DataFrame:
        """Items of channel ``l1``: :data:`L1_COLUMNS`, ``_raw``, ``_error``."""
        ...

    @property
    def ticker_l1(self) -> Transform | None:
        """Tickers as L1 quotes (only those with a best bid or ask), or ``None``: no book in tickers."""
        ...

    def markets(self, items: DataFrame, /) -> DataFrame:
        """Discovery snapshots: :data:`MARKET_COLUMNS`, every listed spot market."""
        ...


#: The registry: exchange name -> its parser module, in the order their rows are unioned.
EXCHANGES: dict[str, ExchangeParser] = {
    "binance": binance,
    "kucoin": kucoin,
    "coinbase": coinbase,
    "kraken": kraken,
    "okx": okx,
    "bybit": bybit,
}

SUPPORTED_EXCHANGES = tuple(EXCHANGES)

#: Exchanges whose tickers carry the best bid/ask and sizes, so a ticker is also an L1 quote.
#: Coinbase has no public websocket L1 at all, Kraken's ticker is its L1; Binance mini tickers
#: carry no book.
TICKER_L1_EXCHANGES = tuple(ex for ex, parser in EXCHANGES.items() if parser.ticker_l1 is not None)


def _by_exchange(
    items: DataFrame, parsers: dict[str, Transform], columns: tuple[str, ...], *, others: bool
) -> DataFrame:
    """Each exchange's rows through its parser, unioned; with ``others``, the rows of exchanges
    without one follow as ``unsupported_exchange``."""
    parts = [
        fn(items.where(F.col("exchange") == ex)).select(*columns, "_raw", "_error")
        for ex, fn in parsers.items()
    ]
    if others:
        parts.append(unsupported(items.where(~F.col("exchange").isin(*parsers)), columns))
    out = parts[0]
    for part in parts[1:]:
        out = out.unionByName(part)
    return out


def parse_trades(bronze: DataFrame) -> DataFrame:
    """Bronze rows of channel ``trades`` -> one row per trade.

    Columns: :data:`TRADE_COLUMNS`, ``trade_date``, ``_raw`` and ``_error``.
    """
    parsers = {ex: p.trades for ex, p in EXCHANGES.items()}
    return _by_exchange(payload_items(bronze), parsers, TRADE_COLUMNS, others=True).withColumn(
        "trade_date", F.to_date("event_ts")
    )


def parse_tickers(bronze: DataFrame) -> DataFrame:
    """Bronze rows of channel ``ticker`` -> one row per ticker (:data:`TICKER_COLUMNS`, ``_raw``, ``_error``).

    KuCoin tickers have no 24 h fields; Coinbase's give no quote volume.
    """
    parsers = {ex: p.tickers for ex, p in EXCHANGES.items()}
    return _by_exchange(payload_items(bronze), parsers, TICKER_COLUMNS, others=True)


def parse_l1(bronze: DataFrame) -> DataFrame:
    """Bronze rows of channels ``l1`` and ``ticker`` -> one row per quote.

    Columns: :data:`L1_COLUMNS`, ``_raw`` and ``_error``. Every ``l1`` item gives a row (bad ones
    with an ``_error``). A ``ticker`` item gives a quote only where the exchange's tickers carry
    the book (:data:`TICKER_L1_EXCHANGES`) and the item has a best bid or ask: other tickers are
    none of the L1 table's business (``silver_tickers`` parses and quarantines them), so they are
    skipped here, not quarantined twice. Rows of any other channel are ignored.
    """
    l1_items = payload_items(bronze.where(F.col("channel") == "l1"))
    quotes = _by_exchange(l1_items, {ex: p.l1 for ex, p in EXCHANGES.items()}, L1_COLUMNS, others=True)
    ticker_items = payload_items(
        bronze.where((F.col("channel") == "ticker") & F.col("exchange").isin(*TICKER_L1_EXCHANGES))
    )
    from_tickers = {ex: p.ticker_l1 for ex, p in EXCHANGES.items() if p.ticker_l1 is not None}
    return quotes.unionByName(_by_exchange(ticker_items, from_tickers, L1_COLUMNS, others=False))


def parse_markets(bronze: DataFrame) -> DataFrame:
    """Bronze rows of channel ``markets`` -> one row per listed spot market (native asset codes).

    Binance ``exchangeInfo`` (``symbols[]``, spot only), KuCoin ``symbols`` (``data[]``), Coinbase
    ``products`` (array), Kraken ``AssetPairs`` (``result`` keyed by pair). ``status`` is the
    exchange's own word (``TRADING``, ``online``, ...); KuCoin's is ``trading`` or ``disabled`` from
    ``enableTrading``. Rows of other exchanges and markets without a symbol or an asset are dropped.
    """
    items = payload_items(bronze)
    parts = [p.markets(items.where(F.col("exchange") == ex)) for ex, p in EXCHANGES.items()]
    out = parts[0]
    for part in parts[1:]:
        out = out.unionByName(part)
    return out.where(
        F.col("native_symbol").isNotNull()
        & F.col("base_asset").isNotNull()
        & F.col("quote_asset").isNotNull()
    )
