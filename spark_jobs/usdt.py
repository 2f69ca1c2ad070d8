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

import threading
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from decimal import ROUND_HALF_UP, Context, Decimal

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from lake.delta_io import dedupe_first
from lake.tables import PRICE, SILVER_USDT_RATES
from spark_jobs.columns import PRICE_INT_DIGITS, RATE_INT_DIGITS, minute_of, mul

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
    """Silver-shaped trades -> the last trade of each ``(base, quote, minute)``, with what orders it.

    Columns: base, quote, minute, price, event_ts, recv_ts, exchange, trade_id (see :class:`RateBook`
    for the order, which is the same here).
    """
    order = (
        F.col("event_ts").desc(),
        F.col("recv_ts").desc(),
        F.col("exchange").asc(),
        F.length("trade_id").desc(),
        F.col("trade_id").desc(),
    )
    minutes = trades.select(
        "base", "quote", "exchange", "trade_id", "price", "event_ts", "recv_ts"
    ).withColumn("minute", minute_of("event_ts"))
    return dedupe_first(minutes, ("base", "quote", "minute"), order).select(
        "base", "quote", "minute", "price", "event_ts", "recv_ts", "exchange", "trade_id"
    )


# --- the rate book: rates computed on the driver from a few hundred last prices per minute ------

_Q18 = Decimal(1).scaleb(-18)
_EXACT = Context(prec=120, rounding=ROUND_HALF_UP)


def _fits(x: Decimal, int_digits: int) -> bool:
    return abs(x) < Decimal(10) ** int_digits


def _quantize(x: Decimal) -> Decimal | None:
    """``x`` as a ``DECIMAL(38,18)`` value, half-up, or ``None`` where Spark's cast overflows."""
    r = x.quantize(_Q18, rounding=ROUND_HALF_UP, context=_EXACT)
    return r if _fits(r, 20) else None


def dec_mul(
    a: Decimal, b: Decimal, *, a_int: int = PRICE_INT_DIGITS, b_int: int = RATE_INT_DIGITS
) -> Decimal | None:
    """:func:`spark_jobs.columns.mul` in Python decimals: the same bounds and rounding."""
    if not (_fits(a, a_int) and _fits(b, b_int)):
        return None
    return _quantize(_EXACT.multiply(a, b))


def dec_inverse(x: Decimal) -> Decimal | None:
    """:func:`spark_jobs.columns.inverse` in Python decimals (``None`` for 0)."""
    return None if x == 0 else _quantize(_EXACT.divide(Decimal(1), x))


class _Desc(str):
    """A string that sorts backwards (the exchange name breaks ties ascending: see :class:`RateBook`)."""

    __slots__ = ()

    def __lt__(self, other: str) -> bool:  # type: ignore[override]
        return str.__gt__(self, other)

    def __gt__(self, other: str) -> bool:  # type: ignore[override]
        return str.__lt__(self, other)


Recency = tuple[int, int, _Desc, int, str]
Rate = tuple[Decimal, str]


def recency(event_us: int, recv_us: int, exchange: str, trade_id: str) -> Recency:
    """Which of two trades is the later one: event time, receive time (epoch µs), exchange, trade id."""
    return (event_us, recv_us, _Desc(exchange), len(trade_id), trade_id)


class RateBook:
    """The last trade price of every market in every minute, and the USDT rates they give.

    Pure state on the driver (no Spark, no clock): each micro-batch hands in the last trade of
    each ``(base, quote, minute)`` it holds (:func:`market_prices`, a few hundred rows) and gets back
    the rates of the minutes it touched. Minutes are epoch seconds (UTC, whole minutes). A minute
    the book has never seen must be loaded first from the stored trades (:meth:`knows`), so the
    book is rebuilt from silver itself after a restart.
    Minutes older than ``keep_minutes`` behind the newest are forgotten and reloaded if touched.
    Safe to share between the stream's thread and the re-pricer's (one lock).
    """

    def __init__(self, *, keep_minutes: int = 180) -> None:
        self._lock = threading.RLock()
        self._keep = keep_minutes
        self._last: dict[int, dict[tuple[str, str], tuple[Recency, Decimal]]] = {}
        #: What was last written to ``silver.usdt_rates``: (asset, minute) -> (rate, method).
        self.written: dict[tuple[str, datetime], Rate] = {}

    def knows(self, minute: int) -> bool:
        with self._lock:
            return minute in self._last

    def observe(self, base: str, quote: str, minute: int, when: Recency, price: Decimal) -> None:
        with self._lock:
            markets = self._last.setdefault(minute, {})
            seen = markets.get((base, quote))
            if seen is None or when > seen[0]:
                markets[(base, quote)] = (when, price)

    def mark_known(self, minute: int) -> None:
        """A minute loaded from storage that had no trades is known (and empty) all the same."""
        with self._lock:
            self._last.setdefault(minute, {})

    def forget_before(self, minute: int) -> None:
        with self._lock:
            for m in [m for m in self._last if m < minute]:
                del self._last[m]

    def trim(self) -> None:
        with self._lock:
            if self._last:
                oldest = max(self._last) - self._keep * 60
                self.forget_before(oldest)
                self.written = {k: v for k, v in self.written.items() if k[1].timestamp() >= oldest}

    def rates(self, minute: int) -> dict[str, Rate]:
        """Asset -> (rate to USDT, method) in ``minute``: the first method that applies (module doc)."""
        with self._lock:
            prices = {market: price for market, (_, price) in self._last.get(minute, {}).items()}
        if not prices:
            return {}
        best: dict[str, Rate] = {USDT: (Decimal(1), "identity")}

        def offer(asset: str, rate: Decimal | None, method: str) -> None:
            if rate is None or rate <= 0:
                return
            old = best.get(asset)
            if old is None or METHODS.index(method) < METHODS.index(old[1]):
                best[asset] = (rate, method)

        for (base, quote), price in prices.items():
            if quote == USDT and base != USDT:
                offer(base, _quantize(price), "direct")
            if base == USDT and quote != USDT:
                offer(quote, dec_inverse(price), "inverse")
        first = dict(best)
        for hop in HOP_ASSETS:
            found = first.get(hop)
            if found is None or found[1] not in ("direct", "inverse"):
                continue
            hop_rate, method = found[0], f"cross_{hop.lower()}"
            for (base, quote), price in prices.items():
                if quote == hop and base not in (USDT, hop):
                    offer(base, dec_mul(price, hop_rate), method)
                if base == hop and quote not in (USDT, hop):
                    inv = dec_inverse(price)
                    offer(quote, None if inv is None else dec_mul(hop_rate, inv, a_int=7, b_int=12), method)
        return best


def observe_prices(book: RateBook, prices: DataFrame) -> None:
    """Hand the rows of :func:`market_prices` (collected: one per market and minute) to the book."""
    for r in prices.select(
        "base",
        "quote",
        F.unix_timestamp("minute").alias("minute_s"),
        "price",
        F.unix_micros("event_ts").alias("event_us"),
        F.unix_micros("recv_ts").alias("recv_us"),
        "exchange",
        "trade_id",
    ).collect():
        when = recency(r["event_us"], r["recv_us"], r["exchange"], r["trade_id"])
        book.observe(r["base"], r["quote"], r["minute_s"], when, r["price"])


RateRow = tuple[str, datetime, Decimal, str]


def rate_rows(book: RateBook, minutes: Sequence[int]) -> list[RateRow]:
    """``silver.usdt_rates`` rows (asset, minute as a UTC datetime, rate_to_usdt, method)."""
    return [
        (asset, datetime.fromtimestamp(m, tz=UTC), rate, method)
        for m in minutes
        for asset, (rate, method) in sorted(book.rates(m).items())
    ]


def rates_frame(spark: SparkSession, rows: Sequence[RateRow]) -> DataFrame:
    """Rate rows as a (small) DataFrame with the ``silver.usdt_rates`` schema."""
    return spark.createDataFrame(list(rows), SILVER_USDT_RATES.schema)


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
        method = F.when(F.col("_r_minute") == F.col("_minute"), F.col("_r_method")).otherwise(
            F.concat(F.col("_r_method"), F.lit(CARRIED))
        )
        return (
            dedupe_first(joined, key, (F.col("_r_minute").desc_nulls_last(),))
            .withColumn("usdt_rate", F.col("_r_rate"))
            .withColumn("usdt_method", method)
            .drop("_minute", "_r_asset", "_r_minute", "_r_rate", "_r_method")
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
