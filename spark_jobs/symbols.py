"""Canonical symbols: ``silver.markets`` from discovery snapshots, asset aliases, and the symbol join.

The canonical instrument id is ``BASE-QUOTE`` in upper case (exchanges.md 1.3). Base and quote
always come from the exchange's instrument list (Binance ``baseAsset``/``quoteAsset``, KuCoin
``baseCurrency``/``quoteCurrency``, Coinbase ``base_currency``/``quote_currency``), never from
splitting ``BTCUSDT``; the one alias table (:data:`lake.assets.ASSET_ALIASES`) maps renamed asset
codes to the canonical code. A row whose ``(exchange, native_symbol)`` is not a known market is
rejected with reason ``unknown_market`` (it goes to quarantine, it is not dropped).
"""

from __future__ import annotations

from collections.abc import Callable
from itertools import chain

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F

from lake.assets import ASSET_ALIASES
from lake.tables import SILVER_MARKETS


def canonical_asset(col: Column | str, aliases: dict[str, str] | None = None) -> Column:
    """An exchange asset code in canonical form: trimmed, upper case, aliases applied."""
    c = F.upper(F.trim(F.col(col) if isinstance(col, str) else col))
    table = aliases if aliases is not None else ASSET_ALIASES
    if not table:
        return c
    mapping = F.create_map(*[F.lit(x) for x in chain.from_iterable(table.items())])
    return F.coalesce(F.element_at(mapping, c), c)


def markets_from_discovery(parsed: DataFrame) -> DataFrame:
    """Rows of :func:`spark_jobs.parsers.parse_markets` -> ``silver.markets`` rows."""
    base = canonical_asset("base_asset")
    quote = canonical_asset("quote_asset")
    return parsed.select(
        "exchange",
        "native_symbol",
        F.concat(base, F.lit("-"), quote).alias("symbol"),
        base.alias("base"),
        quote.alias("quote"),
        "status",
        "updated_ts",
    ).select(*SILVER_MARKETS.columns)


def attach_symbols(markets: DataFrame) -> Callable[[DataFrame], DataFrame]:
    """Add ``symbol``, ``base``, ``quote`` from ``markets`` by ``(exchange, native_symbol)``.

    The native symbol is matched case-insensitively (Binance stream names are lower case, its
    payloads upper case) and replaced by the market's own spelling. A row with no market keeps
    ``NULL`` symbol columns and gets ``_error = 'unknown_market'`` unless it already had an error.
    """

    def transform(df: DataFrame) -> DataFrame:
        m = F.broadcast(
            markets.select(
                F.col("exchange").alias("_m_exchange"),
                F.upper(F.col("native_symbol")).alias("_m_key"),
                F.col("native_symbol").alias("_m_native"),
                "symbol",
                "base",
                "quote",
            )
        )
        joined = df.join(
            m,
            (F.col("exchange") == F.col("_m_exchange"))
            & (F.upper(F.col("native_symbol")) == F.col("_m_key")),
            "left",
        )
        error = F.coalesce(F.col("_error"), F.when(F.col("symbol").isNull(), F.lit("unknown_market")))
        return (
            joined.withColumn("native_symbol", F.coalesce(F.col("_m_native"), F.col("native_symbol")))
            .withColumn("_error", error)
            .drop("_m_exchange", "_m_key", "_m_native")
        )

    return transform
