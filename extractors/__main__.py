"""``python -m extractors run``: extract every configured exchange into the configured sinks.

(``python -m extractors new-exchange NAME`` writes the skeleton of a new venue instead: see
:mod:`extractors.scaffold`.)

Settings come from the ``extractors:`` section of ``--config`` (see config.example.yaml) and from
``CRYPTOLAKE_EXTRACTORS_<KEY>`` / ``CRYPTOLAKE_EXTRACTORS_<EXCHANGE>_<KEY>`` environment variables;
the flags below override both. Sinks read their own sections (``landing:``, ``kafka:``,
``spool:``). SIGINT/SIGTERM flush every buffer and exit 0. Exit codes: 0 stopped cleanly,
1 failed, 2 bad configuration.

Common settings (extractors.<key>): exchanges, channels, sinks, shard, batch_max_envelopes,
batch_max_age_s, stale_after_s, backoff_initial_s, backoff_max_s, rediscover_interval_s,
market_quiet_after_s, l1_poll_interval_s, max_frame_bytes, max_pending_batches,
shutdown_timeout_s, state_dir, state_interval_s, metrics_port, log_level, log_format, spool.
The resume state (each market's last durable trade id, per exchange and shard) lives in
state_dir; a restart fills every market from it over REST. Per exchange
(extractors.<exchange>.<key>): rest_url, ws_url, markets, quote_assets, max_markets,
markets_per_connection, rest_weight_per_s.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import json
import logging
import signal
import sys
import time
from collections.abc import Mapping, Sequence
from typing import Any

from prometheus_client import REGISTRY

from extractors.metrics import Metrics
from extractors.runner import Extractor
from extractors.settings import Settings, load_settings
from extractors.shutdown import ShutdownBudget
from extractors.sinks import close_all, leaf_errors
from extractors.sinks.base import Sink
from lake.config import ConfigError, load_section, read_yaml

logger = logging.getLogger("extractors")


def build_sinks(settings: Settings, config: Mapping[str, Any]) -> list[Sink]:
    """The sinks named in ``extractors.sinks``, each behind a disk spool unless ``spool`` is off."""
    sinks: list[Sink] = []
    for name in settings.extractors.sinks:
        inner: Sink
        if name == "landing":
            from extractors.sinks.landing import LandingSettings, LandingSink

            inner = LandingSink(load_section(LandingSettings, "landing", config=config))
        elif name == "kafka":
            kafka = importlib.import_module("extractors.sinks.kafka")
            inner = kafka.KafkaSink(load_section(kafka.KafkaSettings, "kafka", config=config))
        else:
            raise ConfigError(f"extractors.sinks: unknown sink {name!r}; known: landing, kafka")
        if settings.extractors.spool:
            from extractors.sinks.spool import SpooledSink, SpoolSettings

            inner = SpooledSink(inner, load_section(SpoolSettings, "spool", config=config))
        sinks.append(inner)
    return sinks


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, and exchange/conn_id when given."""

    def format(self, record: logging.LogRecord) -> str:
        doc: dict[str, Any] = {
            "ts": self.formatTime(record, "%Y-%m-%dT%H:%M:%S") + f".{int(record.msecs):03d}Z",
            "level": record.levelname,
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for key in ("exchange", "conn_id"):
            if hasattr(record, key):
                doc[key] = getattr(record, key)
        if record.exc_info:
            doc["exc"] = self.formatException(record.exc_info)
        return json.dumps(doc, ensure_ascii=False)


def setup_logging(level: str, fmt: str) -> None:
    handler = logging.StreamHandler(sys.stderr)
    if fmt == "json":
        formatter: logging.Formatter = JsonFormatter()
        formatter.converter = time.gmtime
    else:
        formatter = logging.Formatter("%(asctime)s %(levelname)s %(name)s %(message)s")
    handler.setFormatter(formatter)
    logging.basicConfig(level=level.upper(), handlers=[handler], force=True)


async def run(settings: Settings, sinks: Sequence[Sink], metrics: Metrics) -> None:
    """Run until SIGINT/SIGTERM, then flush and close the sinks.

    The whole shutdown keeps one deadline, ``shutdown_timeout_s`` after the signal
    (:class:`extractors.shutdown.ShutdownBudget`): gap fills, the final flush and the sink writes
    take their share inside it, and closing the sinks gets what is left of the same deadline.
    """
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    extractor = Extractor(settings, sinks, metrics=metrics)
    try:
        await extractor.run(stop)
    finally:  # every sink, each error logged, by the one deadline (extractors.sinks.close_all)
        budget = extractor.shutdown or ShutdownBudget.start(settings.extractors.shutdown_timeout_s)
        await close_all(sinks, deadline=budget.deadline)
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)


def log_failure(exc: BaseException) -> None:
    """Log why the extractor failed: every leaf of an exception group, each with its traceback."""
    errors = list(leaf_errors(exc))
    for n, error in enumerate(errors, 1):
        suffix = f" ({n} of {len(errors)})" if len(errors) > 1 else ""
        logger.error("extractor failed%s: %s", suffix, error, exc_info=error)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m extractors", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = p.add_subparsers(dest="command", required=True)
    r = sub.add_parser(
        "run",
        help="extract until SIGINT/SIGTERM",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    r.add_argument("--config", help="YAML config file (default: defaults + environment only)")
    r.add_argument("--exchanges", help="comma-separated, e.g. binance,kucoin (extractors.exchanges)")
    r.add_argument("--sink", help="comma-separated sinks: landing,kafka (extractors.sinks)")
    r.add_argument("--shard", help="i/n: take this process's share of the markets (extractors.shard)")
    r.add_argument("--metrics-port", type=int, help="Prometheus port, 0 = off (extractors.metrics_port)")
    r.add_argument("--log-level", help="DEBUG, INFO, WARNING ... (extractors.log_level)")
    n = sub.add_parser("new-exchange", help="write the skeleton of a new venue (extractors.scaffold)")
    n.add_argument("name", help="lower-case exchange name, e.g. okx")
    n.add_argument("--root", default=".", help="the repository to write into (default: .)")
    return p


def new_exchange(name: str, root: str) -> int:
    from extractors.scaffold import new_exchange as write

    try:
        written = write(name, root=root)
    except (ValueError, FileExistsError) as exc:
        print(f"new-exchange: {exc}", file=sys.stderr)
        return 2
    for path in written:
        print(f"wrote {path}")
    print(f"next: fill in every TODO(new-exchange), then run tests/test_{name}_todo.py for what is left")
    return 0


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    if args.command == "new-exchange":
        return new_exchange(args.name, args.root)
    try:
        config = read_yaml(args.config)
        settings = load_settings(
            config,
            overrides={
                "exchanges": args.exchanges,
                "sinks": args.sink,
                "shard": args.shard,
                "metrics_port": args.metrics_port,
                "log_level": args.log_level,
            },
        )
        setup_logging(settings.extractors.log_level, settings.extractors.log_format)
        sinks = build_sinks(settings, config)
    except (ConfigError, ValueError) as exc:
        print(f"configuration error: {exc}", file=sys.stderr)
        return 2
    metrics = Metrics(REGISTRY)
    metrics.serve(settings.extractors.metrics_port, settings.extractors.metrics_host)
    try:
        asyncio.run(run(settings, sinks, metrics))
    except Exception as exc:
        log_failure(exc)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
