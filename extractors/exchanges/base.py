"""What the shared runner needs from an exchange module, and the small values they exchange.

An exchange module (``binance.py``, ``kucoin.py`` ...) does no I/O. It describes endpoints and
limits, builds the messages and REST requests the runner sends, and classifies what comes back.
The runner (``extractors.runner`` and its parts ``extractors.connection``, ``extractors.discovery``
and ``extractors.gapfill``) does every connect, send, sleep and retry, for all exchanges with one
mechanism. A module satisfies :class:`Connector` simply by defining these names at
module level; mypy checks modules against protocols.

Trade ids: the runner tracks one integer *ordering id* per market (Binance ``t``, Coinbase
``trade_id``, KuCoin ``sequence``). ``CONSECUTIVE_IDS`` says whether a jump of more than one
proves a gap (Binance, Coinbase) or only orders trades (KuCoin).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal, Protocol
from urllib.parse import urlencode

import orjson

from extractors.envelope import Channel

#: Channels a user can ask for; ``markets``/``deadletter``/``gaps`` are produced by the runner.
DATA_CHANNELS: tuple[Channel, ...] = ("ticker", "trades", "l1")

FrameKind = Literal["data", "control", "ack", "error", "reconnect"]


def loads(text: str) -> Any:
    """Parse a frame: orjson (about 3x the stdlib's speed), and the stdlib for what orjson
    refuses but the stdlib reads (``NaN``, a lone surrogate escape), so a frame never becomes a
    dead letter that was data before. Invalid JSON raises ``json.JSONDecodeError`` either way.
    (One difference is kept: an integer beyond 64 bits reads as a float, so such an id is a
    ``bad_field`` dead letter; no venue has ids near 2**63.)"""
    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError:
        return json.loads(text)


class UnknownFrame(ValueError):
    """A frame that is valid JSON but has a shape the connector does not know; goes to dead letters."""


@dataclass(frozen=True, slots=True)
class RestRequest:
    """One REST call. ``weight`` is in the exchange's rate-limit units (1 where it counts requests).

    ``walk`` is never sent: the connector's own note from one gap-fill page to the next, for a
    venue whose cursor is not the trade id (Kraken pages by time and walks back to find the id).
    """

    method: Literal["GET", "POST"]
    path: str
    params: tuple[tuple[str, str], ...] = ()
    weight: int = 1
    walk: str = ""

    @property
    def target(self) -> str:
        """Path plus query string: the ``stream`` of the envelope that lands the response."""
        return f"{self.path}?{urlencode(self.params)}" if self.params else self.path

    def param(self, name: str) -> str | None:
        return next((v for k, v in self.params if k == name), None)


@dataclass(frozen=True, slots=True)
class Candle:
    """One exchange 1-minute candle: its start (ms since the epoch, UTC), base volume as the exact
    decimal text sent, and the trade count where the venue publishes it (Binance only)."""

    start_ms: int
    volume: str
    trade_count: int | None = None


@dataclass(frozen=True, slots=True)
class Market:
    """One instrument from discovery. ``trading`` is false for halted, delisted or disabled ones."""

    native_symbol: str
    base: str
    quote: str
    trading: bool


@dataclass(slots=True, unsafe_hash=True)
class Frame:
    """What a websocket frame is, as far as the runner cares. Treat it as immutable (not
    ``frozen``: a frozen dataclass's ``__init__`` costs 4x a plain one, once per frame).

    ``kind``: ``data`` (land it in ``channel``), ``control`` (count it: pong, welcome, heartbeat,
    subscription list), ``ack`` (a subscribe request was accepted), ``error`` (the exchange
    rejected something; landed as a dead letter), ``reconnect`` (the server announced it will go
    away: reconnect now). ``trade_ids`` are the ordering ids of the trades in a data frame, in
    frame order; ``last_trade_id`` is the exchange's newest trade id announced by a heartbeat.
    """

    kind: FrameKind
    channel: Channel | None = None
    stream: str = ""
    native_symbol: str | None = None
    trade_ids: tuple[int, ...] = ()
    last_trade_id: int | None = None
    detail: str = ""


@dataclass(frozen=True, slots=True)
class Session:
    """How to open one websocket connection, after any bootstrap call (KuCoin's token).

    ``ping_interval_s``: send :func:`Connector.ping_message` this often (``None``: the server pings,
    or a heartbeat channel keeps the link alive). ``await_welcome``: the first frame must be a
    welcome before subscribing.
    """

    url: str
    ping_interval_s: float | None = None
    await_welcome: bool = False


@dataclass(frozen=True, slots=True)
class TradesPage:
    """One parsed gap-fill response.

    ``ids``: ordering ids of the trades on the page. ``next_request``: the page to fetch next, or
    ``None`` when the fill is complete. ``gap``: ``(after_id, before_id)`` when the exchange could
    not return every trade strictly between the two ids (they are lost for good).
    """

    ids: tuple[int, ...]
    next_request: RestRequest | None
    gap: tuple[int, int] | None = None


class Connector(Protocol):
    """The module-level names every exchange module defines."""

    NAME: str
    REST_URL: str
    WS_URL: str
    #: REST budget: weight units per second and the bucket size (burst).
    REST_WEIGHT_PER_S: float
    REST_WEIGHT_BURST: int
    #: Client -> server websocket messages per second (subscribe, ping) kept under the limit.
    WS_MESSAGES_PER_S: float
    #: Markets on one connection (derived from the per-connection stream/topic limit).
    MARKETS_PER_CONNECTION: int
    #: Rotate a connection before the server's forced cut-off.
    MAX_CONNECTION_AGE_S: float
    CONSECUTIVE_IDS: bool
    #: Channels batched per symbol (firehoses whose frames each carry one symbol).
    PER_SYMBOL_BATCH_CHANNELS: frozenset[str]

    def discovery_request(self) -> RestRequest: ...

    def parse_markets(self, body: str) -> list[Market]: ...

    def bootstrap_request(self) -> RestRequest | None: ...

    def session(self, *, ws_url: str, bootstrap_body: str | None, conn_id: str) -> Session: ...

    def subscribe_messages(
        self, markets: Sequence[str], channels: Sequence[Channel], *, firehose: bool
    ) -> list[str]: ...

    def unsubscribe_messages(self, markets: Sequence[str], channels: Sequence[Channel]) -> list[str]: ...

    def ping_message(self, n: int) -> str | None: ...

    def classify(self, text: str) -> Frame: ...

    def recent_trades_request(self, native_symbol: str) -> RestRequest: ...

    def gap_fill_request(self, native_symbol: str, *, after_id: int, until_id: int | None) -> RestRequest: ...

    def parse_trades_page(
        self,
        body: str,
        *,
        request: RestRequest,
        headers: Mapping[str, str],
        after_id: int,
        until_id: int | None,
    ) -> TradesPage: ...

    def l1_poll_request(self, native_symbol: str) -> RestRequest | None: ...

    #: At most this many 1-minute candles per request.
    KLINES_MAX_ROWS: int

    def klines_request(self, native_symbol: str, *, start_ms: int, end_ms: int) -> RestRequest: ...

    def parse_klines(self, body: str) -> list[Candle]: ...


def takes_firehose(*, shard: tuple[int, int], connection_index: int) -> bool:
    """Whether a connection subscribes the all-market ticker firehose (``firehose=True``).

    Exactly one connection across every shard does: the first connection of shard 0. The
    firehose (Binance ``!miniTicker@arr``, KuCoin ``/market/ticker:all``) carries every market
    whatever the shard, and a Binance frame is an array of many symbols that cannot be cut to a
    shard's markets without rewriting the raw payload; so it is taken once rather than filtered
    n times. ``shard`` is ``(index, count)`` as from ``extractors.settings.parse_shard``.
    """
    index, _count = shard
    return index == 0 and connection_index == 0


def as_int(value: Any) -> int:
    """An id that may arrive as a number or a numeric string; ``ValueError`` otherwise."""
    if isinstance(value, bool):
        raise ValueError(f"not an id: {value!r}")
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value.strip().lstrip("-").isdigit():
        return int(value)
    raise ValueError(f"not an id: {value!r}")


def chunks(items: Sequence[str], size: int) -> list[list[str]]:
    return [list(items[i : i + size]) for i in range(0, len(items), size)]
