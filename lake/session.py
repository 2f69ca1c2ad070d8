"""The SparkSession factory: Delta, the project's jars, UTC, sane defaults for a small machine.

Locally the jars come from ``.cache/jars/spark`` (filled by ``make setup`` from ``infra/pom.xml``)
through ``spark.jars``, so nothing is downloaded when a job starts. On a cluster pass ``master``
(or use ``spark-submit --master``) and either the same jar folder or ``--jars``/``--packages``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

from pyspark.sql import SparkSession

from lake.config import ConfigError, Secret

logger = logging.getLogger(__name__)

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_JARS_DIR = REPO_ROOT / ".cache" / "jars" / "spark"


@dataclass(frozen=True, kw_only=True)
class SparkSettings:
    """How to build the SparkSession (YAML section ``spark:``, env ``CRYPTOLAKE_SPARK_<KEY>``).

    ``master`` ``None`` keeps what spark-submit chose, or ``local[*]`` when run in-process.
    ``jars_dir`` empty disables adding local jars (the cluster provides them).
    ``s3_*`` configure S3A for ``s3a://`` lake roots (MinIO: path-style access and an endpoint);
    the keys come from the environment (``CRYPTOLAKE_SPARK_S3_ACCESS_KEY``/``..._SECRET_KEY``) or
    the default AWS credential chain when unset.
    """

    master: str | None = None
    app_name: str = "cryptolake"
    jars_dir: str = str(DEFAULT_JARS_DIR)
    shuffle_partitions: int = 4
    driver_memory: str = "2g"
    s3_endpoint: str | None = None
    #: Secrets: only from the environment (``CRYPTOLAKE_SPARK_S3_ACCESS_KEY``/``..._SECRET_KEY``).
    s3_access_key: Secret | None = None
    s3_secret_key: Secret | None = None
    s3_path_style: bool = True
    s3_ssl: bool = False
    ui_enabled: bool = False
    extra: dict[str, str] = field(default_factory=dict)


def local_jars(jars_dir: str) -> list[str]:
    """The jar files to hand Spark, or a ConfigError that says to run ``make setup``."""
    folder = Path(jars_dir)
    jars = sorted(str(p) for p in folder.glob("*.jar")) if folder.is_dir() else []
    if not any("delta-spark" in Path(j).name for j in jars):
        raise ConfigError(
            f"no Delta jar in spark.jars_dir={folder}: run `make setup` to fetch the jars from "
            "infra/pom.xml, or set CRYPTOLAKE_SPARK_JARS_DIR to a folder holding them "
            "(empty to rely on jars the cluster provides)"
        )
    return jars


def spark_conf(settings: SparkSettings) -> dict[str, str]:
    """All Spark settings the factory applies, as plain key/value pairs (testable without a JVM)."""
    conf: dict[str, str] = {
        "spark.sql.extensions": "io.delta.sql.DeltaSparkSessionExtension",
        "spark.sql.catalog.spark_catalog": "org.apache.spark.sql.delta.catalog.DeltaCatalog",
        "spark.sql.session.timeZone": "UTC",
        "spark.sql.shuffle.partitions": str(settings.shuffle_partitions),
        # Delta rebuilds table state with 50 partitions by default: minutes of overhead on small
        # local tables. Tie it to the shuffle partitions, which are sized for the machine.
        "spark.databricks.delta.snapshotPartitions": str(settings.shuffle_partitions),
        # Delta's VACUUM lists the table in this many tasks (10,000 by default): measured on
        # 2 cores, a 9-file table took 45-60 s per VACUUM with the default and 3-6 s with 4.
        "spark.sql.sources.parallelPartitionDiscovery.parallelism": str(max(4, settings.shuffle_partitions)),
        "spark.ui.showConsoleProgress": "false",
        # The live pipeline writes its silver tables from parallel threads: FAIR shares the cores
        # between their jobs instead of queueing one table's behind another's.
        "spark.scheduler.mode": "FAIR",
        "spark.driver.memory": settings.driver_memory,
        "spark.ui.enabled": str(settings.ui_enabled).lower(),
        "spark.sql.streaming.forceDeleteTempCheckpointLocation": "true",
        "spark.databricks.delta.schema.autoMerge.enabled": "false",
        "spark.sql.ansi.enabled": "false",
        "spark.driver.extraJavaOptions": "-Duser.timezone=UTC",
        "spark.executor.extraJavaOptions": "-Duser.timezone=UTC",
    }
    if settings.jars_dir:
        conf["spark.jars"] = ",".join(local_jars(settings.jars_dir))
    if settings.s3_endpoint:
        conf["spark.hadoop.fs.s3a.endpoint"] = settings.s3_endpoint
        conf["spark.hadoop.fs.s3a.path.style.access"] = str(settings.s3_path_style).lower()
        conf["spark.hadoop.fs.s3a.connection.ssl.enabled"] = str(settings.s3_ssl).lower()
        conf["spark.hadoop.fs.s3a.endpoint.region"] = "us-east-1"
    if settings.s3_access_key and settings.s3_secret_key:
        conf["spark.hadoop.fs.s3a.access.key"] = settings.s3_access_key.reveal()
        conf["spark.hadoop.fs.s3a.secret.key"] = settings.s3_secret_key.reveal()
        conf["spark.hadoop.fs.s3a.aws.credentials.provider"] = (
            "org.apache.hadoop.fs.s3a.SimpleAWSCredentialsProvider"
        )
    conf["spark.hadoop.fs.s3a.impl"] = "org.apache.hadoop.fs.s3a.S3AFileSystem"
    conf.update(settings.extra)
    return conf


#: What must reach spark-submit's own command line: the driver JVM starts before our code runs.
SUBMIT_KEYS = ("spark.sql.extensions", "spark.sql.catalog.spark_catalog", "spark.driver.extraJavaOptions")


def submit_args(settings: SparkSettings) -> list[str]:
    """``spark-submit`` options for a job: ``--jars`` (the local jar folder) and the Delta settings."""
    conf = spark_conf(settings)
    args = ["--jars", conf["spark.jars"]] if "spark.jars" in conf else []
    for key in SUBMIT_KEYS:
        args += ["--conf", f"{key}={conf[key]}"]
    return args


def build_spark(settings: SparkSettings | None = None) -> SparkSession:
    """Create (or return the running) SparkSession configured for the lake."""
    settings = settings or SparkSettings()
    builder = SparkSession.builder.appName(settings.app_name)
    if settings.master:
        builder = builder.master(settings.master)
    elif not _running_under_spark_submit():
        builder = builder.master("local[*]")
    for key, value in spark_conf(settings).items():
        builder = builder.config(key, value)
    spark = builder.getOrCreate()
    spark.sparkContext.setLogLevel("WARN")
    if _running_under_spark_submit():
        _check_delta_on_driver(spark)
    logger.info("spark session ready", extra={"master": spark.sparkContext.master})
    return spark


def _check_delta_on_driver(spark: SparkSession) -> None:
    """Under spark-submit the driver's class path is fixed before ``spark.jars`` is read: say so."""
    from py4j.java_gateway import JavaClass

    jvm = spark.sparkContext._jvm
    assert jvm is not None
    # py4j resolves a name it cannot load to a JavaPackage instead of failing.
    if not isinstance(jvm.io.delta.tables.DeltaTable, JavaClass):
        raise ConfigError(
            "the Delta classes are not on the spark-submit driver's class path: pass the jars on the "
            "command line, e.g. `spark-submit $(.venv/bin/python -m lake submit-args) spark_jobs/<job>.py`, "
            "or --packages io.delta:delta-spark_4.2_2.13:4.4.0 on a cluster"
        )


def _running_under_spark_submit() -> bool:
    import os

    return "PYSPARK_GATEWAY_PORT" in os.environ or "SPARK_ENV_LOADED" in os.environ
