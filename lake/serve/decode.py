"""Raw envelopes -> live quotes, and the latest state per market: pure, no I/O.

The extractor already classified every frame with its exchange module's ``classify``
(``extractors/exchanges/<exchange>.py``): an envelope's ``channel`` and ``native_symbol`` are that
result, so nothing here tells control frames from data again. What is left is picking the price
fields out of a data frame, one small function per (exchange, channel), on the frame shapes the
exchange modules document (their ``_on_<channel>`` docstrings). Prices stay the exchange's text
(exact); the USDT conversion uses :class:`decimal.Decimal`.

* :func:`decode_envelope`: one envelope (a dict as in a landing line or a Kafka record) -> the
  :class:`Tick` values it carries (a Binance ``!miniTicker@arr`` frame carries many markets).
* :class:`MarketBook`: markets (native symbol -> canonical ``BASE-QUOTE``, from discovery
  snapshots or ``silver.markets``) and the latest merged state of every market, with its USDT
  price from the live prices of other markets (identity, direct, inverse, or across BTC).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal, InvalidOperation
from typing import Any

from extractors.exchanges import CONNECTORS
from extractors.exchanges.base import loads
from lake.assets import ASSET_ALIASES

#: Channels that carry live prices. REST ``trades`` pages are gap fills of the past: not live.
LIVE_CHANNELS = ("ticker", "trades", "l1")


@dataclass(frozen=True, slots=True)
class Tick:
    """What one frame says about one market; ``None`` where the frame does not say.

    ``event_ts_ms``: the exchange's event time (ms since the epoch), when the frame has one.
    """

    exchange: str
    native_symbol: str
    channel: str
    last: str | None = None
    bid: str | None = None
    bid_size: str | None = None
    ask: str | None = None
    ask_size: str | None = None
    event_ts_ms: int | None = None


def _body(payload: Any) -> Any:
    """The ``data`` member of a Binance combined-stream or KuCoin message, else the payload."""
    return payload.get("data", payload) if isinstance(payload, dict) else payload


def _text(value: Any) -> str | None:
    return None if value is None or isinstance(value, dict | list | bool) else str(value)


def _int(value: Any) -> int | None:
    try:
        return int(value) if value is not None and not isinstance(value, bool) else None
    except (TypeError, ValueError):
        return None


def _iso_ms(value: Any) -> int | None:
    """``2026-01-01T00:00:00.412345Z`` -> ms since the epoch."""
    if not isinstance(value, str):
        return None
    try:
        return int(datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp() * 1000)
    except ValueError:
        return None


def _level(side: Any) -> tuple[str | None, str | None]:
    """``["94210", "0.51"]`` (KuCoin) or ``[["94210.00", "0.41", 3]]`` (Coinbase book) -> (price, size)."""
    if isinstance(side, list) and side and isinstance(side[0], list):
        side = side[0]
    if isinstance(side, list) and len(side) >= 2:
        return _text(side[0]), _text(side[1])
    return None, None


def _binance(channel: str, doc: Any, symbol: str | None, ex: str) -> list[Tick]:
    body = _body(doc)
    items = body if isinstance(body, list) else [body]
    ticks = []
    for d in items:
        if not isinstance(d, dict) or "s" not in d:
            continue
        s = str(d["s"])
        if channel == "ticker":  # 24hrMiniTicker: c last, E event time
            ticks.append(Tick(ex, s, channel, last=_text(d.get("c")), event_ts_ms=_int(d.get("E"))))
        elif channel == "trades":  # trade: p price, T trade time
            ticks.append(Tick(ex, s, channel, last=_text(d.get("p")), event_ts_ms=_int(d.get("T"))))
        elif channel == "l1":  # bookTicker: b/B bid, a/A ask; no event time
            b, bs, a, as_ = (_text(d.get(k)) for k in ("b", "B", "a", "A"))
            ticks.append(Tick(ex, s, channel, bid=b, bid_size=bs, ask=a, ask_size=as_))
    return ticks


def _kucoin(channel: str, doc: Any, symbol: str | None, ex: str) -> list[Tick]:
    d = _body(doc)
    if not isinstance(d, dict):
        return []
    if channel == "ticker":  # price, bestBid/bestBidSize, bestAsk/bestAskSize, time (ms)
        s = symbol or (doc.get("subject") if isinstance(doc, dict) else None)
        if not s:
            return []
        return [
            Tick(
                ex,
                str(s),
                channel,
                last=_text(d.get("price")),
                bid=_text(d.get("bestBid")),
                bid_size=_text(d.get("bestBidSize")),
                ask=_text(d.get("bestAsk")),
                ask_size=_text(d.get("bestAskSize")),
                event_ts_ms=_int(d.get("time")),
            )
        ]
    s = symbol or _text(d.get("symbol"))
    if not s:
        return []
    if channel == "trades":  # match: price, time (ns)
        ns = _int(d.get("time"))
        return [Tick(ex, s, channel, last=_text(d.get("price")), event_ts_ms=ns // 1_000_000 if ns else None)]
    if channel == "l1":  # level1: asks/bids [price, size], timestamp (ms)
        b, bs = _level(d.get("bids"))
        a, as_ = _level(d.get("asks"))
        ts = _int(d.get("timestamp"))
        return [Tick(ex, s, channel, bid=b, bid_size=bs, ask=a, ask_size=as_, event_ts_ms=ts)]
    return []


def _coinbase(channel: str, doc: Any, symbol: str | None, ex: str) -> list[Tick]:
    if not isinstance(doc, dict):
        return []
    s = _text(doc.get("product_id")) or symbol
    if not s:
        return []
    ts = _iso_ms(doc.get("time"))
    if channel == "ticker":  # price, best_bid/_size, best_ask/_size, time
        return [
            Tick(
                ex,
                s,
                channel,
                last=_text(doc.get("price")),
                bid=_text(doc.get("best_bid")),
                bid_size=_text(doc.get("best_bid_size")),
                ask=_text(doc.get("best_ask")),
                ask_size=_text(doc.get("best_ask_size")),
                event_ts_ms=ts,
            )
        ]
    if channel == "trades" and doc.get("type") in ("match", "last_match"):
        return [Tick(ex, s, channel, last=_text(doc.get("price")), event_ts_ms=ts)]
    if channel == "l1":  # REST book?level=1 poll: bids/asks [[price, size, orders]]
        b, bs = _level(doc.get("bids"))
        a, as_ = _level(doc.get("asks"))
        return [Tick(ex, s, channel, bid=b, bid_size=bs, ask=a, ask_size=as_, event_ts_ms=ts)]
    return []


def _kraken(channel: str, doc: Any, symbol: str | None, ex: str) -> list[Tick]:
    """Websocket v2 ``{"channel":…,"type":…,"data":[…]}``; prices are JSON numbers (their shortest
    decimal text here, the same value)."""
    items = doc.get("data") if isinstance(doc, dict) else None
    if not isinstance(items, list):
        return []
    ticks = []
    for d in items:
        s = _text(d.get("symbol")) if isinstance(d, dict) else None
        if not isinstance(d, dict) or not (s or symbol):
            continue
        ts = _iso_ms(d.get("timestamp"))
        if channel == "ticker":  # bid/bid_qty, ask/ask_qty, last, timestamp (may be absent)
            bid, bid_size, ask, ask_size = (_text(d.get(k)) for k in ("bid", "bid_qty", "ask", "ask_qty"))
            last = _text(d.get("last"))
            ticks.append(Tick(ex, s or str(symbol), channel, last, bid, bid_size, ask, ask_size, ts))
        elif channel == "trades":
            ticks.append(Tick(ex, s or str(symbol), channel, last=_text(d.get("price")), event_ts_ms=ts))
    return ticks


def _okx(channel: str, doc: Any, symbol: str | None, ex: str) -> list[Tick]:
    """v5 ``{"arg":{"channel":…,"instId":…},"data":[…]}``: string numbers, ``ts`` in ms; the
    ``bbo-tbt`` items (``l1``) name no symbol: the arg's."""
    arg = doc.get("arg") if isinstance(doc, dict) else None
    items = doc.get("data") if isinstance(doc, dict) else None
    if not isinstance(items, list):
        return []
    s = (_text(arg.get("instId")) if isinstance(arg, dict) else None) or symbol
    ticks = []
    for d in items:
        if not isinstance(d, dict) or not (s or d.get("instId")):
            continue
        name, ts = _text(d.get("instId")) or str(s), _int(d.get("ts"))
        if channel == "ticker":
            bid, bid_size, ask, ask_size = (_text(d.get(k)) for k in ("bidPx", "bidSz", "askPx", "askSz"))
            ticks.append(Tick(ex, name, channel, _text(d.get("last")), bid, bid_size, ask, ask_size, ts))
        elif channel == "trades":
            ticks.append(Tick(ex, name, channel, last=_text(d.get("px")), event_ts_ms=ts))
        elif channel == "l1":
            (b, bs), (a, as_) = _level(d.get("bids")), _level(d.get("asks"))
            ticks.append(Tick(ex, name, channel, bid=b, bid_size=bs, ask=a, ask_size=as_, event_ts_ms=ts))
    return ticks


def _bybit(channel: str, doc: Any, symbol: str | None, ex: str) -> list[Tick]:
    """v5 ``{"topic":…,"ts":…,"data":…}``: ``publicTrade`` items ``{s, p, T}``, ``tickers`` ``{symbol,
    lastPrice}``, ``orderbook.1`` ``{s, b:[[px, sz]], a:[[px, sz]]}``; REST pages give none."""
    if not isinstance(doc, dict) or "topic" not in doc:
        return []
    data, ts = doc.get("data"), _int(doc.get("ts"))
    if channel == "trades" and isinstance(data, list):
        return [
            Tick(ex, str(d.get("s") or symbol), channel, last=_text(d.get("p")), event_ts_ms=_int(d.get("T")))
            for d in data
            if isinstance(d, dict) and (d.get("s") or symbol)
        ]
    if not isinstance(data, dict):
        return []
    s = _text(data.get("symbol") or data.get("s")) or symbol
    if not s:
        return []
    if channel == "ticker":
        return [Tick(ex, s, channel, last=_text(data.get("lastPrice")), event_ts_ms=ts)]
    if channel == "l1":
        bid, ask = (data.get(k) or [[None, None]] for k in ("b", "a"))
        b, bs = (_text(v) for v in bid[0][:2])
        a, as_ = (_text(v) for v in ask[0][:2])
        return [Tick(ex, s, channel, None, b, bs, a, as_, _int(doc.get("cts")) or ts)]
    return []


_DECODERS: dict[str, Callable[[str, Any, str | None, str], list[Tick]]] = {
    "binance": _binance,
    "kucoin": _kucoin,
    "coinbase": _coinbase,
    "kraken": _kraken,
    "okx": _okx,
    "bybit": _bybit,
}


def decode_envelope(envelope: Mapping[str, Any]) -> list[Tick]:
    """The live ticks of one raw envelope; ``[]`` for other channels, REST trade pages, dead
    letters, unknown exchanges and frames without the fields (never raises on bad input)."""
    exchange = envelope.get("exchange")
    channel = envelope.get("channel")
    decoder = _DECODERS.get(str(exchange))
    if decoder is None or channel not in LIVE_CHANNELS or envelope.get("error"):
        return []
    if channel == "trades" and envelope.get("source") != "ws":
        return []
    try:
        doc = loads(str(envelope.get("payload", "")))
    except ValueError:
        return []
    symbol = envelope.get("native_symbol")
    return [t for t in decoder(str(channel), doc, symbol, str(exchange)) if t.native_symbol]


@dataclass(frozen=True, slots=True)
class MarketInfo:
    """A market's canonical names (``symbol`` is ``BASE-QUOTE``, aliases applied)."""

    symbol: str
    base: str
    quote: str


def canonical_asset(code: str) -> str:
    code = code.strip().upper()
    return ASSET_ALIASES.get(code, code)


def markets_from_discovery(envelope: Mapping[str, Any]) -> dict[tuple[str, str], MarketInfo]:
    """A ``markets`` envelope (a discovery snapshot) -> (exchange, native) -> names, parsed by the
    exchange module's own ``parse_markets``; ``{}`` if it cannot be read."""
    exchange = str(envelope.get("exchange"))
    connector = CONNECTORS.get(exchange)
    if connector is None or envelope.get("channel") != "markets" or envelope.get("error"):
        return {}
    try:
        markets = connector.parse_markets(str(envelope.get("payload", "")))
    except (ValueError, KeyError, TypeError):
        return {}
    out = {}
    for m in markets:
        base, quote = canonical_asset(m.base), canonical_asset(m.quote)
        out[(exchange, m.native_symbol)] = MarketInfo(f"{base}-{quote}", base, quote)
    return out


def _dec(text: str | None) -> Decimal | None:
    if text is None:
        return None
    try:
        value = Decimal(text)
    except InvalidOperation:
        return None
    return value if value.is_finite() and value > 0 else None


def _fmt(value: Decimal | None) -> str | None:
    """A USDT value with at most 18 fraction digits (the lake's scale), no exponent."""
    if value is None:
        return None
    return format(value.quantize(Decimal("1e-18")).normalize(), "f")


class MarketBook:
    """Latest merged state of every market seen, and the names of the markets known.

    :meth:`apply` merges a tick into its market's state (a field the tick does not carry keeps
    its previous value) and returns the market's state as a JSON-ready dict. Bounded by the number
    of markets: one entry per (exchange, native symbol).
    """

    def __init__(self, markets: Mapping[tuple[str, str], MarketInfo] | None = None) -> None:
        self.markets: dict[tuple[str, str], MarketInfo] = dict(markets or {})
        self.states: dict[tuple[str, str], dict[str, Any]] = {}
        #: (base, quote) -> the newest price of that pair on any exchange (for USDT rates).
        self._pair_price: dict[tuple[str, str], Decimal] = {}

    def add_markets(self, markets: Mapping[tuple[str, str], MarketInfo]) -> None:
        self.markets.update(markets)

    def usdt_rate(self, asset: str) -> tuple[Decimal | None, str | None]:
        """The asset's price in USDT from live prices, and the method (as in ``silver.usdt_rates``)."""
        if asset == "USDT":
            return Decimal(1), "identity"
        direct = self._pair_price.get((asset, "USDT"))
        if direct is not None:
            return direct, "direct"
        inverse = self._pair_price.get(("USDT", asset))
        if inverse is not None:
            return 1 / inverse, "inverse"
        btc_usdt = self._pair_price.get(("BTC", "USDT"))
        btc_asset = self._pair_price.get(("BTC", asset))
        if btc_usdt is not None and btc_asset is not None:
            return btc_usdt / btc_asset, "cross_btc"
        return None, None

    def apply(self, tick: Tick, *, recv_ts_ns: int) -> dict[str, Any]:
        key = (tick.exchange, tick.native_symbol)
        info = self.markets.get(key)
        state = self.states.get(key)
        if state is None:
            state = {"exchange": tick.exchange, "native_symbol": tick.native_symbol}
            self.states[key] = state
        state["symbol"] = info.symbol if info else None
        state["base"] = info.base if info else None
        state["quote"] = info.quote if info else None
        for name in ("last", "bid", "bid_size", "ask", "ask_size"):
            value = getattr(tick, name)
            if value is not None:
                state[name] = value
        state["channel"] = tick.channel
        state["event_ts_ms"] = tick.event_ts_ms
        state["recv_ts_ns"] = recv_ts_ns
        bid, ask, last = _dec(state.get("bid")), _dec(state.get("ask")), _dec(state.get("last"))
        mid = (bid + ask) / 2 if bid is not None and ask is not None else None
        price = last if tick.last is not None else mid if mid is not None else last
        if info and price is not None:
            self._pair_price[(info.base, info.quote)] = price
        rate, method = self.usdt_rate(info.quote) if info else (None, None)
        state["last_usdt"] = _fmt(last * rate) if last is not None and rate is not None else None
        state["mid_usdt"] = _fmt(mid * rate) if mid is not None and rate is not None else None
        state["usdt_method"] = method
        return dict(state)

    def apply_envelope(self, envelope: Mapping[str, Any]) -> list[dict[str, Any]]:
        """Learn markets from a discovery snapshot, or apply the envelope's ticks; the new states."""
        if envelope.get("channel") == "markets":
            self.add_markets(markets_from_discovery(envelope))
            return []
        recv = int(envelope.get("recv_ts_ns") or 0)
        return [self.apply(t, recv_ts_ns=recv) for t in decode_envelope(envelope)]

    def apply_all(self, envelopes: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
        return [state for e in envelopes for state in self.apply_envelope(e)]
