"""SQL over the lake by table name (``gold.ohlcv_1m``), with Spark or without a JVM (DuckDB).

**Spark** (jobs, ``spark-sql``, the Thrift server): the tables are registered in a persistent
catalog, Spark's built-in Hive metastore (embedded Derby) under ``<lake root>/_catalog`` (or
``sql.metastore_dir``), as external Delta tables at their lake paths, with the rollup views
``gold.ohlcv_5m``, ``gold.ohlcv_1h`` and ``gold.ohlcv_1d``. A session built with
:func:`catalog_spark_settings` sees them by name in every process. Embedded Derby admits one JVM
at a time: a second Spark process on the same metastore fails to open it (use a Derby network
server or a real metastore for several, ``sql.spark_conf``).

**DuckDB** (``python -m lake sql``, the default; the web server): no JVM. delta-rs (``deltalake``)
resolves each Delta table's newest snapshot (its file list), which DuckDB's Parquet reader scans
with projection, partition and row-group pruning; the same names (``gold.ohlcv_1m``) and views are
defined in the connection, for the tables the statement names.

Both engines also keep the old ``<layer>_<entity>`` names (``silver_trades``) as views.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from lake.config import ConfigError
from lake.session import SparkSettings
from lake.tables import TABLES, Lake

if TYPE_CHECKING:
    import duckdb
    from pyspark.sql import DataFrame, SparkSession

logger = logging.getLogger(__name__)

Engine = Literal["duckdb", "spark"]


@dataclass(frozen=True, kw_only=True)
class SqlSettings:
    """``python -m lake sql`` and the catalog (YAML section ``sql:``, env ``CRYPTOLAKE_SQL_<KEY>``).

    ``metastore_dir`` empty: ``<lake root>/_catalog`` for a local lake (an ``s3a://`` lake needs a
    local folder here: Derby cannot live on S3). ``spark_conf`` is added to the Spark settings of
    catalog sessions, e.g. ``spark.hadoop.javax.jdo.option.ConnectionURL`` for a shared metastore.
    """

    engine: Engine = "duckdb"
    metastore_dir: str = ""
    spark_conf: dict[str, str] = field(default_factory=dict)


def view_name(table_name: str) -> str:
    return table_name.replace(".", "_")


# --- the rollup views -----------------------------------------------------------------------

#: Bucket expressions per engine (the 1m ``minute`` column truncated to the view's grain).
_BUCKETS: dict[str, dict[Engine, str]] = {
    "5m": {
        "spark": "timestamp_seconds(unix_timestamp(minute) DIV 300 * 300)",
        "duckdb": "time_bucket(INTERVAL '5 minutes', minute)",
    },
    "1h": {"spark": "date_trunc('hour', minute)", "duckdb": "date_trunc('hour', minute)"},
    "1d": {"spark": "date_trunc('day', minute)", "duckdb": "date_trunc('day', minute)"},
}

#: A rollup of ``gold.ohlcv_1m``: open of the first bar, close of the last, sums of the volumes.
#: ``vwap`` of a rollup is a DOUBLE (the exact sums are there: ``quote_volume / volume``); the USDT
#: columns are NULL for a bucket with an unpriced minute, like a 1m bar with an unpriced trade.
ROLLUP_SQL = """
SELECT exchange, symbol, base, quote, {bucket} AS bucket_ts,
       min_by(open, minute) AS open, max(high) AS high, min(low) AS low, max_by(close, minute) AS close,
       sum(volume) AS volume, sum(quote_volume) AS quote_volume,
       CAST(sum(quote_volume) AS DOUBLE) / CAST(sum(volume) AS DOUBLE) AS vwap,
       sum(trade_count) AS trade_count, min(first_trade_ts) AS first_trade_ts,
       max(last_trade_ts) AS last_trade_ts,
       CASE WHEN count(volume_usdt) = count(*) THEN min_by(open_usdt, minute) END AS open_usdt,
       CASE WHEN count(volume_usdt) = count(*) THEN max(high_usdt) END AS high_usdt,
       CASE WHEN count(volume_usdt) = count(*) THEN min(low_usdt) END AS low_usdt,
       CASE WHEN count(volume_usdt) = count(*) THEN max_by(close_usdt, minute) END AS close_usdt,
       CASE WHEN count(volume_usdt) = count(*) THEN sum(volume_usdt) END AS volume_usdt,
       count(*) AS minutes
FROM gold.ohlcv_1m
GROUP BY exchange, symbol, base, quote, {bucket}
""".strip()


def rollup_views(engine: Engine) -> dict[str, str]:
    """``gold.ohlcv_5m``/``_1h``/``_1d`` -> their SELECT for ``engine``."""
    return {f"gold.ohlcv_{grain}": ROLLUP_SQL.format(bucket=b[engine]) for grain, b in _BUCKETS.items()}


# --- the example queries (docs/gold.md; timed by infra.bench.gold in both engines) ------------

#: Five questions users ask, in SQL both engines run unchanged. ``{symbol}``/``{base}`` are filled
#: by the caller (e.g. BTC-USDT, BTC).
EXAMPLES: dict[str, str] = {
    "last price per symbol across exchanges": """
SELECT symbol, exchange, max_by(close, minute) AS last_price, max_by(close_usdt, minute) AS last_usdt,
       max(last_trade_ts) AS last_trade_ts
FROM gold.ohlcv_1m GROUP BY symbol, exchange ORDER BY symbol, exchange""",
    "bars for a time range": """
SELECT exchange, minute, open, high, low, close, volume, trade_count
FROM gold.ohlcv_1m
WHERE symbol = '{symbol}'
  AND minute >= (SELECT max(minute) FROM gold.ohlcv_1m) - INTERVAL '5' MINUTE
ORDER BY exchange, minute""",
    "spread across exchanges per second": """
SELECT second, count(*) AS venues, min(mid_usdt) AS low_mid, max(mid_usdt) AS high_mid,
       CAST(max(mid_usdt) - min(mid_usdt) AS DOUBLE) * 10000 / CAST(min(mid_usdt) AS DOUBLE) AS spread_bps
FROM gold.l1_1s
WHERE base = '{base}' AND second >= (SELECT max(second) FROM gold.l1_1s) - INTERVAL '10' SECOND
GROUP BY second HAVING count(*) > 1 ORDER BY second""",
    "daily volume share per exchange": """
SELECT trade_date, exchange, sum(volume_usdt) AS volume_usdt, sum(trade_count) AS trades,
       CAST(sum(volume_usdt) AS DOUBLE)
         / CAST(sum(sum(volume_usdt)) OVER (PARTITION BY trade_date) AS DOUBLE) AS share
FROM gold.exchange_volume_daily GROUP BY trade_date, exchange ORDER BY trade_date, exchange""",
    "composite bars of an asset over every venue": """
SELECT minute, open_usdt, high_usdt, low_usdt, close_usdt, vwap_usdt, volume_usdt, trade_count, exchanges
FROM gold.ohlcv_1m_composite WHERE base = '{base}' ORDER BY minute DESC LIMIT 5""",
}


def example_queries(*, symbol: str = "BTC-USDT", base: str = "BTC") -> dict[str, str]:
    return {name: sql.strip().format(symbol=symbol, base=base) for name, sql in EXAMPLES.items()}


# --- Spark: the persistent catalog ----------------------------------------------------------


def metastore_dir(lake: Lake, settings: SqlSettings) -> str:
    if settings.metastore_dir:
        return str(Path(settings.metastore_dir).resolve())
    if "://" in lake.settings.root:
        raise ConfigError(
            f"lake root {lake.settings.root} is not a local folder: set sql.metastore_dir "
            "(CRYPTOLAKE_SQL_METASTORE_DIR) to a local folder for the Spark catalog"
        )
    return str(Path(lake.root) / "_catalog")


def catalog_spark_settings(spark: SparkSettings, lake: Lake, settings: SqlSettings) -> SparkSettings:
    """``spark`` plus the Hive catalog (embedded Derby) under :func:`metastore_dir`."""
    folder = metastore_dir(lake, settings)
    conf = {
        "spark.sql.catalogImplementation": "hive",
        "spark.sql.warehouse.dir": f"{folder}/warehouse",
        "spark.hadoop.javax.jdo.option.ConnectionURL": (
            f"jdbc:derby:;databaseName={folder}/metastore_db;create=true"
        ),
        "spark.hadoop.datanucleus.schema.autoCreateAll": "true",
        "spark.hadoop.hive.metastore.schema.verification": "false",
        # Derby writes derby.log in the working directory unless told otherwise.
        "spark.driver.extraJavaOptions": f"-Duser.timezone=UTC -Dderby.system.home={folder}",
        **settings.spark_conf,
    }
    return dataclasses.replace(spark, extra={**spark.extra, **conf})


def _is_delta(spark: SparkSession, path: str) -> bool:
    from delta.tables import DeltaTable

    return bool(DeltaTable.isDeltaTable(spark, path))


def register_catalog(spark: SparkSession, lake: Lake, *, create_missing: bool = False) -> list[str]:
    """Register every existing lake table (or all, creating empty ones) in the session's catalog.

    Schemas ``bronze``, ``silver``, ``gold``; each table ``CREATE TABLE IF NOT EXISTS ... USING
    DELTA LOCATION`` its lake path (an external table: dropping it keeps the data); the rollup
    views. A name already registered at another location is re-pointed to this lake. Returns the
    table names registered.
    """
    from lake.delta_io import ensure_table

    registered = []
    for layer in sorted({name.split(".", 1)[0] for name in TABLES}):
        spark.sql(f"CREATE DATABASE IF NOT EXISTS {layer}")
    for name in TABLES:
        path = lake.path(name)
        if create_missing:
            ensure_table(spark, lake, name)
        elif not _is_delta(spark, path):
            continue
        if spark.catalog.tableExists(name):
            location = spark.sql(f"DESCRIBE DETAIL {name}").select("location").first()
            if location is not None and location[0].rstrip("/") not in (path, f"file:{path}"):
                logger.warning("re-pointing %s from %s to %s", name, location[0], path)
                spark.sql(f"DROP TABLE {name}")
        spark.sql(f"CREATE TABLE IF NOT EXISTS {name} USING DELTA LOCATION '{path}'")
        registered.append(name)
    if "gold.ohlcv_1m" in registered:
        for view, select in rollup_views("spark").items():
            spark.sql(f"CREATE OR REPLACE VIEW {view} AS {select}")
    return registered


def register_views(
    spark: SparkSession, lake: Lake, *, create_missing: bool = False, only: Sequence[str] | None = None
) -> list[str]:
    """Temp views ``<layer>_<entity>`` of each existing table (or all, creating empty ones).

    ``only``: just these view names (each costs a Delta snapshot).
    """
    from lake.delta_io import ensure_table

    registered = []
    for name in TABLES:
        if only is not None and view_name(name) not in only:
            continue
        path = lake.path(name)
        if create_missing:
            ensure_table(spark, lake, name)
        elif not _is_delta(spark, path):
            continue
        spark.read.format("delta").load(path).createOrReplaceTempView(view_name(name))
        registered.append(view_name(name))
    return registered


def query(spark: SparkSession, lake: Lake, statement: str) -> DataFrame:
    """Run ``statement`` in Spark; the old ``<layer>_<entity>`` views are registered first.

    Names like ``gold.ohlcv_1m`` resolve through the session's catalog (see :func:`register_catalog`).
    """
    wanted = [view_name(n) for n in TABLES if view_name(n) in statement]
    if wanted:
        register_views(spark, lake, only=wanted)
    return spark.sql(statement)


# --- DuckDB: no JVM -------------------------------------------------------------------------


def storage_options(spark: SparkSettings) -> dict[str, str]:
    """delta-rs options for an ``s3a://`` lake, from the same settings Spark's S3A uses."""
    options: dict[str, str] = {"AWS_REGION": "us-east-1"}
    if spark.s3_endpoint:
        options["AWS_ENDPOINT_URL"] = spark.s3_endpoint
        options["AWS_ALLOW_HTTP"] = str(not spark.s3_ssl).lower()
        options["AWS_VIRTUAL_HOSTED_STYLE_REQUEST"] = str(not spark.s3_path_style).lower()
    if spark.s3_access_key and spark.s3_secret_key:
        options["AWS_ACCESS_KEY_ID"] = spark.s3_access_key.reveal()
        options["AWS_SECRET_ACCESS_KEY"] = spark.s3_secret_key.reveal()
    return options


def _delta_uri(path: str) -> str:
    return "s3://" + path[len("s3a://") :] if path.startswith("s3a://") else path


def referenced_tables(statement: str) -> list[str]:
    """The lake tables a statement names (``gold.ohlcv_1m``, ``gold_ohlcv_1m``, a rollup view), or all."""
    text = statement.lower()
    names = [n for n in TABLES if n in text or view_name(n) in text]
    if any(view in text for view in rollup_views("duckdb")) and "gold.ohlcv_1m" not in names:
        names.append("gold.ohlcv_1m")
    return names or list(TABLES)


def _duckdb_type(dtype: Any) -> str:
    from pyspark.sql.types import DateType, StringType

    return "DATE" if isinstance(dtype, DateType) else "VARCHAR" if isinstance(dtype, StringType) else "BIGINT"


def duckdb_connect(
    lake: Lake, *, spark: SparkSettings | None = None, tables: Sequence[str] | None = None
) -> duckdb.DuckDBPyConnection:
    """A DuckDB connection with the lake's existing tables (or ``tables``) as ``<layer>.<entity>``.

    Each table is opened with delta-rs at its newest version. A table whose protocol has no reader
    features (no deletion vectors, no column mapping: what the lake's tables use) is read by
    DuckDB's own Parquet reader from the snapshot's file list (partition values from the paths);
    any other through a pyarrow dataset. Timestamps are UTC (``TimeZone`` is UTC).
    """
    import duckdb
    from deltalake import DeltaTable
    from deltalake.exceptions import TableNotFoundError

    con = duckdb.connect()
    con.execute("SET TimeZone = 'UTC'")
    options = storage_options(spark or SparkSettings()) if "://" in lake.settings.root else None
    found = []
    for name in tables or TABLES:
        layer, entity = name.split(".", 1)
        try:
            delta = DeltaTable(_delta_uri(lake.path(name)), storage_options=options)
        except TableNotFoundError:
            continue
        con.execute(f"CREATE SCHEMA IF NOT EXISTS {layer}")
        protocol = delta.protocol()
        files = delta.file_uris()
        spec = TABLES[name]
        if protocol.min_reader_version <= 1 and not protocol.reader_features and files and not options:
            types = {f.name: f.dataType for f in spec.schema.fields}
            hive = ", ".join(f"'{c}': {_duckdb_type(types[c])}" for c in spec.partition_by)
            listed = ", ".join("'" + f.replace("'", "''") + "'" for f in files)
            source = f"read_parquet([{listed}], hive_partitioning = {str(bool(hive)).lower()}"
            source += f", hive_types = {{{hive}}})" if hive else ")"
            columns = ", ".join(f'"{c}"' for c in spec.columns)
            con.execute(f"CREATE VIEW {name} AS SELECT {columns} FROM {source}")
        else:
            con.register(f"_arrow_{layer}_{entity}", delta.to_pyarrow_dataset())
            con.execute(f"CREATE VIEW {name} AS SELECT * FROM _arrow_{layer}_{entity}")
        con.execute(f"CREATE VIEW {view_name(name)} AS SELECT * FROM {name}")
        found.append(name)
    if "gold.ohlcv_1m" in found:
        for view, select in rollup_views("duckdb").items():
            con.execute(f"CREATE VIEW {view} AS {select}")
    return con


# --- one entry point for the CLI ------------------------------------------------------------


@dataclass(frozen=True)
class Result:
    """A query's answer: column names, rows, and how long it took (seconds, setup excluded)."""

    columns: list[str]
    rows: list[tuple[Any, ...]]
    seconds: float


def run_duckdb(con: duckdb.DuckDBPyConnection, statement: str, *, limit: int | None = None) -> Result:
    started = time.perf_counter()
    cursor = con.execute(statement)
    columns = [d[0] for d in cursor.description or ()]
    rows = (cursor.fetchmany(limit) if limit else cursor.fetchall()) if columns else []
    return Result(columns, rows, time.perf_counter() - started)


def run_spark(spark: SparkSession, lake: Lake, statement: str, *, limit: int | None = None) -> Result:
    started = time.perf_counter()
    df = query(spark, lake, statement)
    rows = [tuple(r) for r in (df.limit(limit) if limit else df).collect()]
    return Result(list(df.columns), rows, time.perf_counter() - started)


@contextmanager
def catalog_session(
    spark_settings: SparkSettings, lake: Lake, settings: SqlSettings
) -> Iterator[SparkSession]:
    """A Spark session on the persistent catalog, with the lake's tables registered; stopped after."""
    from lake.session import build_spark

    spark = build_spark(catalog_spark_settings(spark_settings, lake, settings))
    try:
        register_catalog(spark, lake)
        yield spark
    finally:
        spark.stop()


def format_table(result: Result, *, max_width: int = 40) -> str:
    """Rows as an aligned text table (decimals without trailing zeros, timestamps ISO)."""

    def text(value: Any) -> str:
        if value is None:
            return "NULL"
        if isinstance(value, Decimal):
            return format(value.normalize(), "f")
        if isinstance(value, datetime):
            if value.tzinfo is not None:
                value = value.astimezone(UTC).replace(tzinfo=None)
            return value.isoformat(sep=" ")
        return str(value)

    cells = [[text(v)[:max_width] for v in row] for row in result.rows]
    widths = [max([len(c), *(len(r[i]) for r in cells)]) for i, c in enumerate(result.columns)]
    lines = [" | ".join(c.ljust(w) for c, w in zip(result.columns, widths, strict=True))]
    lines.append("-+-".join("-" * w for w in widths))
    lines += [" | ".join(v.ljust(w) for v, w in zip(r, widths, strict=True)) for r in cells]
    return "\n".join(lines)
