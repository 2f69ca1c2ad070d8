"""The Spark Thrift server (HiveServer2 protocol) over the lake's catalog, for JDBC/ODBC clients.

``python -m lake thrift`` (``make sql-server``) opens a Spark session on the persistent catalog
(:func:`lake.sql.catalog_session`: the tables registered by name, ``gold.ohlcv_1m``, and the rollup
views), starts Spark's HiveServer2 inside that same application and serves until interrupted.
BI tools, ``beeline`` and any Hive JDBC driver connect to ``jdbc:hive2://<host>:<port>/default``;
every statement runs as Spark SQL in that one application.

Nothing beyond the pyspark wheel is needed: it ships the Thrift server
(``spark-hive-thriftserver_2.13``), the Hive JDBC driver and ``beeline``. Authentication is
HiveServer2's ``NONE`` (any user name, no password): bind to 127.0.0.1 (the default) unless a
network in front of it does the authentication. The catalog is an embedded Derby database, which
one JVM opens at a time: while the server runs, other Spark processes on the same catalog fail
to start (query through the server instead).
"""

from __future__ import annotations

import logging
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from lake.config import ConfigError
from lake.session import SparkSettings, local_jars
from lake.sql import SqlSettings, catalog_session
from lake.tables import Lake

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

logger = logging.getLogger(__name__)


@dataclass(frozen=True, kw_only=True)
class ThriftSettings:
    """The server's address (YAML section ``thrift:``, env ``CRYPTOLAKE_THRIFT_<KEY>``).

    ``port`` is the HiveServer2 binary-transport port (10000 is HiveServer2's usual one);
    ``start_timeout_s`` bounds the wait for the port to accept connections once started.
    """

    host: str = "127.0.0.1"
    port: int = 10000
    start_timeout_s: float = 60.0


def jdbc_url(settings: ThriftSettings) -> str:
    return f"jdbc:hive2://{settings.host}:{settings.port}/default"


def server_spark_settings(spark: SparkSettings, settings: ThriftSettings) -> SparkSettings:
    """``spark`` plus the HiveServer2 address, which the server reads from the Hadoop conf."""
    if not 0 < settings.port < 65536:
        raise ConfigError(f"setting thrift.port={settings.port} must be between 1 and 65535")
    # Each JDBC session is a new SparkSession, built on a Thrift worker thread whose class loader
    # does not see spark.jars: the Delta catalog and extension must be on the driver's class path.
    class_path = [*local_jars(spark.jars_dir)] if spark.jars_dir else []
    if spark.extra.get("spark.driver.extraClassPath"):
        class_path.append(spark.extra["spark.driver.extraClassPath"])
    conf = {
        **({"spark.driver.extraClassPath": ":".join(class_path)} if class_path else {}),
        "spark.hadoop.hive.server2.thrift.bind.host": settings.host,
        "spark.hadoop.hive.server2.thrift.port": str(settings.port),
        "spark.hadoop.hive.server2.transport.mode": "binary",
    }
    return replace(spark, extra={**spark.extra, **conf})


def check_port_free(host: str, port: int) -> None:
    """ConfigError if ``host:port`` cannot be bound (in use, or not an address of this machine).

    Checked before the JVM starts: HiveServer2 only logs a failed bind from its listener thread,
    and a port someone else listens on would look like a started server.
    """
    with socket.socket() as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the server: TIME_WAIT is fine
        try:
            probe.bind((host, port))
        except OSError as exc:
            raise ConfigError(
                f"cannot listen on {host}:{port} ({exc.strerror}): set another thrift.port"
            ) from exc


def _wait_listening(host: str, port: int, *, timeout_s: float) -> None:
    """Return once ``host:port`` accepts a TCP connection; TimeoutError after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            with socket.create_connection((host, port), timeout=1.0):
                return
        except OSError as exc:
            if time.monotonic() > deadline:
                message = f"the Thrift server did not listen on {host}:{port} within {timeout_s} s"
                raise TimeoutError(message) from exc
            time.sleep(0.2)


def start(spark: SparkSession, settings: ThriftSettings) -> Any:
    """Start HiveServer2 in ``spark``'s application; returns the server (a JVM object) once listening.

    ``spark`` must have been built with :func:`server_spark_settings` (the address) on the Hive
    catalog. TimeoutError if the port does not accept connections within ``start_timeout_s``.
    """
    jvm = spark.sparkContext._jvm
    assert jvm is not None
    server_class = jvm.org.apache.spark.sql.hive.thriftserver.HiveThriftServer2
    # exitOnError=False: a failure to start is raised here, not a System.exit of the JVM.
    server = server_class.startWithSparkSession(spark._jsparkSession, False)
    try:
        _wait_listening(settings.host, settings.port, timeout_s=settings.start_timeout_s)
    except TimeoutError:
        server.stop()
        raise
    return server


@contextmanager
def thrift_server(
    spark_settings: SparkSettings, lake: Lake, sql_settings: SqlSettings, settings: ThriftSettings
) -> Iterator[SparkSession]:
    """The catalog session with the Thrift server listening on it; server and session stopped after."""
    check_port_free(settings.host, settings.port)
    with catalog_session(server_spark_settings(spark_settings, settings), lake, sql_settings) as spark:
        server = start(spark, settings)
        try:
            yield spark
        finally:
            server.stop()


def serve(
    spark_settings: SparkSettings,
    lake: Lake,
    sql_settings: SqlSettings,
    settings: ThriftSettings,
    *,
    stop: threading.Event | None = None,
) -> None:
    """``python -m lake thrift``: serve until ``stop`` is set or Ctrl-C; prints the JDBC URL when ready."""
    stop = stop or threading.Event()
    with thrift_server(spark_settings, lake, sql_settings, settings) as spark:
        tables = [t.name for t in spark.catalog.listTables("gold")]
        print(f"thrift server ready: {jdbc_url(settings)} (gold: {', '.join(sorted(tables)) or 'none'})")
        print(f"  beeline -u {jdbc_url(settings)} -n $USER -e 'SHOW TABLES IN gold'", flush=True)
        try:
            while not stop.wait(1.0):
                pass
        except KeyboardInterrupt:
            logger.info("stopping the thrift server")
