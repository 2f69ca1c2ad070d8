"""Settings of ``python -m lake.serve`` (YAML section ``serve:``, env ``CRYPTOLAKE_SERVE_<KEY>``)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from lake.config import ConfigError, Secret, load_section, read_yaml
from lake.tables import Lake, LakeSettings

Feed = Literal["auto", "kafka", "landing", "none"]


@dataclass(frozen=True, kw_only=True)
class ServeSettings:
    """The web server.

    ``feed``: where live prices come from: ``kafka`` (the raw topics, section ``kafka:``),
    ``landing`` (the landing sink's staged parts, section ``landing:``), ``none``, or ``auto``:
    ``kafka`` when ``extractors.sinks`` includes it, else ``landing``. ``landing_staging``: the
    folder of staged parts, by default ``<landing.root>/_staging`` (a local landing root) or
    ``landing.staging_dir`` (an S3 root). ``poll_s``: how often the landing tail looks (seconds).
    ``min_interval_s``: a stream client gets at most one message per this interval (what arrives
    meanwhile is conflated to the latest state per market). ``max_pending``: markets pending for one
    client beyond which it is dropped. ``send_timeout_s``: a WebSocket send that takes longer drops
    the client. ``heartbeat_s``: idle streams get a heartbeat this often. ``cache_check_s``: how
    often a table's Delta version is re-read for the REST cache. ``web_dir``: where
    ``make setup`` installed the page's npm packages.
    """

    host: str = "127.0.0.1"
    port: int = 8321
    feed: Feed = "auto"
    landing_staging: str = ""
    poll_s: float = 0.2
    min_interval_s: float = 0.1
    max_pending: int = 10_000
    send_timeout_s: float = 10.0
    heartbeat_s: float = 15.0
    cache_check_s: float = 0.5
    web_dir: str = ".cache/web"

    def __post_init__(self) -> None:
        if self.poll_s <= 0 or self.min_interval_s < 0 or self.heartbeat_s <= 0 or self.max_pending < 1:
            raise ConfigError(
                "serve.poll_s and heartbeat_s must be > 0, min_interval_s >= 0, max_pending >= 1"
            )


@dataclass(frozen=True, kw_only=True)
class StoreSettings:
    """The optional live-update stores (YAML section ``stores:``, env ``CRYPTOLAKE_STORES_<KEY>``).

    Off by default. ``postgres``: upsert the latest ticker/L1 state per market into
    ``live_tickers`` and append every update to ``live_ticker_history``. ``redis``: L1 snapshots
    as ``orderbook:<exchange>:<native symbol>`` hashes plus a sorted set per market
    (``...:quotes``, score = event time in ms) trimmed to ``redis_retention_s`` seconds before the
    market's newest quote and to at most ``redis_max_quotes`` quotes. ``max_queued``: batches
    waiting for one store beyond which new ones are dropped (and counted). Passwords are secrets:
    only from ``CRYPTOLAKE_STORES_POSTGRES_PASSWORD`` / ``CRYPTOLAKE_STORES_REDIS_PASSWORD``
    (``python -m infra.services env`` prints them for the servers ``make infra-up`` starts).
    """

    postgres: bool = False
    postgres_host: str = "127.0.0.1"
    postgres_port: int = 5432
    postgres_database: str = "cryptolake"
    postgres_user: str = "cryptolake"
    postgres_password: Secret | None = None
    redis: bool = False
    redis_host: str = "127.0.0.1"
    redis_port: int = 6379
    redis_db: int = 0
    redis_password: Secret | None = None
    redis_retention_s: float = 3600.0
    redis_max_quotes: int = 100_000
    max_queued: int = 1000

    def __post_init__(self) -> None:
        if self.redis_retention_s <= 0 or self.redis_max_quotes < 0 or self.max_queued < 1:
            raise ConfigError(
                "stores.redis_retention_s must be > 0, redis_max_quotes >= 0 (0: no count bound), "
                "max_queued >= 1"
            )


@dataclass(frozen=True, kw_only=True)
class ServeRuntime:
    """Everything the server reads: its settings, the lake, and where its feed is."""

    serve: ServeSettings
    lake: Lake
    feed: Literal["kafka", "landing", "none"]
    staging: Path | None
    landing_root: Path | None
    kafka_servers: tuple[str, ...] = ()
    kafka_prefix: str = ""
    stores: StoreSettings = field(default_factory=StoreSettings)


def load_serve_runtime(
    config_path: str | None = None, *, overrides: dict[str, Any] | None = None
) -> ServeRuntime:
    from extractors.settings import load_settings
    from extractors.sinks.kafka import KafkaSettings
    from extractors.sinks.landing import LandingSettings, split_s3_root

    config = read_yaml(config_path)
    serve = load_section(ServeSettings, "serve", config=config, overrides=overrides)
    lake = Lake(load_section(LakeSettings, "lake", config=config))
    feed = serve.feed
    if feed == "auto":
        feed = "kafka" if "kafka" in load_settings(config).extractors.sinks else "landing"
    kafka = load_section(KafkaSettings, "kafka", config=config)
    landing = load_section(LandingSettings, "landing", config=config)
    is_s3 = split_s3_root(landing.root) is not None
    staging = Path(
        serve.landing_staging or (landing.staging_dir if is_s3 else str(Path(landing.root) / "_staging"))
    )
    return ServeRuntime(
        serve=serve,
        lake=lake,
        feed=feed,
        staging=staging if feed == "landing" else None,
        landing_root=None if is_s3 else Path(landing.root),
        kafka_servers=kafka.bootstrap_servers,
        kafka_prefix=kafka.topic_prefix,
        stores=load_section(StoreSettings, "stores", config=config),
    )
