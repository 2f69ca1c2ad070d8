"""USDT conversion: ``silver.usdt_rates`` per (asset, minute) from trades, and pricing silver rows.

**Price of a market in a minute** = the last trade of that minute (latest ``event_ts``; ties by
``recv_ts``, exchange, trade id), pooled over every exchange listing the canonical market. The
last price is an exact decimal from the wire, so rates are reproducible digit for digit.

**Rate to USDT of an asset in a minute**, the first method that applies (recorded in ``method``):

1. ``identity`` - USDT itself, 1;
2. ``direct`` - the ASSET-USDT market's price (BTC, ETH, USDC, EUR, ...);
3. ``inverse`` - 1 / the USDT-ASSET market's price (USDT-IRT, USDT-TRY style quote currencies);
4. ``cross_btc``, ``cross_eth``, ``cross_usdc`` - one hop through the hop asset H, whose own rate
   is direct or inverse in the same minute: ASSET-H price x rate(H), or rate(H) / H-ASSET price
   (so USD gets a rate from Coinbase's BTC-USD and BTC-USDT elsewhere).

Rates use only the trades of their own minute. A silver row of minute ``m`` takes the rate of its
quote asset at ``m``, else the latest rate in ``[m - carry, m)``: then its method is suffixed
``:carried``. A row with no rate keeps ``NULL`` USDT columns. Rates of minute ``t`` can only change
when trades of minute ``t`` arrive, and they reach rows of ``[t, t + carry]``: so a trades batch
re-prices the stored rows of those minutes (only the ones whose USDT columns change are rewritten),
and a row is filled when its rate arrives. Tickers and L1 re-price ``reprice_minutes`` back from
their own batch, and, in the live pipeline, the minutes the same micro-batch's trades reached.

Arithmetic is exact decimal with half-up rounding (see :mod:`spark_jobs.columns`): ``price_usdt``
and rates keep 18 fraction digits, trade ``notional_usdt`` 15, ticker ``notional_usdt`` 14.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from pyspark.sql import Column, DataFrame, Window
from pyspark.sql import functions as F

from lake.tables import PRICE
from spark_jobs.columns import inverse, minute_of, mul

USDT = "USDT"
#: Assets a cross rate may hop through, in order of preference.
HOP_ASSETS: tuple[str, ...] = ("BTC", "ETH", "USDC")
#: Methods from the most to the least preferred.
METHODS: tuple[str, ...] = ("identity", "direct", "inverse", *(f"cross_{h.lower()}" for h in HOP_ASSETS))
CARRIED = ":carried"

#: Pricing columns each silver entity gets, by table.
PRICING_COLUMNS: dict[str, tuple[str, ...]] = {
    "silver.trades": ("usdt_rate", "price_usdt", "notional_usdt", "usdt_method"),
    "silver.tickers": ("usdt_rate", "price_usdt", "notional_usdt", "usdt_method"),
    "silver.l1_quotes": ("usdt_rate", "mid_usdt", "usdt_method"),
}


def market_prices(trades: DataFrame) -> DataFrame:
    """Silver-shaped trades -> ``(base, quote, minute, price)``: the last trade price of each minute."""
    order = Window.partitionBy("base", "quote", "minute").orderBy(
        F.col("event_ts").desc(),
        F.col("recv_ts").desc(),
        F.col("exchange").asc(),
        F.length("trade_id").desc(),
        F.col("trade_id").desc(),
    )
    return (
        trades.select("base", "quote", "exchange", "trade_id", "price", "event_ts", "recv_ts")
        .withColumn("minute", minute_of("event_ts"))
        .withColumn("_n", F.row_number().over(order))
        .where("_n = 1")
        .select("base", "quote", "minute", "price")
    )


def _best(rates: DataFrame) -> DataFrame:
    rank = F.array_position(F.array(*[F.lit(m) for m in METHODS]), F.col("method"))
    w = Window.partitionBy("asset", "minute").orderBy(rank)
    return (
        rates.where(F.col("rate_to_usdt").isNotNull() & (F.col("rate_to_usdt") > 0))
        .withColumn("_n", F.row_number().over(w))
        .where("_n = 1")
        .drop("_n")
    )


def _rate(asset: Column, rate: Column, method: str) -> list[Column]:
    return [
        asset.alias("asset"),
        F.col("minute"),
        rate.cast(PRICE).alias("rate_to_usdt"),
        F.lit(method).alias("method"),
    ]


def usdt_rates(prices: DataFrame) -> DataFrame:
    """``(base, quote, minute, price)`` -> ``silver.usdt_rates`` rows (one best rate per asset and minute)."""
    base, quote, price = F.col("base"), F.col("quote"), F.col("price")
    identity = prices.select("minute").distinct().select(*_rate(F.lit(USDT), F.lit(1), "identity"))
    direct = prices.where((quote == USDT) & (base != USDT)).select(*_rate(base, price, "direct"))
    inverted = prices.where((base == USDT) & (quote != USDT)).select(*_rate(quote, inverse(price), "inverse"))
    first = _best(identity.unionByName(direct).unionByName(inverted))
    parts = [first]
    for hop in HOP_ASSETS:
        method = f"cross_{hop.lower()}"
        hop_rate = first.where(F.col("asset") == hop).select("minute", F.col("rate_to_usdt").alias("_hop"))
        via_quote = (
            prices.where((quote == hop) & ~base.isin(USDT, hop))
            .join(hop_rate, "minute")
            .select(*_rate(base, mul(price, F.col("_hop")), method))
        )
        via_base = (
            prices.where((base == hop) & ~quote.isin(USDT, hop))
            .join(hop_rate, "minute")
            .select(*_rate(quote, mul(F.col("_hop"), inverse(price), a_int=7, b_int=12), method))
        )
        parts += [via_quote, via_base]
    out = parts[0]
    for part in parts[1:]:
        out = out.unionByName(part)
    return _best(out).select("asset", "minute", "rate_to_usdt", "method")


def attach_rates(
    rates: DataFrame, *, key: Sequence[str], carry_minutes: int
) -> Callable[[DataFrame], DataFrame]:
    """Set ``usdt_rate`` and ``usdt_method`` from the quote asset's rate (see the module doc).

    ``key`` identifies a row (the table's natural key); rows without a rate get ``NULL``s.
    """

    def transform(df: DataFrame) -> DataFrame:
        r = rates.select(
            F.col("asset").alias("_r_asset"),
            F.col("minute").alias("_r_minute"),
            F.col("rate_to_usdt").alias("_r_rate"),
            F.col("method").alias("_r_method"),
        )
        rows = df.drop("usdt_rate", "usdt_method").withColumn("_minute", minute_of("event_ts"))
        lower = F.col("_minute") - F.expr(f"INTERVAL {int(carry_minutes)} MINUTES")
        joined = rows.join(
            r,
            (F.col("quote") == F.col("_r_asset")) & F.col("_r_minute").between(lower, F.col("_minute")),
            "left",
        )
        pick = Window.partitionBy(*key).orderBy(F.col("_r_minute").desc_nulls_last())
        method = F.when(F.col("_r_minute") == F.col("_minute"), F.col("_r_method")).otherwise(
            F.concat(F.col("_r_method"), F.lit(CARRIED))
        )
        return (
            joined.withColumn("_n", F.row_number().over(pick))
            .where("_n = 1")
            .withColumn("usdt_rate", F.col("_r_rate"))
            .withColumn("usdt_method", method)
            .drop("_n", "_minute", "_r_asset", "_r_minute", "_r_rate", "_r_method")
        )

    return transform


def price_trades(df: DataFrame) -> DataFrame:
    """``price_usdt = price x usdt_rate`` (18 dp), ``notional_usdt = price_usdt x size`` (15 dp)."""
    price_usdt = mul(F.col("price"), F.col("usdt_rate"))
    return df.withColumn("price_usdt", price_usdt).withColumn(
        "notional_usdt", mul(F.col("price_usdt"), F.col("size"), a_int=10, b_int=12)
    )


def price_tickers(df: DataFrame) -> DataFrame:
    """``price_usdt = last x rate``; ``notional_usdt`` = 24 h quote volume x rate (14 dp), if given."""
    return df.withColumn("price_usdt", mul(F.col("last"), F.col("usdt_rate"))).withColumn(
        "notional_usdt", mul(F.col("quote_volume_24h"), F.col("usdt_rate"), a_int=16, b_int=7)
    )


def l1_mid_and_spread(df: DataFrame) -> DataFrame:
    """``_mid`` = (bid + ask) / 2 (18 dp) and ``spread_bps`` = (ask - bid) x 10000 / mid (6 dp)."""
    bid = F.col("bid_price").cast("decimal(37,18)")
    ask = F.col("ask_price").cast("decimal(37,18)")
    mid = ((bid + ask) / F.lit(2)).cast(PRICE)
    spread = (F.col("ask_price").cast("decimal(30,18)") - F.col("bid_price").cast("decimal(30,18)")) * F.lit(
        10000
    ).cast("decimal(5,0)")
    return df.withColumn("_mid", mid).withColumn(
        "spread_bps", (spread / F.col("_mid").cast("decimal(30,18)")).cast(PRICE)
    )


def price_l1(df: DataFrame) -> DataFrame:
    """``mid_usdt`` = mid x rate (18 dp)."""
    mid = (
        (F.col("bid_price").cast("decimal(37,18)") + F.col("ask_price").cast("decimal(37,18)")) / F.lit(2)
    ).cast(PRICE)
    return df.withColumn("mid_usdt", mul(mid, F.col("usdt_rate")))


PRICERS: dict[str, Callable[[DataFrame], DataFrame]] = {
    "silver.trades": price_trades,
    "silver.tickers": price_tickers,
    "silver.l1_quotes": price_l1,
}


def changed_pricing(
    old: DataFrame, new: DataFrame, *, key: Sequence[str], columns: Sequence[str]
) -> DataFrame:
    """Rows of ``new`` whose pricing columns differ from the same key's row in ``old``."""
    # Both sides usually derive from the same rows: renaming the old side's key columns keeps the
    # join condition from collapsing into trivially true self-comparisons.
    o = old.select(
        *[F.col(k).alias(f"_old_key_{k}") for k in key], *[F.col(c).alias(f"_old_{c}") for c in columns]
    )
    differs = F.lit(False)
    for c in columns:
        differs = differs | ~F.col(c).eqNullSafe(F.col(f"_old_{c}"))
    cond = [F.col(k).eqNullSafe(F.col(f"_old_key_{k}")) for k in key]
    joined = new.join(o, cond, "inner")
    return joined.where(differs).drop(*[f"_old_key_{k}" for k in key], *[f"_old_{c}" for c in columns])
