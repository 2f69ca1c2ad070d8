"""Job plumbing shared by the streaming jobs: settings, the command line, triggers, sources, sinks.

Settings come from the YAML file given with ``--config`` (sections ``lake:``, ``spark:``,
``bronze:``, ``silver:``), then ``CRYPTOLAKE_<SECTION>_<KEY>`` environment variables, then the
command-line flags; ``--help`` of every job lists each setting with its default.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, TypeVar

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql.streaming import StreamingQuery

from lake.config import ConfigError, Secret, env_var, load_section, read_yaml, secret_fields
from lake.delta_io import append, ensure_table
from lake.session import SparkSettings, build_spark
from lake.tables import BRONZE_RAW_EVENTS, SILVER_QUARANTINE, Lake, LakeSettings

logger = logging.getLogger(__name__)

T = TypeVar("T")


@dataclass(frozen=True, kw_only=True)
class BronzeSettings:
    """``bronze_ingest`` (YAML section ``bronze:``, env ``CRYPTOLAKE_BRONZE_<KEY>``)."""

    source: Literal["landing", "kafka"] = "landing"
    landing_root: str = "landing"
    kafka_bootstrap_servers: str = "127.0.0.1:9092"
    kafka_topic_pattern: str = r"raw\..*"
    kafka_starting_offsets: Literal["earliest", "latest"] = "earliest"
    kafka_options: dict[str, str] = field(default_factory=dict)
    #: Secret, only from ``CRYPTOLAKE_BRONZE_KAFKA_SASL_JAAS_CONFIG``: the source's
    #: ``kafka.sasl.jaas.config`` (holds the SASL user's password).
    kafka_sasl_jaas_config: Secret | None = None
    max_files_per_trigger: int = 1000
    max_offsets_per_trigger: int = 0
    trigger: str = "availableNow"


@dataclass(frozen=True, kw_only=True)
class SilverSettings:
    """The silver jobs (YAML section ``silver:``, env ``CRYPTOLAKE_SILVER_<KEY>``)."""

    trigger: str = "availableNow"
    max_files_per_trigger: int = 200
    dedupe_window: str = "10 minutes"
    rate_carry_minutes: int = 5
    reprice_minutes: int = 10
    quality: bool = True
    gold_interval_s: float = 10.0


SETTING_HELP: dict[str, str] = {
    "source": "where raw envelopes come from: landing (files) or kafka",
    "landing_root": "landing zone root holding raw/exchange=../channel=../dt=../hour=../*.jsonl.gz "
    "(local folder or s3a://bucket/prefix)",
    "kafka_bootstrap_servers": "Kafka bootstrap servers (host:port,...)",
    "kafka_topic_pattern": "subscribePattern of the raw topics",
    "kafka_starting_offsets": "where a new checkpoint starts reading Kafka: earliest or latest",
    "kafka_options": "extra kafka.* source options (YAML mapping), e.g. kafka.security.protocol "
    "(secret-looking keys are refused: the JAAS config comes from CRYPTOLAKE_BRONZE_KAFKA_SASL_JAAS_CONFIG)",
    "max_files_per_trigger": "at most this many new files per micro-batch",
    "max_offsets_per_trigger": "at most this many Kafka records per micro-batch (0: no limit)",
    "trigger": "availableNow (process what is there, then stop) or processingTime=<interval>, "
    "e.g. processingTime=10 seconds",
    "dedupe_window": "watermark delay on bronze ingest_ts: re-delivered envelopes within it are "
    "dropped before parsing (older duplicates are still removed by the MERGE)",
    "rate_carry_minutes": "a row without a USDT rate in its own minute takes the latest rate at most "
    "this many minutes older (method suffixed :carried)",
    "quality": "validate every micro-batch with the table's data-quality suite (expectations/) before "
    "the write: failing rows go to silver.quarantine, results to gold.dq_results",
    "gold_interval_s": "live pipeline: update the gold tables from the new silver rows at most this "
    "often (seconds; 0: no gold in the live pipeline)",
    "reprice_minutes": "tickers/L1: rows this many minutes before a batch's first minute are re-priced "
    "when rates changed",
}


def parse_trigger(text: str) -> dict[str, Any]:
    """``availableNow``, ``once`` or ``processingTime=<interval>`` -> ``DataStreamWriter.trigger`` kwargs."""
    value = text.strip()
    if value == "availableNow":
        return {"availableNow": True}
    if value == "once":
        return {"once": True}
    if value.startswith("processingTime="):
        interval = value.split("=", 1)[1].strip()
        if interval.isdigit():
            interval += " seconds"
        return {"processingTime": interval}
    raise ConfigError(f"trigger {text!r}: use availableNow, once or processingTime=<interval>")


@dataclass(frozen=True, kw_only=True)
class JobContext:
    """What ``main`` resolved: the lake, the Spark settings and the job's own settings."""

    lake: Lake
    spark: SparkSettings
    settings: Any


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def build_parser(
    *, prog: str, description: str, section: str, settings_cls: type[Any]
) -> argparse.ArgumentParser:
    """Flags for the lake, Spark and every field of ``settings_cls`` (each documented).

    Secret fields get no flag (a command line is visible to every user of the machine): they come
    from the environment only.
    """
    defaults = settings_cls()
    secrets = secret_fields(settings_cls)
    epilog = (
        f"Every setting can also be given in the YAML file (section '{section}:') or the environment "
        f"(CRYPTOLAKE_{section.upper()}_<KEY>); flags win over the environment, which wins over the file. "
        "The lake root and checkpoints: section 'lake:' (CRYPTOLAKE_LAKE_ROOT, "
        "CRYPTOLAKE_LAKE_CHECKPOINT_ROOT); Spark: section 'spark:' (see config.example.yaml). "
        "Secrets only from the environment: CRYPTOLAKE_SPARK_S3_ACCESS_KEY, CRYPTOLAKE_SPARK_S3_SECRET_KEY"
        + "".join(f", {env_var(section, name)}" for name in secrets)
        + "."
    )
    parser = argparse.ArgumentParser(prog=prog, description=description, epilog=epilog)
    parser.add_argument("--config", help="YAML config file (sections lake:, spark:, bronze:, silver:)")
    parser.add_argument("--lake-root", help="lake root: local folder or s3a://bucket/prefix (lake.root)")
    parser.add_argument(
        "--checkpoint-root", help="checkpoint folder (lake.checkpoint_root; default <root>/_checkpoints)"
    )
    parser.add_argument("--master", help="Spark master, e.g. local[2] or spark://host:7077 (spark.master)")
    group = parser.add_argument_group(f"{section} settings")
    for f in dataclasses.fields(settings_cls):
        if f.name in secrets:
            continue
        default = getattr(defaults, f.name)
        group.add_argument(
            _flag(f.name),
            dest=f.name,
            default=None,
            metavar=f.name.upper(),
            help=f"{SETTING_HELP.get(f.name, '')} ({section}.{f.name}, default {default!r})",
        )
    return parser


def resolve(
    args: argparse.Namespace, *, section: str, settings_cls: type[T], environ: Mapping[str, str] | None = None
) -> JobContext:
    config = read_yaml(args.config)
    lake = Lake(
        load_section(
            LakeSettings,
            "lake",
            config=config,
            environ=environ,
            overrides={"root": args.lake_root, "checkpoint_root": args.checkpoint_root},
        )
    )
    spark = load_section(
        SparkSettings, "spark", config=config, environ=environ, overrides={"master": args.master}
    )
    overrides = {
        f.name: getattr(args, f.name)
        for f in dataclasses.fields(settings_cls)  # type: ignore[arg-type]
        if f.name not in secret_fields(settings_cls)
    }
    settings = load_section(settings_cls, section, config=config, environ=environ, overrides=overrides)
    return JobContext(lake=lake, spark=spark, settings=settings)


def run_main(
    argv: list[str] | None,
    *,
    prog: str,
    description: str,
    section: str,
    settings_cls: type[Any],
    build_query: Callable[..., StreamingQuery],
) -> int:
    """Parse flags, build Spark, start the query and wait for it; exit code 0, 1 (failed) or 2 (config)."""
    parser = build_parser(prog=prog, description=description, section=section, settings_cls=settings_cls)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    try:
        ctx = resolve(args, section=section, settings_cls=settings_cls)
        parse_trigger(ctx.settings.trigger)
        spark = build_spark(ctx.spark)
    except ConfigError as exc:
        print(f"config error: {exc}", file=sys.stderr)
        return 2
    query = build_query(spark, ctx.settings, lake=ctx.lake)
    query.awaitTermination()
    if query.exception() is not None:
        logger.error("query %s failed: %s", query.name, query.exception())
        return 1
    return 0


# --- sources and sinks used by the silver jobs ------------------------------------------------


def bronze_stream(
    spark: SparkSession, lake: Lake, *, channels: Sequence[str], settings: SilverSettings
) -> DataFrame:
    """``bronze.raw_events`` of these channels as a stream, re-delivered envelopes dropped.

    The watermark is on ``ingest_ts`` (when bronze wrote the row), not on the exchange or receive
    time, so a batch replayed from an extractor's spool hours later is never dropped as late.
    """
    ensure_table(spark, lake, BRONZE_RAW_EVENTS.name)
    return (
        spark.readStream.format("delta")
        .option("maxFilesPerTrigger", settings.max_files_per_trigger)
        .load(lake.path(BRONZE_RAW_EVENTS.name))
        .where(F.col("channel").isin(*channels))
        .withWatermark("ingest_ts", settings.dedupe_window)
        .dropDuplicatesWithinWatermark(["exchange", "channel", "source", "conn_id", "conn_seq", "recv_ts_ns"])
    )


def read_table(spark: SparkSession, lake: Lake, name: str) -> DataFrame:
    ensure_table(spark, lake, name)
    return spark.read.format("delta").load(lake.path(name))


def write_quarantine(rows: DataFrame, *, lake: Lake, app_id: str, version: int) -> None:
    """Append quarantine rows (blind append: never conflicts with other jobs; idempotent per batch)."""
    append(
        rows.select(*SILVER_QUARANTINE.columns),
        lake=lake,
        name=SILVER_QUARANTINE.name,
        app_id=app_id,
        version=version,
    )


class WriterId:
    """A streaming writer's Delta ``txnAppId``, tied to its checkpoint: ``<query name>-<query id>``.

    Spark keeps a query's id in its checkpoint (the ``metadata`` file): it survives restarts, and a
    deleted or reset checkpoint gets a new one. Keyed by the name alone, a reset checkpoint would
    restart batch ids at 0 and Delta would silently skip every write until they passed the old
    maximum. ``str()`` resolves the id from the running query (inside ``foreachBatch``).
    """

    def __init__(self, spark: SparkSession, query: str) -> None:
        self._spark = spark
        self._query = query
        self._id: str | None = None

    def __str__(self) -> str:
        if self._id is None:
            ids = [q.id for q in self._spark.streams.active if q.name == self._query]
            if not ids:
                raise RuntimeError(f"no active streaming query named {self._query!r}: start it first")
            self._id = f"{self._query}-{ids[0]}"
        return self._id

    def sub(self, writer: str) -> str:
        """The id of one of several writers of the same query (Delta keeps one version per id and table)."""
        return f"{self}-{writer}"


def start(
    df: DataFrame,
    process: Callable[[DataFrame, int], None],
    *,
    name: str,
    lake: Lake,
    trigger: str,
) -> StreamingQuery:
    """Start ``df`` with a ``foreachBatch`` sink, its own checkpoint and query name."""
    return (
        df.writeStream.queryName(name)
        .foreachBatch(process)
        .option("checkpointLocation", lake.checkpoint(name))
        .trigger(**parse_trigger(trigger))
        .start()
    )


def start_silver_query(
    spark: SparkSession,
    settings: SilverSettings,
    *,
    lake: Lake,
    channels: Sequence[str],
    name: str,
    process: Callable[[DataFrame, int], None],
) -> StreamingQuery:
    """A silver job's query: ``bronze.raw_events`` of ``channels`` into ``process``, checkpoint ``name``."""
    stream = bronze_stream(spark, lake, channels=channels, settings=settings)
    return start(stream, process, name=name, lake=lake, trigger=settings.trigger)


def silver_main(
    argv: list[str] | None, *, prog: str, description: str, build_query: Callable[..., StreamingQuery]
) -> int:
    """``main`` of a silver job: its flags are the ``silver:`` settings."""
    return run_main(
        argv,
        prog=prog,
        description=description,
        section="silver",
        settings_cls=SilverSettings,
        build_query=build_query,
    )


def repo_root() -> Path:
    return Path(__file__).resolve().parent.parent
