"""Extractor settings: the ``extractors:`` section of the config file plus the environment.

Common keys sit directly under ``extractors:``; each exchange has an optional sub-mapping
(``extractors: {binance: {rest_url: ...}}``). Environment variables: ``CRYPTOLAKE_EXTRACTORS_<KEY>``
for common keys and ``CRYPTOLAKE_EXTRACTORS_<EXCHANGE>_<KEY>`` for per-exchange ones. Every key is
documented in ``config.example.yaml``.
"""

from __future__ import annotations

import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from extractors.envelope import Channel
from extractors.exchanges import CONNECTORS
from extractors.exchanges.base import DATA_CHANNELS, Connector, Market
from lake.config import ConfigError, load_section


@dataclass(frozen=True, kw_only=True)
class ExtractorSettings:
    """Settings shared by every exchange of one extractor process. Times are seconds."""

    exchanges: tuple[str, ...] = ("binance", "kucoin", "coinbase")
    channels: tuple[str, ...] = DATA_CHANNELS
    sinks: tuple[str, ...] = ("landing",)
    #: ``i/n``: this process takes the markets whose stable hash mod n is i.
    shard: str = "0/1"
    batch_max_envelopes: int = 100
    batch_max_age_s: float = 1.0
    #: No frame at all on a connection for this long: reconnect (and gap-fill).
    stale_after_s: float = 30.0
    backoff_initial_s: float = 0.5
    backoff_max_s: float = 30.0
    #: A connection that lived this long resets the backoff.
    healthy_after_s: float = 60.0
    connect_timeout_s: float = 10.0
    #: Wait this long for subscribe acks before gap-filling anyway.
    subscribe_timeout_s: float = 5.0
    rediscover_interval_s: float = 300.0
    #: A market without data for this long counts as stale and triggers an early rediscovery.
    market_quiet_after_s: float = 300.0
    #: Exchanges with an L1 poller (Coinbase): poll markets without a tick for this long; 0 = off.
    l1_poll_interval_s: float = 10.0
    #: Fetch each closed minute's exchange candle of every market (channel ``klines``), this long
    #: after the minute closed, using at most ``klines_rest_share`` of the exchange's REST rate.
    klines: bool = True
    klines_delay_s: float = 120.0
    klines_rest_share: float = 0.25
    #: Bigger frames go to dead letters (truncated); the connection stays up.
    max_frame_bytes: int = 1_048_576
    rest_timeout_s: float = 10.0
    rest_max_attempts: int = 6
    #: A sink failure is retried with backoff for this long, then the process fails.
    sink_retry_s: float = 30.0
    #: Batches waiting for the sinks before websocket reading pauses (bounds memory and the
    #: flush at shutdown; the exchange then holds the backlog, and gap fill covers a drop).
    max_pending_batches: int = 256
    #: SIGINT/SIGTERM: time allowed to finish gap fills and flush every buffer.
    shutdown_timeout_s: float = 5.0
    #: Folder of the crash-safe resume state: one file per exchange and shard
    #: (``<state_dir>/<exchange>-shard-<i>-of-<n>.json``) with each market's last durable trade id.
    state_dir: str = "extractor-state"
    #: The resume state is rewritten this often when it moved (and at shutdown).
    state_interval_s: float = 1.0
    #: Put every sink behind a bounded disk spool (section ``spool:``) so outages replay in order.
    spool: bool = True
    metrics_port: int = 0
    metrics_host: str = "0.0.0.0"
    log_level: str = "INFO"
    log_format: Literal["json", "text"] = "json"


@dataclass(frozen=True, kw_only=True)
class ExchangeSettings:
    """Per-exchange settings. Empty/zero values mean the exchange module's default."""

    rest_url: str = ""
    #: KuCoin: empty uses the endpoint from the bullet-public token response.
    ws_url: str = ""
    #: Native symbols to extract (e.g. BTCUSDT, BTC-USDT); empty = every trading market.
    markets: tuple[str, ...] = ()
    #: Keep only markets with these quote assets (e.g. USDT,USDC); empty = all.
    quote_assets: tuple[str, ...] = ()
    #: At most this many markets (after filters and sharding, alphabetical); 0 = no limit.
    max_markets: int = 0
    markets_per_connection: int = 0
    rest_weight_per_s: float = 0.0


@dataclass(frozen=True, kw_only=True)
class Settings:
    extractors: ExtractorSettings
    exchanges: Mapping[str, ExchangeSettings] = field(default_factory=dict)

    @property
    def channels(self) -> tuple[Channel, ...]:
        return tuple(c for c in DATA_CHANNELS if c in self.extractors.channels)

    def exchange(self, name: str) -> ExchangeSettings:
        return self.exchanges.get(name) or ExchangeSettings()


def load_settings(
    config: Mapping[str, Any] | None = None,
    *,
    environ: Mapping[str, str] | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> Settings:
    """Build and validate :class:`Settings`; raises :class:`ConfigError` naming a bad key."""
    section = dict((config or {}).get("extractors") or {})
    nested = {name: section.pop(name) for name in list(section) if name in CONNECTORS}
    common = load_section(
        ExtractorSettings, "extractors", config={"extractors": section}, environ=environ, overrides=overrides
    )
    exchanges = {
        name: load_section(
            ExchangeSettings,
            f"extractors_{name}",
            config={f"extractors_{name}": nested.get(name) or {}},
            environ=environ,
        )
        for name in CONNECTORS
    }
    settings = Settings(extractors=common, exchanges=exchanges)
    validate(settings)
    return settings


def validate(settings: Settings) -> None:
    ext = settings.extractors
    unknown = [e for e in ext.exchanges if e not in CONNECTORS]
    if unknown:
        raise ConfigError(f"extractors.exchanges: unknown {unknown}; supported: {sorted(CONNECTORS)}")
    bad_channels = [c for c in ext.channels if c not in DATA_CHANNELS]
    if bad_channels or not ext.channels:
        raise ConfigError(f"extractors.channels must be a non-empty subset of {list(DATA_CHANNELS)}")
    parse_shard(ext.shard)
    if ext.batch_max_envelopes < 1 or ext.batch_max_age_s <= 0:
        raise ConfigError("extractors.batch_max_envelopes must be >= 1 and batch_max_age_s > 0")
    if ext.max_pending_batches < 1:
        raise ConfigError("extractors.max_pending_batches must be >= 1 (default 256)")
    if not ext.state_dir or ext.state_interval_s <= 0:
        raise ConfigError("extractors.state_dir must be a folder and state_interval_s > 0")
    if ext.klines_delay_s < 0 or not 0 < ext.klines_rest_share <= 1:
        raise ConfigError("extractors.klines_delay_s must be >= 0 and 0 < klines_rest_share <= 1")
    if ext.backoff_initial_s <= 0 or ext.backoff_max_s < ext.backoff_initial_s:
        raise ConfigError("extractors.backoff_initial_s must be > 0 and <= backoff_max_s")


def parse_shard(text: str) -> tuple[int, int]:
    """``"i/n"`` with ``0 <= i < n``."""
    try:
        index_text, count_text = text.split("/")
        index, count = int(index_text), int(count_text)
    except ValueError:
        raise ConfigError(f"shard {text!r} must look like i/n, e.g. 0/2") from None
    if count < 1 or not 0 <= index < count:
        raise ConfigError(f"shard {text!r} needs 0 <= i < n")
    return index, count


def shard_of(native_symbol: str, count: int) -> int:
    """Stable across processes, machines and Python versions (unlike ``hash()``)."""
    return zlib.crc32(native_symbol.encode()) % count


def select_markets(
    markets: Sequence[Market], settings: ExchangeSettings, *, shard: tuple[int, int]
) -> list[str]:
    """Trading markets after the configured list, quote filter, shard and cap; sorted, unique."""
    wanted = set(settings.markets)
    quotes = {q.upper() for q in settings.quote_assets}
    index, count = shard
    chosen = sorted(
        {
            m.native_symbol
            for m in markets
            if m.trading
            and (not wanted or m.native_symbol in wanted)
            and (not quotes or m.quote.upper() in quotes)
            and shard_of(m.native_symbol, count) == index
        }
    )
    return chosen[: settings.max_markets] if settings.max_markets else chosen


def urls(connector: Connector, settings: ExchangeSettings) -> tuple[str, str]:
    """(REST base, websocket base) from settings or the module's defaults."""
    return (settings.rest_url or connector.REST_URL).rstrip("/"), settings.ws_url or connector.WS_URL
