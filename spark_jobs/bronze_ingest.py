"""bronze_ingest: raw envelopes from the landing zone or Kafka -> ``bronze.raw_events`` (append-only).

Both sources give lines of JSON envelopes (``lake.tables.RAW_ENVELOPE_SCHEMA``):

* landing zone: gzip JSON-lines files under ``<landing_root>/raw/exchange=../channel=../dt=../hour=..``
  (files whose name starts with ``_`` or ``.`` are in-flight temp files and are ignored);
* Kafka: topics matching ``raw\\..*``; a record's value is one batch, one envelope per line.

Each row keeps the envelope, ``recv_date`` (partition), where it came from (Kafka topic,
partition, offset or the source file) and ``ingest_ts``. A line that is not a valid envelope goes to
``silver.quarantine`` (``source_table`` ``bronze.raw_events``, reason ``malformed_envelope``); so
does every dead letter of the extractors (reason ``deadletter: <why>``), which bronze also keeps.
Appends carry ``txnAppId``/``txnVersion``, so a micro-batch replayed after a crash is not doubled.

    spark-submit spark_jobs/bronze_ingest.py --source landing --landing-root landing --lake-root lake-data
    python -m spark_jobs.bronze_ingest --source kafka --kafka-bootstrap-servers 127.0.0.1:9092
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql.streaming import StreamingQuery
from pyspark.sql.types import IntegerType, LongType, StringType

from lake.delta_io import append
from lake.quarantine import to_quarantine
from lake.tables import BRONZE_RAW_EVENTS, RAW_ENVELOPE_SCHEMA, Lake
from spark_jobs.columns import recv_ts
from spark_jobs.runtime import BronzeSettings, WriterId, run_main, start, write_quarantine

#: Columns a source hands to :func:`envelopes_to_bronze`.
SOURCE_COLUMNS = ("value", "kafka_topic", "kafka_partition", "kafka_offset", "source_file")
_REQUIRED = ("exchange", "channel", "payload", "recv_ts_ns", "source")


def query_name(settings: BronzeSettings) -> str:
    """One checkpoint per source: switching source starts a new query, not a confused one."""
    return f"bronze_ingest_{settings.source}"


# --- pure transforms ----------------------------------------------------------------------------


def envelopes_to_bronze(lines: DataFrame) -> DataFrame:
    """Source rows (:data:`SOURCE_COLUMNS`; ``value`` = one or more JSON lines) -> one row per envelope.

    Returns the bronze columns plus ``_line`` (the line's text) and ``_error`` (``NULL``, or
    ``malformed_envelope`` when the line is not JSON or lacks a required envelope field).
    """
    exploded = lines.select(
        F.explode(F.split(F.col("value"), "\n")).alias("_line"), *[c for c in SOURCE_COLUMNS if c != "value"]
    ).where(F.trim(F.col("_line")) != "")
    env = F.from_json(F.col("_line"), RAW_ENVELOPE_SCHEMA)
    parsed = exploded.select("*", env.alias("_env")).select(
        *[F.col(f"_env.{f.name}").alias(f.name) for f in RAW_ENVELOPE_SCHEMA.fields],
        "kafka_topic",
        "kafka_partition",
        "kafka_offset",
        "source_file",
        "_line",
    )
    missing = F.lit(False)
    for c in _REQUIRED:
        missing = missing | F.col(c).isNull()
    return (
        parsed.withColumn("recv_date", F.to_date(recv_ts()))
        .withColumn("ingest_ts", F.current_timestamp())
        .withColumn("_error", F.when(missing, F.lit("malformed_envelope")))
    )


def landing_lines(df: DataFrame) -> DataFrame:
    """Text-source rows (``value`` and the ``_metadata`` column) -> :data:`SOURCE_COLUMNS`."""
    return df.select(
        "value",
        F.lit(None).cast(StringType()).alias("kafka_topic"),
        F.lit(None).cast(IntegerType()).alias("kafka_partition"),
        F.lit(None).cast(LongType()).alias("kafka_offset"),
        F.col("_metadata.file_path").alias("source_file"),
    )


def kafka_lines(df: DataFrame) -> DataFrame:
    """Kafka-source rows -> :data:`SOURCE_COLUMNS` (the value decoded as UTF-8)."""
    return df.select(
        F.col("value").cast(StringType()).alias("value"),
        F.col("topic").alias("kafka_topic"),
        F.col("partition").alias("kafka_partition"),
        F.col("offset").alias("kafka_offset"),
        F.lit(None).cast(StringType()).alias("source_file"),
    )


#: Lines that go to ``silver.quarantine``: malformed envelopes (not in bronze) and the extractor's
#: dead letters (kept in bronze as received, and quarantined so they are seen with their reason).
REJECTED = "_error IS NOT NULL OR channel = 'deadletter'"


def rejected_to_quarantine(rows: DataFrame, *, batch_id: int | None) -> DataFrame:
    """:data:`REJECTED` lines as quarantine rows; ``row_json`` is the line as it arrived, wrapped in
    JSON; ``reason`` is ``malformed_envelope`` or ``deadletter: <the extractor's reason>``."""
    dead_letter = F.concat(F.lit("deadletter: "), F.coalesce(F.col("error"), F.lit("no reason given")))
    return (
        rows.where(REJECTED)
        .select(
            "exchange",
            F.col("_line").alias("line"),
            "kafka_topic",
            "kafka_offset",
            "source_file",
            F.coalesce(F.col("_error"), dead_letter).alias("_error"),
        )
        .transform(to_quarantine(source_table=BRONZE_RAW_EVENTS.name, batch_id=batch_id))
    )


# --- I/O -------------------------------------------------------------------------------------------


def source_stream(spark: SparkSession, settings: BronzeSettings) -> DataFrame:
    if settings.source == "kafka":
        reader = (
            spark.readStream.format("kafka")
            .option("kafka.bootstrap.servers", settings.kafka_bootstrap_servers)
            .option("subscribePattern", settings.kafka_topic_pattern)
            .option("startingOffsets", settings.kafka_starting_offsets)
            .option("failOnDataLoss", "true")
        )
        if settings.max_offsets_per_trigger:
            reader = reader.option("maxOffsetsPerTrigger", settings.max_offsets_per_trigger)
        for key, value in settings.kafka_options.items():
            reader = reader.option(key if key.startswith("kafka.") else f"kafka.{key}", value)
        if settings.kafka_sasl_jaas_config:
            reader = reader.option("kafka.sasl.jaas.config", settings.kafka_sasl_jaas_config.reveal())
        return kafka_lines(reader.load())
    root = settings.landing_root.rstrip("/") + "/raw"
    if "://" not in root:
        Path(root).mkdir(parents=True, exist_ok=True)
        root = str(Path(root).resolve())
    files = (
        spark.readStream.format("text")
        .option("recursiveFileLookup", "true")
        .option("maxFilesPerTrigger", settings.max_files_per_trigger)
        .load(root)
        .select("value", "_metadata")
    )
    return landing_lines(files)


@dataclass(frozen=True)
class BronzeBatch:
    """One micro-batch as appended to bronze: ``rows`` stay persisted until :meth:`release`."""

    rows: DataFrame
    #: Appended envelopes per channel.
    channels: dict[str, int]

    def good(self, *channels: str) -> DataFrame:
        """The appended rows (bronze columns), of these channels when given."""
        good = self.rows.where("_error IS NULL").select(*BRONZE_RAW_EVENTS.columns)
        return good.where(F.col("channel").isin(*channels)) if channels else good

    def release(self) -> None:
        self.rows.unpersist()


def write_bronze(lines: DataFrame, batch_id: int, *, lake: Lake, app_id: str) -> BronzeBatch:
    """Append one micro-batch of source rows to ``bronze.raw_events``; malformed lines and dead
    letters to quarantine.

    The live pipeline parses silver from the returned rows without reading the table back.
    """
    rows = envelopes_to_bronze(lines).persist()
    counts = rows.groupBy("channel", F.col("_error").isNull().alias("ok")).count().collect()
    batch = BronzeBatch(rows=rows, channels={r["channel"]: r["count"] for r in counts if r["ok"]})
    if batch.channels:
        append(batch.good(), lake=lake, name=BRONZE_RAW_EVENTS.name, app_id=app_id, version=batch_id)
    if any(not r["ok"] or r["channel"] == "deadletter" for r in counts):
        write_quarantine(
            rejected_to_quarantine(rows, batch_id=batch_id),
            lake=lake,
            app_id=app_id,
            version=batch_id,
        )
    return batch


def make_batch_writer(*, lake: Lake, app_id: str | WriterId):  # type: ignore[no-untyped-def]
    def process(batch: DataFrame, batch_id: int) -> None:
        write_bronze(batch, batch_id, lake=lake, app_id=str(app_id)).release()

    return process


def build_query(spark: SparkSession, settings: BronzeSettings, *, lake: Lake) -> StreamingQuery:
    name = query_name(settings)
    return start(
        source_stream(spark, settings),
        make_batch_writer(lake=lake, app_id=WriterId(spark, name)),
        name=name,
        lake=lake,
        trigger=settings.trigger,
    )


def main(argv: list[str] | None = None) -> int:
    return run_main(
        argv,
        prog="bronze_ingest",
        description=__doc__ or "",
        section="bronze",
        settings_cls=BronzeSettings,
        build_query=build_query,
    )


if __name__ == "__main__":
    sys.exit(main())
