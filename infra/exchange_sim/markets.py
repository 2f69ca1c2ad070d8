"""Seeded market universe, one shared USD random walk per asset, and trade/quote generation.

Everything here is exchange-neutral and does no I/O. Prices and sizes are kept as integers in
units of the market's tick (``10**-price_decimals``) and step (``10**-size_decimals``), so the
decimal strings sent on the wire are exact and never pass through a float.
"""

from __future__ import annotations

import math
import random
import string
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:
    from infra.exchange_sim.faults import BadTradeKind

Side = Literal["buy", "sell"]
Status = Literal["trading", "halted", "delisted"]

#: Starting USD prices of the named assets; synthetic assets get a seeded price.
USD_PRICES: dict[str, float] = {
    "BTC": 60000.0,
    "ETH": 3000.0,
    "SOL": 150.0,
    "BNB": 580.0,
    "XRP": 0.6,
    "DOGE": 0.15,
    "ADA": 0.45,
    "LTC": 80.0,
    "LINK": 14.0,
    "DOT": 6.5,
    "AVAX": 28.0,
    "XMR": 160.0,
    "KCS": 9.0,
    "TRX": 0.12,
    "ATOM": 7.0,
    "XLM": 0.1,
    "USDT": 1.0,
    "USDC": 1.0,
    "USD": 1.0,
    "EUR": 1.08,
}

#: Per-step volatility of the random walk in log terms (one step = ``STEP_S`` seconds).
DEFAULT_VOL = 3e-4
PEGGED_VOL: dict[str, float] = {"USD": 0.0, "USDT": 2e-5, "USDC": 2e-5, "EUR": 1e-4}
STEP_S = 0.1

#: The first markets of each exchange, in order: ``--symbols N`` keeps the first N (then adds
#: synthetic ones). The early ones are shared across exchanges; ``XMR-BTC`` (Binance, KuCoin)
#: and ``BTC-EUR`` (Coinbase) have a quote other than USDT with no direct USDT pair there.
CORE_PAIRS: dict[str, tuple[tuple[str, str], ...]] = {
    "binance": (
        ("BTC", "USDT"),
        ("ETH", "USDT"),
        ("ETH", "BTC"),
        ("USDC", "USDT"),
        ("XMR", "BTC"),
        ("SOL", "USDT"),
        ("BNB", "USDT"),
        ("XRP", "USDT"),
        ("DOGE", "USDT"),
        ("ADA", "USDT"),
        ("LTC", "USDT"),
        ("LINK", "USDT"),
        ("DOT", "USDT"),
        ("AVAX", "USDT"),
        ("SOL", "BTC"),
        ("BNB", "BTC"),
        ("TRX", "USDT"),
        ("ATOM", "USDT"),
    ),
    "kucoin": (
        ("BTC", "USDT"),
        ("ETH", "USDT"),
        ("ETH", "BTC"),
        ("USDC", "USDT"),
        ("XMR", "BTC"),
        ("KCS", "USDT"),
        ("SOL", "USDT"),
        ("XRP", "USDT"),
        ("DOGE", "USDT"),
        ("ADA", "USDT"),
        ("LTC", "USDT"),
        ("LINK", "USDT"),
        ("DOT", "USDT"),
        ("AVAX", "USDT"),
        ("KCS", "BTC"),
        ("TRX", "USDT"),
        ("ATOM", "USDT"),
        ("XLM", "USDT"),
    ),
    "coinbase": (
        ("BTC", "USD"),
        ("ETH", "USD"),
        ("ETH", "BTC"),
        ("USDT", "USD"),
        ("BTC", "EUR"),
        ("BTC", "USDT"),
        ("ETH", "USDT"),
        ("SOL", "USD"),
        ("XRP", "USD"),
        ("DOGE", "USD"),
        ("ADA", "USD"),
        ("LTC", "USD"),
        ("LINK", "USD"),
        ("DOT", "USD"),
        ("AVAX", "USD"),
        ("ETH", "EUR"),
        ("SOL", "USDT"),
        ("XLM", "USD"),
    ),
    "kraken": (
        ("BTC", "USD"),
        ("ETH", "USD"),
        ("ETH", "BTC"),
        ("USDT", "USD"),
        ("BTC", "EUR"),
        ("DOGE", "USD"),
        ("BTC", "USDT"),
        ("SOL", "USD"),
        ("XRP", "USD"),
        ("ADA", "USD"),
        ("LTC", "USD"),
        ("DOGE", "BTC"),
        ("DOT", "USD"),
        ("LINK", "USD"),
        ("ETH", "EUR"),
        ("XLM", "USD"),
    ),
    "okx": (("BTC", "USDT"), ("ETH", "USDT"), ("ETH", "BTC"), ("USDC", "USDT"), ("SOL", "USDT")),
    "bybit": (
        ("BTC", "USDT"),
        ("ETH", "USDT"),
        ("ETH", "BTC"),
        ("USDC", "USDT"),
        ("SOL", "USDT"),
        ("XRP", "USDT"),
    ),
}
SYNTHETIC_QUOTE: dict[str, str] = {
    "binance": "USDT",
    "kucoin": "USDT",
    "coinbase": "USD",
    "kraken": "USD",
    "okx": "USDT",
    "bybit": "USDT",
}


def fmt_units(units: int, decimals: int) -> str:
    """Render ``units * 10**-decimals`` as a plain decimal string with exactly ``decimals`` places."""
    if decimals <= 0:
        return str(units)
    digits = str(abs(units)).rjust(decimals + 1, "0")
    sign = "-" if units < 0 else ""
    return f"{sign}{digits[:-decimals]}.{digits[-decimals:]}"


def price_decimals_for(price: float) -> int:
    """Tick precision: about six significant digits, between 2 and 8 decimals."""
    return min(8, max(2, 5 - math.floor(math.log10(price))))


def size_decimals_for(price_usd: float) -> int:
    """Step precision: one step is worth about 0.001 USD or less, with 0 to 8 decimals."""
    return min(8, max(0, 3 + math.floor(math.log10(max(price_usd, 1e-9)))))


def synthetic_assets(seed: int, count: int) -> list[str]:
    """``count`` distinct made-up tickers, the same for every exchange given the seed."""
    rng = random.Random(f"assets-{seed}")
    taken = set(USD_PRICES)
    out: list[str] = []
    while len(out) < count:
        name = "".join(rng.choice(string.ascii_uppercase) for _ in range(rng.randint(3, 5)))
        if name not in taken:
            taken.add(name)
            out.append(name)
    return out


def universe(exchange: str, count: int, seed: int) -> list[tuple[str, str]]:
    """The (base, quote) pairs an exchange lists at start: core pairs first, then synthetic."""
    core = list(CORE_PAIRS[exchange][:count])
    extra = synthetic_assets(seed, max(0, count - len(core)))
    return core + [(base, SYNTHETIC_QUOTE[exchange]) for base in extra]


class PriceOracle:
    """One geometric random walk per asset in USD, shared by all exchanges.

    The walk advances in steps of ``STEP_S`` seconds of wall time, lazily when read, with its
    own seeded generator per asset; cross prices are ratios of two walks, so the same asset
    moves together everywhere.
    """

    def __init__(self, seed: int, *, clock: Callable[[], float] = time.time) -> None:
        self._seed = seed
        self._clock = clock
        self._state: dict[str, tuple[int, float, random.Random]] = {}

    def add_asset(self, asset: str, usd: float | None = None) -> None:
        if asset in self._state:
            return
        rng = random.Random(f"walk-{self._seed}-{asset}")
        start = usd if usd is not None else USD_PRICES.get(asset, math.exp(rng.uniform(-3.0, 6.0)))
        self._state[asset] = (self._bucket(), start, rng)

    def _bucket(self) -> int:
        return int(self._clock() / STEP_S)

    def usd(self, asset: str) -> float:
        """Current USD price of ``asset`` (registering it on first use)."""
        if asset not in self._state:
            self.add_asset(asset)
        bucket, value, rng = self._state[asset]
        now = self._bucket()
        if now > bucket:
            vol = PEGGED_VOL.get(asset, DEFAULT_VOL)
            steps = now - bucket
            value *= math.exp(vol * math.sqrt(steps) * rng.gauss(0.0, 1.0))
            if asset in PEGGED_VOL:  # pegged assets mean-revert to their start
                anchor = USD_PRICES.get(asset, 1.0)
                value = anchor + (value - anchor) * 0.9
            self._state[asset] = (now, value, rng)
        return value

    def price(self, base: str, quote: str) -> float:
        return self.usd(base) / self.usd(quote)


@dataclass(frozen=True, slots=True)
class Trade:
    """One generated trade. ``price``/``size`` are in tick/step units; ``side`` is the taker side.

    ``trade_id`` is the exchange's id (Binance ``t``, KuCoin ``tradeId``, Coinbase ``trade_id``);
    ``agg_id`` the Binance aggTrade id (one agg per trade here); ``seq`` the exchange's sequence
    number (KuCoin ``sequence`` equals ``tradeId``; Coinbase per-product ``sequence``).
    """

    native: str
    trade_id: int
    agg_id: int
    seq: int
    price: int
    size: int
    side: Side
    ts_us: int


@dataclass(slots=True)
class Market:
    """One listed market on one exchange and its live state (book top, 24 h stats, history)."""

    exchange: str
    native: str
    base: str
    quote: str
    price_decimals: int
    size_decimals: int
    status: Status = "trading"
    bid: int = 0
    ask: int = 0
    bid_size: int = 0
    ask_size: int = 0
    book_seq: int = 0
    book_ts_us: int = 0
    open_price: int = 0
    high: int = 0
    low: int = 0
    volume: int = 0
    quote_volume: int = 0
    trade_count: int = 0
    next_trade_id: int = 1
    next_agg_id: int = 1
    seq: int = 1
    last_ts_us: int = 0
    changed: bool = False
    history: list[Trade] = field(default_factory=list)

    @property
    def symbol(self) -> str:
        return f"{self.base}-{self.quote}"

    def fmt_price(self, units: int) -> str:
        return fmt_units(units, self.price_decimals)

    def fmt_size(self, units: int) -> str:
        return fmt_units(units, self.size_decimals)

    def fmt_quote_volume(self) -> str:
        return fmt_units(self.quote_volume, self.price_decimals + self.size_decimals)

    @property
    def last(self) -> Trade | None:
        return self.history[-1] if self.history else None


def new_market(
    exchange: str,
    native: str,
    base: str,
    quote: str,
    oracle: PriceOracle,
    rng: random.Random,
    *,
    first_ids: tuple[int, int, int],
) -> Market:
    """A market with precisions from its current price, an initial book and seeded 24 h stats."""
    px = oracle.price(base, quote)
    market = Market(
        exchange=exchange,
        native=native,
        base=base,
        quote=quote,
        price_decimals=price_decimals_for(px),
        size_decimals=size_decimals_for(oracle.usd(base)),
        next_trade_id=first_ids[0],
        next_agg_id=first_ids[1],
        seq=first_ids[2],
    )
    requote(market, oracle, rng, now_us())
    mid = (market.bid + market.ask) // 2
    market.open_price = market.high = market.low = mid
    market.volume = int(rng.uniform(1e3, 1e5) * 10**market.size_decimals / max(oracle.usd(base), 1e-9))
    market.quote_volume = market.volume * mid
    return market


def now_us() -> int:
    return time.time_ns() // 1000


@dataclass(frozen=True, slots=True)
class SimClock:
    """The time stamped on generated trades: ``speed`` times the wall clock, ``lag_s`` behind it at
    ``origin`` (1.0 and 0: real time). A fast clock lets a test see whole minutes (and their
    exchange candles) close in seconds; the lag keeps those trade times in the past."""

    speed: float = 1.0
    lag_s: float = 0.0
    origin: float = field(default_factory=time.time)

    def now(self) -> float:
        """Simulated seconds since the epoch."""
        if self.speed == 1.0 and self.lag_s == 0.0:
            return time.time()
        return self.origin - self.lag_s + (time.time() - self.origin) * self.speed

    def now_us(self) -> int:
        return int(self.now() * 1_000_000)


def requote(market: Market, oracle: PriceOracle, rng: random.Random, ts_us: int) -> None:
    """Move the book top to the oracle mid with a 1-10 bp spread; always ``bid < ask``."""
    tick = 10.0**-market.price_decimals
    mid = oracle.price(market.base, market.quote) / tick
    spread = max(1, round(mid * rng.uniform(1e-4, 1e-3)))
    market.bid = max(1, int(mid) - spread // 2)
    market.ask = market.bid + spread
    market.bid_size = _random_size(market, oracle, rng)
    market.ask_size = _random_size(market, oracle, rng)
    market.book_seq += rng.randint(1, 7)
    market.book_ts_us = ts_us


def _random_size(market: Market, oracle: PriceOracle, rng: random.Random) -> int:
    """A plausible size: notional log-normal around ~100 USD, at least one step."""
    notional_usd = math.exp(rng.gauss(4.5, 1.4))
    units = notional_usd / max(oracle.usd(market.base), 1e-12) * 10**market.size_decimals
    return max(1, int(units))


#: How far ahead a ``future_ts`` bad trade is stamped: beyond any clock-skew allowance.
FUTURE_TS_US = 3_600 * 1_000_000


def spoil(trade: Trade, kind: BadTradeKind) -> Trade:
    """The trade made bad the way the ``bad_trade`` fault asks (its id and side stay)."""
    if kind == "negative_price":
        return replace(trade, price=-trade.price)
    if kind == "zero_size":
        return replace(trade, size=0)
    return replace(trade, ts_us=trade.ts_us + FUTURE_TS_US)


def make_trade(
    market: Market,
    oracle: PriceOracle,
    rng: random.Random,
    ts_us: int,
    *,
    id_step: Callable[[random.Random], int],
) -> Trade:
    """Generate the next trade on ``market`` at the current book, update its state, keep it.

    A taker buy lifts the ask, a taker sell hits the bid; ids strictly increase per market by
    ``id_step(rng)`` (1 for exchanges with consecutive ids).
    """
    side: Side = "buy" if rng.random() < 0.5 else "sell"
    price = market.ask if side == "buy" else market.bid
    size = _random_size(market, oracle, rng)
    ts = max(ts_us, market.last_ts_us)
    trade = Trade(
        native=market.native,
        trade_id=market.next_trade_id,
        agg_id=market.next_agg_id,
        seq=market.seq,
        price=price,
        size=size,
        side=side,
        ts_us=ts,
    )
    market.next_trade_id += id_step(rng)
    market.next_agg_id += 1
    market.seq += rng.randint(1, 4)
    market.last_ts_us = ts
    market.high = max(market.high, price)
    market.low = min(market.low, price)
    market.volume += size
    market.quote_volume += price * size
    market.trade_count += 1
    market.changed = True
    market.history.append(trade)
    return trade
